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


async def register_local_machine(scheduler: Scheduler, group_id: str) -> NodeRecord:
    """Create the `local` group on first start and (re-)register this machine's capacity in it."""
    if group_id not in scheduler.groups:
        await ResourceGroups(scheduler).create(
            ResourceGroup(group_id, "", "this machine", "the machine the platform runs on"), ""
        )
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


async def give_default_quota(scheduler: Scheduler, group_id: str, workspace: str) -> QuotaRecord | None:
    """A quota for `workspace` (`make up` names `default`) covering the whole group, so that a new
    user's first job runs without a quota step: nothing guaranteed (min 0), everything allowed (max =
    the group's CPU, memory and GPUs). Called when the group is made, on the first start only: a quota
    an admin changes or removes later stays as they left it."""
    prefix = f"resourceGroups/{group_id}/quotas/"
    capacity = scheduler.engines[group_id].quotas.capacity
    ws = workspace.removeprefix("workspaces/")
    spec = QuotaSpec(
        name=f"{prefix}{ws}",
        workspace=f"workspaces/{ws}",
        max={r: amount for r in (CPU, MEMORY, GPU) if (amount := capacity.get(r, 0))},
    )
    record = QuotaRecord(spec, "", f"{ws} (this machine)", "all of this machine; created on the first start")
    await Quotas(scheduler).create(record, f"default-quota-{group_id}-{ws}")
    log.info("quota %s: workspace %s may use the whole group %s", spec.name, ws, group_id)
    return scheduler.quotas[spec.name]
