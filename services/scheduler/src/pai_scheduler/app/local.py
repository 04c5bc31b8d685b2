"""The local machine as a node: detected at start, so `make up` can schedule on this machine."""

from __future__ import annotations

import logging

from pai_scheduler.app.engine import Scheduler
from pai_scheduler.app.groups import ResourceGroups
from pai_scheduler.app.nodes import Nodes, node_record
from pai_scheduler.app.quotas import Quotas
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, QuotaSpec
from pai_scheduler.domain.records import NodeRecord, QuotaRecord, ResourceGroup
from pai_scheduler.inventory import detect_local

log = logging.getLogger(__name__)


DEFAULT_QUOTA_LABEL = "pai.dev/default-quota-for"  # on the group until that quota is made


async def register_local_machine(
    scheduler: Scheduler, group_id: str, default_quota_for: str = ""
) -> NodeRecord:
    """Create the `local` group on first start and (re-)register this machine's capacity in it; a
    group made with `default_quota_for` (a workspace) carries it as a label until `give_default_quota`
    has made that quota, so a stop in between does not lose it."""
    if group_id not in scheduler.groups:
        labels = {DEFAULT_QUOTA_LABEL: default_quota_for} if default_quota_for else {}
        group = ResourceGroup(group_id, "", "this machine", "the machine the platform runs on", labels)
        await ResourceGroups(scheduler).create(group, "")
    spec = detect_local()
    existing = scheduler.nodes[group_id].get(spec.node_id)
    record = node_record(group_id, spec, "LOCAL")
    if existing is not None and (existing.cpu_milli, existing.memory_bytes, existing.gpus) == (
        record.cpu_milli, record.memory_bytes, record.gpus
    ):  # fmt: skip
        return existing
    try:
        await Nodes(scheduler).put(group_id, [record])
    except Exception:  # capacity shrank below what is placed: keep the old record, say so
        log.exception("could not update the local node %s", spec.node_id)
        return existing or record
    log.info("local node %s: %d cpu, %d GPUs", spec.node_id, spec.cpu_milli // 1000, len(spec.gpus))
    return scheduler.nodes[group_id][spec.node_id]


async def give_default_quota(scheduler: Scheduler, group_id: str) -> None:
    """A quota for the workspace the group's label names (`make up`: `default`) covering the whole
    group, so that a new user's first job runs without a quota step: nothing guaranteed (min 0),
    everything allowed (max = the group's CPU, memory and GPUs). Made once, when the group was made
    with the label: a quota an admin changes or removes later stays as they left it."""
    group = scheduler.groups[group_id]
    workspace = group.labels.get(DEFAULT_QUOTA_LABEL, "").removeprefix("workspaces/")
    if not workspace:
        return
    name = f"resourceGroups/{group_id}/quotas/{workspace}"
    if name not in scheduler.quotas:
        capacity = scheduler.engines[group_id].quotas.capacity
        spec = QuotaSpec(
            name=name,
            workspace=f"workspaces/{workspace}",
            max={r: amount for r in (CPU, MEMORY, GPU) if (amount := capacity.get(r, 0))},
        )
        record = QuotaRecord(
            spec, "", f"{workspace} (this machine)", "all of this machine; created on the first start"
        )
        await Quotas(scheduler).create(record, f"default-quota-{group_id}-{workspace}")
        log.info("quota %s: workspace %s may use the whole group %s", name, workspace, group_id)

    def done(g: ResourceGroup) -> None:
        g.labels.pop(DEFAULT_QUOTA_LABEL, None)

    await ResourceGroups(scheduler).update(group.name, "", done)
