"""Small constructors the unit tests share: pods and nodes for placement, workloads and groups."""

from __future__ import annotations

import datetime as dt
import itertools

from pai_scheduler.domain.outcomes import Changes
from pai_scheduler.domain.quota import QuotaSpec
from pai_scheduler.domain.resources import Node, PodRequest
from pai_scheduler.domain.scheduling import GroupScheduler, NodeInfo, Policy
from pai_scheduler.domain.workload import PodSet, Workload

ANY: frozenset[str] = frozenset()
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
GiB = 2**30
RG = "resourceGroups/rg"
_seq = itertools.count(1)

# ---- placement -----------------------------------------------------------------------------------


def pod(
    name: str = "p", cpu: int = 1000, mem: int = 1024, gpus: int = 0, milli: int = 0, models: str = ""
) -> PodRequest:
    return PodRequest(
        name, cpu, mem, gpus, milli if gpus else 0, frozenset(m for m in models.split("|") if m)
    )


def node(name: str, gpus: int = 1, model: str = "T4", cpu: int = 16000, mem: int = 65536) -> Node:
    return Node.uniform(name, cpu, mem, gpus, model)


def used(n: Node) -> list[int]:
    return [1000 - f for f in n.gpu_free]


# ---- a group's scheduler -------------------------------------------------------------------------


def gpu_nodes(n: int, gpus: int = 4, model: str = "A100", prefix: str = "n") -> list[NodeInfo]:
    return [NodeInfo(f"{prefix}{i}", 32_000, 128 * GiB, [model] * gpus) for i in range(n)]


def quota(qid: str, ws: str = "", parent: str = "", **limits: dict[str, int]) -> QuotaSpec:
    return QuotaSpec(
        f"{RG}/quotas/{qid}",
        parent=f"{RG}/quotas/{parent}" if parent else "",
        workspace=f"workspaces/{ws}" if ws else "",
        min=limits.get("min", {}),
        max=limits.get("max", {}),
    )


def wl(
    wid: str,
    q: str = "team",
    *,
    pods: int = 1,
    gpus: int = 1,
    milli: int = 0,
    cpu: int = 1000,
    priority: int = 0,
    spot: bool = False,
    models: tuple[str, ...] = (),
    grace: float = 0.0,
) -> Workload:
    ps = PodSet("worker", pods, cpu, GiB, 0 if milli else gpus, milli, models)
    ws = q
    return Workload(
        f"workspaces/{ws}/workloads/{wid}",
        wid,
        f"{RG}/quotas/{q}",
        RG,
        (ps,),
        priority=priority,
        preemptible=spot,
        grace_seconds=grace,
        seq=next(_seq),
    )


def sched(nodes: list[NodeInfo], *quotas: QuotaSpec, **policy: object) -> GroupScheduler:
    g = GroupScheduler(RG, nodes, Policy(**policy))  # type: ignore[arg-type]
    for spec in quotas:
        g.quotas.validate(spec)
        g.quotas.put(spec)
    return g


def submit(g: GroupScheduler, *ws: Workload) -> Changes:
    for w in ws:
        g.add(w)
    return g.cycle(NOW)


def gpu_used(g: GroupScheduler) -> int:
    return g.placer.gpu_used_milli


def two_teams(**policy: object) -> GroupScheduler:
    # 8 A100 cards; each team is guaranteed 4 and may use up to 8
    return sched(
        gpu_nodes(2, gpus=4),
        quota("a", "a", min={"gpu": 4000}, max={"gpu": 8000}),
        quota("b", "b", min={"gpu": 4000}, max={"gpu": 8000}),
        **policy,
    )
