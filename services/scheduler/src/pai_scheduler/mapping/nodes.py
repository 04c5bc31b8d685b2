"""Nodes on the wire, and what RegisterNode, UpdateNode and ImportNodes ask for."""

from __future__ import annotations

from collections.abc import Callable, Set

from pai.scheduler.v1 import node_pb2
from pai_common import fieldmask
from pai_common.wire import ts
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, Amounts
from pai_scheduler.domain.records import Gpu, NodeRecord
from pai_scheduler.domain.usage import NodeUsage
from pai_scheduler.mapping.amounts import resources

SOURCES = {1: "LOCAL", 2: "SIMULATED", 3: "RAY", 4: "KUBERNETES"}
SOURCE_VALUES = {v: k for k, v in SOURCES.items()}
NODE_FIELDS = ("display_name", "labels", "cpu_milli", "memory_bytes", "gpus")
"""What UpdateNode may change."""


def node(n: NodeRecord, usage: NodeUsage | None = None) -> node_pb2.Node:
    """A node with what is placed on it (without `usage`, as events carry it: nothing)."""
    usage = usage or NodeUsage()
    gpu_allocated, gpu_pods = usage.gpu_allocated, usage.gpu_pods
    capacity: Amounts = {CPU: n.cpu_milli, MEMORY: n.memory_bytes, GPU: 1000 * len(n.gpus)}
    for g in n.gpus:
        capacity[f"gpu/{g.model}"] = capacity.get(f"gpu/{g.model}", 0) + 1000
    return node_pb2.Node(
        name=n.name,
        uid=n.uid,
        display_name=n.display_name,
        source=SOURCE_VALUES.get(n.source, 0),  # type: ignore[arg-type]
        provider_id=n.provider_id,
        cpu_milli=n.cpu_milli,
        memory_bytes=n.memory_bytes,
        gpus=[
            node_pb2.Gpu(
                index=g.index,
                model=g.model,
                memory_bytes=g.memory_bytes,
                uuid=g.uuid,
                allocated_gpu_milli=gpu_allocated[i] if i < len(gpu_allocated) else 0,
                pod_count=gpu_pods[i] if i < len(gpu_pods) else 0,
            )
            for i, g in enumerate(sorted(n.gpus, key=lambda g: g.index))
        ],
        labels=n.labels,
        state=node_pb2.Node.READY if n.ready else node_pb2.Node.NOT_READY,
        state_message=n.state_message,
        cordoned=n.cordoned,
        cordon_reason=n.cordon_reason,
        schedulable=n.ready and not n.cordoned,
        allocatable=resources(capacity),
        allocated=resources(usage.allocated),
        pod_count=usage.pods,
        report_time=ts(n.report_time),
        create_time=ts(n.create_time),
        update_time=ts(n.update_time),
        version=n.version,
        etag=n.etag,
    )


def gpus_from(msg: node_pb2.Node) -> list[Gpu]:
    return [Gpu(g.index, g.model, g.memory_bytes, g.uuid) for g in msg.gpus]


def node_from(parent: str, node_id: str, m: node_pb2.Node) -> NodeRecord:
    """A node as RegisterNode describes it (its GPU indices are checked by the use case)."""
    return NodeRecord(
        parent.split("/")[1],
        node_id,
        "",
        SOURCES.get(m.source, "LOCAL"),
        m.cpu_milli,
        m.memory_bytes,
        gpus_from(m),
        dict(m.labels),
        m.display_name,
        m.provider_id or node_id,
    )


def node_update(m: node_pb2.Node, fields: Set[str]) -> Callable[[NodeRecord], None]:
    """What UpdateNode changes: the `fields` of `m`."""

    def change(n: NodeRecord) -> None:
        fieldmask.assign(n, m, fields, ("display_name", "labels", "cpu_milli", "memory_bytes"))
        if "gpus" in fields:
            n.gpus = gpus_from(m)

    return change


def import_response(
    created: int, updated: int, deleted: int, capacity: Amounts
) -> node_pb2.ImportNodesResponse:
    return node_pb2.ImportNodesResponse(
        created_count=created,
        updated_count=updated,
        deleted_count=deleted,
        capacity=resources(capacity),
    )
