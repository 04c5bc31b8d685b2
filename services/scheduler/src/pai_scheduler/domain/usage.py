"""What quotas, groups and nodes hold and wait for, as the API shows it.

A quota *borrows* what it holds above its `min`; it *lends* the part of its idle `min` that its
lending limit lets go and that its siblings hold above their own `min`s.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from pai_scheduler.domain.quota import CPU, GPU, MEMORY, Amounts, QuotaSpec, QuotaTree, add
from pai_scheduler.domain.records import NodeRecord
from pai_scheduler.domain.workload import PodPlacement, PodSet, State, Workload

Placed = dict[str, list[tuple[PodSet, PodPlacement]]]
"""The pods placed in a group, by node id."""


@dataclass
class Tally:
    """What a quota's own workloads hold and wait for (`quota_usage` sums a subtree's)."""

    pending: Amounts = field(default_factory=dict)
    counts: Counter[State] = field(default_factory=Counter)


def tallies(workloads: Iterable[Workload]) -> dict[str, Tally]:
    """Every quota's tally, from one walk over the workloads (not one per quota shown)."""
    out: dict[str, Tally] = {}
    for w in workloads:
        t = out.setdefault(w.quota, Tally())
        t.counts[w.state] += 1
        if w.state == State.PENDING:
            t.pending = add(t.pending, w.request())
    return out


@dataclass(frozen=True)
class QuotaUsage:
    """A quota's usage as of `compute_time` (its subtree's, for workload amounts and counts)."""

    admitted: Amounts
    borrowed: Amounts
    lent: Amounts
    pending: Amounts
    available: Amounts
    admitted_count: int
    pending_count: int
    preempting_count: int
    dominant_share: float
    weighted_share: float
    compute_time: dt.datetime


def borrowed(spec: QuotaSpec, used: Mapping[str, int]) -> Amounts:
    """What a quota holds above its `min`, per resource it does."""
    return {r: v - spec.min.get(r, 0) for r, v in used.items() if v > spec.min.get(r, 0)}


def lent(tree: QuotaTree, spec: QuotaSpec) -> Amounts:
    """What of `spec`'s idle `min` its siblings hold above theirs, as far as its lending limit goes."""
    used = tree.usage.get(spec.name, {})
    siblings = [c for c in tree.children.get(spec.parent, []) if c != spec.name]
    out: Amounts = {}
    for r, lo in spec.min.items():
        idle = max(0, lo - used.get(r, 0))
        limit = spec.lending_limit.get(r)
        lendable = idle if limit is None else min(idle, limit)
        taken = sum(max(0, tree.usage[c].get(r, 0) - tree.specs[c].min.get(r, 0)) for c in siblings)
        out[r] = min(lendable, taken)
    return out


def quota_usage(tree: QuotaTree, spec: QuotaSpec, tally: Mapping[str, Tally], now: dt.datetime) -> QuotaUsage:
    """The usage of quota `spec` in `tree`, with the workload amounts of its subtree from `tally`."""
    used = tree.usage.get(spec.name, {})
    pending: Amounts = {}
    counts: Counter[State] = Counter()
    for name in tree.subtree(spec.name):
        t = tally.get(name)
        if t is not None:
            pending = add(pending, t.pending)
            counts.update(t.counts)
    resources = {CPU, MEMORY, GPU} | {r for r in tree.capacity if r.startswith("gpu/")}
    return QuotaUsage(
        admitted=dict(used),
        borrowed=borrowed(spec, used),
        lent=lent(tree, spec),
        pending=pending,
        available={r: max(0, tree.room(spec.name, r)) for r in resources},
        admitted_count=counts[State.ADMITTED],
        pending_count=counts[State.PENDING],
        preempting_count=counts[State.PREEMPTING],
        dominant_share=tree.dominant_share(spec.name) * max(spec.weight, 1),
        weighted_share=tree.dominant_share(spec.name),
        compute_time=now,
    )


@dataclass(frozen=True)
class GroupUsage:
    """A resource group's capacity, what is allocated and guaranteed of it, and its counts."""

    capacity: Amounts = field(default_factory=dict)
    allocated: Amounts = field(default_factory=dict)
    guaranteed: Amounts = field(default_factory=dict)
    nodes: int = 0
    schedulable: int = 0
    pending: int = 0
    admitted: int = 0


def group_usage(tree: QuotaTree, nodes: Collection[NodeRecord], live: Iterable[Workload]) -> GroupUsage:
    """The usage of a group with quota tree `tree`, `nodes` and unfinished workloads `live`."""
    guaranteed: Amounts = {}
    for spec in tree.specs.values():
        if not spec.parent:
            guaranteed = add(guaranteed, spec.min)
    live = list(live)
    return GroupUsage(
        capacity=dict(tree.capacity),
        allocated=dict(tree.usage[""]),
        guaranteed=guaranteed,
        nodes=len(nodes),
        schedulable=sum(1 for n in nodes if n.ready and not n.cordoned),
        pending=sum(1 for w in live if w.state == State.PENDING),
        admitted=sum(1 for w in live if w.holds),
    )


@dataclass(frozen=True)
class NodeUsage:
    """What is placed on a node: amounts, milli-GPU and pods per card (by card index), pods."""

    allocated: Amounts = field(default_factory=dict)
    gpu_allocated: list[int] = field(default_factory=list)
    gpu_pods: list[int] = field(default_factory=list)
    pods: int = 0


def placed_pods(workloads: Iterable[Workload], group: str) -> Placed:
    """The pods placed in group `group` (its name), by node: one walk over the workloads."""
    out: Placed = {}
    for w in workloads:
        if w.resource_group != group or not w.holds:
            continue
        by_set = {ps.name: ps for ps in w.pod_sets}
        for p in w.placements:
            out.setdefault(p.node, []).append((by_set[p.pod_set], p))
    return out


def node_usage(n: NodeRecord, placed: Placed) -> NodeUsage:
    """The usage of node `n` from the pods `placed` in its group."""
    allocated: Amounts = {}
    per_card = [0] * len(n.gpus)
    pods_per_card = [0] * len(n.gpus)
    pods = 0
    for ps, p in placed.get(n.id, []):
        pods += 1
        allocated = add(allocated, {CPU: ps.cpu_milli, MEMORY: ps.memory_bytes})
        for i in p.gpu_indices:
            if i < len(per_card):
                per_card[i] += p.gpu_milli
                pods_per_card[i] += 1
        if p.gpu_indices:
            amount = p.gpu_milli * len(p.gpu_indices)
            allocated = add(allocated, {GPU: amount, f"gpu/{p.gpu_model}": amount})
    return NodeUsage(allocated, per_card, pods_per_card, pods)
