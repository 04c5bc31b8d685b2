"""The scheduler's events: subject `pai.scheduler.<entity>.<verb>`, payload a snapshot."""

from __future__ import annotations

from pai.scheduler.v1 import events_pb2, node_pb2, quota_pb2
from pai_common.events import OutboxEvent
from pai_scheduler.domain.quota import Amounts
from pai_scheduler.domain.records import NodeRecord, QuotaRecord, ResourceGroup
from pai_scheduler.domain.workload import State, Workload
from pai_scheduler.mapping.amounts import resources
from pai_scheduler.mapping.groups import resource_group
from pai_scheduler.mapping.nodes import node
from pai_scheduler.mapping.quotas import quota
from pai_scheduler.mapping.workloads import W, workload

SOURCE = "scheduler.pai.dev"


def event(subject: str, message: object) -> OutboxEvent:
    return OutboxEvent(subject=subject, message=message, source=SOURCE)  # type: ignore[arg-type]


def workload_event(verb: str, w: Workload, previous: State | None = None, **extra: object) -> OutboxEvent:
    """`pai.scheduler.workload.<verb>`, with the state before when the verb changed it."""
    cls = getattr(events_pb2, "Workload" + "".join(p.capitalize() for p in verb.split("_")))
    fields: dict[str, object] = {"workload": workload(w), **extra}
    if previous is not None:
        fields["previous_state"] = W.State.Value(str(previous))
    return event(f"pai.scheduler.workload.{verb}", cls(**fields))


def pending_reason_changed(w: Workload, previous_code: str) -> OutboxEvent:
    """`pai.scheduler.workload.pending_reason_changed`; an empty previous code is NOT_EVALUATED."""
    previous = W.PendingReasonCode.Value(previous_code or "NOT_EVALUATED")
    return workload_event("pending_reason_changed", w, previous_pending_reason_code=previous)


def quota_event(verb: str, q: QuotaRecord, previous_held: bool | None = None) -> OutboxEvent:
    """`pai.scheduler.quota.<verb>`: created, updated, deleted or state_changed."""
    snapshot = quota(q)
    if verb == "state_changed":
        previous = quota_pb2.Quota.HELD if previous_held else quota_pb2.Quota.ACTIVE
        return event(
            "pai.scheduler.quota.state_changed",
            events_pb2.QuotaStateChanged(quota=snapshot, previous_state=previous),
        )
    cls = getattr(events_pb2, "Quota" + verb.capitalize())
    return event(f"pai.scheduler.quota.{verb}", cls(quota=snapshot))


def group_event(verb: str, g: ResourceGroup) -> OutboxEvent:
    """`pai.scheduler.resource_group.<verb>` with the group's settings (counts are not part of it)."""
    cls = getattr(events_pb2, "ResourceGroup" + verb.capitalize())
    return event(f"pai.scheduler.resource_group.{verb}", cls(resource_group=resource_group(g)))


def node_event(verb: str, n: NodeRecord, previous: NodeRecord | None = None) -> OutboxEvent:
    """`pai.scheduler.node.<verb>`: registered, updated (with the previous state) or deleted."""
    snapshot = node(n)
    if verb == "registered":
        return event("pai.scheduler.node.registered", events_pb2.NodeRegistered(node=snapshot))
    if verb == "deleted":
        return event("pai.scheduler.node.deleted", events_pb2.NodeDeleted(node=snapshot))
    prev = previous or n
    return event(
        "pai.scheduler.node.updated",
        events_pb2.NodeUpdated(
            node=snapshot,
            previous_state=node_pb2.Node.READY if prev.ready else node_pb2.Node.NOT_READY,
            previous_cordoned=prev.cordoned,
        ),
    )


def nodes_imported(rg: str, created: int, updated: int, deleted: int, capacity: Amounts) -> OutboxEvent:
    return event(
        "pai.scheduler.node.imported",
        events_pb2.NodesImported(
            resource_group=f"resourceGroups/{rg}",
            created_count=created,
            updated_count=updated,
            deleted_count=deleted,
            capacity=resources(capacity),
        ),
    )
