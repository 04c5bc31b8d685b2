"""Resource groups and their scheduling policy on the wire."""

from __future__ import annotations

from collections.abc import Callable, Set

from pai.scheduler.v1 import resource_group_pb2
from pai_common import fieldmask
from pai_common.wire import duration, ts
from pai_scheduler.domain.capacity import Policy
from pai_scheduler.domain.records import ResourceGroup
from pai_scheduler.domain.usage import GroupUsage
from pai_scheduler.mapping.amounts import resources

_PLACEMENT = {"frag": 1, "fgd": 2, "bestfit": 3}
GROUP_FIELDS = ("display_name", "description", "labels", "scheduling_policy")
"""What UpdateResourceGroup may change."""


def policy_from(msg: resource_group_pb2.SchedulingPolicy, base: Policy | None = None) -> Policy:
    base = base or Policy()
    names = {v: k for k, v in _PLACEMENT.items()}
    return Policy(
        placement=names.get(msg.placement_policy, base.placement),
        seed=msg.tie_break_seed,
        lookahead=msg.lookahead_depth or base.lookahead,
        # an unset or zero duration means the default, as the proto says
        default_grace=msg.default_preemption_grace_period.ToTimedelta().total_seconds() or base.default_grace,
        max_grace=msg.max_preemption_grace_period.ToTimedelta().total_seconds() or base.max_grace,
        preemption=not msg.preemption_disabled,
        budget=base.budget,
    )


def policy(p: Policy) -> resource_group_pb2.SchedulingPolicy:
    return resource_group_pb2.SchedulingPolicy(
        placement_policy=_PLACEMENT.get(p.placement, 0),  # type: ignore[arg-type]
        tie_break_seed=p.seed,
        lookahead_depth=p.lookahead,
        default_preemption_grace_period=duration(p.default_grace),
        max_preemption_grace_period=duration(p.max_grace),
        preemption_disabled=not p.preemption,
    )


def group_from(group_id: str, m: resource_group_pb2.ResourceGroup) -> ResourceGroup:
    """A new group as CreateResourceGroup asks for it."""
    return ResourceGroup(
        group_id, "", m.display_name, m.description, dict(m.labels), policy_from(m.scheduling_policy)
    )


def group_update(m: resource_group_pb2.ResourceGroup, fields: Set[str]) -> Callable[[ResourceGroup], None]:
    """What UpdateResourceGroup changes: the `fields` of `m` (a policy's unset parts keep theirs)."""

    def change(g: ResourceGroup) -> None:
        fieldmask.assign(g, m, fields)
        if "scheduling_policy" in fields:
            g.policy = policy_from(m.scheduling_policy, g.policy)

    return change


def resource_group(g: ResourceGroup, usage: GroupUsage | None = None) -> resource_group_pb2.ResourceGroup:
    """A group with its usage (without one, as events carry it: the settings alone)."""
    usage = usage or GroupUsage()
    return resource_group_pb2.ResourceGroup(
        name=g.name,
        uid=g.uid,
        display_name=g.display_name,
        description=g.description,
        labels=g.labels,
        scheduling_policy=policy(g.policy),
        capacity=resources(usage.capacity),
        allocated=resources(usage.allocated),
        guaranteed=resources(usage.guaranteed),
        node_count=usage.nodes,
        schedulable_node_count=usage.schedulable,
        pending_workload_count=usage.pending,
        admitted_workload_count=usage.admitted,
        create_time=ts(g.create_time),
        update_time=ts(g.update_time),
        version=g.version,
        etag=g.etag,
    )
