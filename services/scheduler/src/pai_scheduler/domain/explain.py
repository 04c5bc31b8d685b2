"""Why a pending workload waits, in detail: its quota checks, how each pod set fits, its victims.

What `ExplainWorkload` shows. Working it out changes nothing: trial placements are given back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pai_scheduler.domain.capacity import NodeInfo
from pai_scheduler.domain.outcomes import Failure
from pai_scheduler.domain.placement import Placement
from pai_scheduler.domain.quota import CPU, Check, describe
from pai_scheduler.domain.resources import GPU_MILLI, Node, PodRequest
from pai_scheduler.domain.scheduling import GroupScheduler
from pai_scheduler.domain.workload import MIB, PodSet, State, Workload


@dataclass
class PodSetFit:
    """How one pod set fits the group now: nodes rejected per filter, pods that would place."""

    pod_set: str
    count: int
    nodes: int = 0
    feasible: int = 0
    placeable: int = 0
    rejections: dict[str, tuple[int, str]] = field(default_factory=dict)  # filter -> (nodes, example)


@dataclass(frozen=True)
class PendingDetail:
    """What holds a pending workload back."""

    code: str
    reason: str
    queue_position: int
    quota_checks: tuple[Check, ...]
    pod_set_fits: list[PodSetFit]
    victims: list[str]

    @property
    def ahead_count(self) -> int:
        return max(0, self.queue_position - 1)


@dataclass(frozen=True)
class Explanation:
    """A workload's state as of `evaluate_time`, with the detail when it waits in a queue."""

    workload: str
    state: State
    evaluate_time: dt.datetime
    pending: PendingDetail | None = None


def explain_pending(group: GroupScheduler, w: Workload) -> PendingDetail:
    """The detail for `w`, queued in `group`: victims are the ones named, else the ones it would need."""
    position = group.queue_position(w)
    checks = group.quotas.check(w.quota, w.request()).checks
    fits = explain_fit(group, w)
    victims = list(w.victims)
    if not victims:
        result = group.try_admit(w, commit=False)
        if isinstance(result, Failure) and group.policy.preemption:
            victims = [v.name for v in group.find_victims(w, result)]
    return PendingDetail(w.pending_code, w.pending_reason, position, checks, fits, victims)


def explain_fit(group: GroupScheduler, w: Workload) -> list[PodSetFit]:
    """How each pod set fits now: nodes rejected by each filter, and how many pods would place."""
    out: list[PodSetFit] = []
    placed: list[tuple[PodRequest, Placement]] = []
    for ps in w.pod_sets:
        fit = PodSetFit(ps.name, ps.count, nodes=len(group.nodes))
        for n in group.placer.nodes:
            f, msg = first_rejection(group.nodes[n.name], n, ps)
            if f is None:
                fit.feasible += 1
            else:
                count, example = fit.rejections.get(f, (0, msg))
                fit.rejections[f] = (count + 1, example)
        mask = group.selector_mask(ps.node_selector)
        for _ in range(ps.count):
            p = group.placer.place(ps.pod, mask)
            if p is None:
                break
            placed.append((ps.pod, p))
            fit.placeable += 1
        out.append(fit)
    for pod, p in reversed(placed):
        group.placer.release(pod, p)
    return out


def first_rejection(info: NodeInfo, n: Node, ps: PodSet) -> tuple[str | None, str]:
    """The first placement filter that rejects one pod of `ps` on node `n` as it is now."""
    if not info.schedulable:
        return "UNSCHEDULABLE", f"node {n.name}: {'cordoned' if info.cordoned else 'not ready'}"
    for k, v in ps.node_selector:
        if info.labels.get(k) != v:
            return "NODE_SELECTOR", f"node {n.name}: label {k} is not {v!r}"
    gpus = ps.gpu_count or (1 if ps.gpu_milli else 0)
    allowed = [
        i for i, m in enumerate(n.gpu_models) if not ps.allowed_gpu_models or m in ps.allowed_gpu_models
    ]
    if gpus and not allowed:
        models = ", ".join(sorted(set(n.gpu_models))) or "no GPUs"
        return "GPU_MODEL", f"node {n.name}: {models}"
    if ps.cpu_milli > n.cpu_free:
        return "CPU", f"node {n.name}: {describe(CPU, n.cpu_free)} free, {describe(CPU, ps.cpu_milli)} needed"
    if -(-ps.memory_bytes // MIB) > n.memory_free:
        return "MEMORY", f"node {n.name}: {n.memory_free} MiB free, {ps.memory_bytes // MIB} MiB needed"
    if ps.gpu_count:
        free = sum(1 for i in allowed if n.gpu_free[i] == GPU_MILLI)
        if free < ps.gpu_count:
            return "GPU_COUNT", f"node {n.name}: {free} free cards, {ps.gpu_count} needed"
    elif ps.gpu_milli and not any(n.gpu_free[i] >= ps.gpu_milli for i in allowed):
        best = max(n.gpu_free[i] for i in allowed)
        return "GPU_SHARE", f"node {n.name}: at most {best / GPU_MILLI:g} GPU free on one card"
    return None, ""
