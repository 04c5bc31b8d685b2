"""The local machine as a node: detected at start, so `make up` can schedule on this machine."""

from __future__ import annotations

import logging

from pai_scheduler.app.engine import Scheduler
from pai_scheduler.app.groups import ResourceGroups
from pai_scheduler.app.nodes import Nodes, node_record
from pai_scheduler.domain.records import NodeRecord, ResourceGroup
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
