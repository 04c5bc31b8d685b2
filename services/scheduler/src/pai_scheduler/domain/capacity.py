"""A resource group's capacity: its nodes on the placement engine, and what holding workloads take.

`GroupCapacity` is the bottom layer of a group's scheduler (see `scheduling`): it owns every piece
of the group's scheduling state, and the moves that take or free capacity. A workload's placement
is reserved and released whole; capacity lost to cordoned or not-ready nodes still counts for what
workloads hold there, so quotas never see a group shrink under admitted work.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pai_common.clock import utcnow
from pai_scheduler.domain.outcomes import Failure
from pai_scheduler.domain.placement import Placement, Placer, make_policy
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, QuotaTree, describe, gpu_model_key
from pai_scheduler.domain.resources import GPU_MILLI, Node, PlacementError, PodRequest
from pai_scheduler.domain.workload import MIB, Preemption, State, Workload

Mask = npt.NDArray[np.bool_]
QueueKey = tuple[int, int, str]


@dataclass
class NodeInfo:
    """A node of the group as placement sees it (capacity in API units)."""

    id: str
    cpu_milli: int
    memory_bytes: int
    gpu_models: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    ready: bool = True
    cordoned: bool = False

    @property
    def schedulable(self) -> bool:
        return self.ready and not self.cordoned


@dataclass(frozen=True, slots=True)
class Policy:
    """A resource group's scheduling settings."""

    placement: str = "frag"  # frag | fgd | bestfit
    seed: int = 0
    lookahead: int = 16
    default_grace: float = 30.0
    max_grace: float = 3600.0
    preemption: bool = True
    budget: int = 256  # decisions per cycle (under the lock); the rest waits for the next cycle


def capacity_of(nodes: Iterable[NodeInfo]) -> dict[str, int]:
    """What `nodes` hold together, per resource (and per GPU model)."""
    capacity: dict[str, int] = {CPU: 0, MEMORY: 0, GPU: 0}
    for n in nodes:
        capacity[CPU] += n.cpu_milli
        capacity[MEMORY] += n.memory_bytes
        capacity[GPU] += GPU_MILLI * len(n.gpu_models)
        for m in n.gpu_models:
            capacity[gpu_model_key(m)] = capacity.get(gpu_model_key(m), 0) + GPU_MILLI
    return capacity


class GroupCapacity:
    """The scheduling state of one resource group, and the moves that take or free its capacity."""

    def __init__(self, name: str, nodes: Iterable[NodeInfo] = (), policy: Policy | None = None) -> None:
        self.name = name
        self.policy = policy or Policy()
        self.nodes: dict[str, NodeInfo] = {n.id: n for n in nodes}
        self.quotas = QuotaTree()
        self.workloads: dict[str, Workload] = {}
        self.queues: dict[str, list[tuple[QueueKey, Workload]]] = {}
        self._shape_counts: Counter[PodRequest] = Counter()
        self._shapes_at_build = 0
        self._failed: dict[object, Failure] = {}
        self._ever_fits: dict[object, bool] = {}
        self._unevaluated: set[str] = set()
        self._waiting: set[str] = set()  # pending workloads with victims being preempted for them
        self._holders: set[str] = set()  # workloads holding a placement (ADMITTED, PREEMPTING)
        self._epoch = 0  # bumped whenever capacity is taken or freed
        self._no_victims: dict[str, int] = {}  # workload -> epoch at which no victims would do
        self._admit_seq = 0
        # a pass walks the queues; it covers every quota after capacity or limits changed, else
        # only the quotas whose queues changed; a settled cluster makes no decisions at all
        self._pass: dict[str, tuple[QueueKey | None, int]] | None = None  # quota -> (last, fails)
        self._all_dirty = True
        self._dirty_quotas: set[str] = set()
        self.orphans: list[Workload] = []  # lost their placement on a rebuild; the engine reports them
        self.rebuild()

    def rebuild(self) -> None:
        """Recreate the placement engine from the nodes and re-place every holding workload."""
        engine_nodes = [
            Node(n.id, n.cpu_milli, n.memory_bytes // MIB, list(n.gpu_models)) for n in self.nodes.values()
        ]
        pods = [p for p, c in self._shape_counts.items() for _ in range(min(c, 10_000))]
        self.placer = Placer(engine_nodes, make_policy(self.policy.placement, pods), self.policy.seed)
        self._shapes_at_build = sum(self._shape_counts.values())
        for n in self.nodes.values():
            if not n.schedulable:
                self.placer.set_schedulable(n.id, False)
        self._selector_masks: dict[tuple[tuple[str, str], ...], Mask] = {}
        self._model_masks: dict[str, Mask] = {}
        for i, node in enumerate(self.placer.nodes):
            for model in set(node.gpu_models):
                self._model_masks.setdefault(model, np.zeros(len(self.placer.nodes), np.bool_))[i] = True
        # capacity: the schedulable nodes, plus whatever workloads still hold on the others
        self._base_capacity = capacity_of([n for n in self.nodes.values() if n.schedulable])
        self._held_elsewhere: dict[str, int] = {}
        self.quotas.capacity = dict(self._base_capacity)
        for name in self.quotas.usage:  # recharged below, with the placements
            self.quotas.usage[name] = {}
        for w in list(self.workloads.values()):
            if w.holds:
                self._reserve_or_orphan(w)
        self._failed.clear()
        self._ever_fits.clear()
        self._all_dirty = True

    def can_host(self, info: NodeInfo) -> str:
        """Why a new version `info` of a node cannot keep what is placed on it ('' when it can)."""
        cpu = memory_mib = 0  # memory as the placement engine counts it: pods up, nodes down to MiB
        cards = [0] * len(info.gpu_models)
        for name in self._holders:
            w = self.workloads[name]
            by_set = {ps.name: ps for ps in w.pod_sets}
            for p in w.placements:
                if p.node != info.id:
                    continue
                cpu += by_set[p.pod_set].cpu_milli
                memory_mib += -(-by_set[p.pod_set].memory_bytes // MIB)
                for i in p.gpu_indices:
                    if i >= len(cards):
                        return f"card {i} holds pods of {w.name}"
                    if info.gpu_models[i] != p.gpu_model:
                        return f"card {i} holds pods of {w.name} placed on a {p.gpu_model}"
                    cards[i] += p.gpu_milli
        if cpu > info.cpu_milli or memory_mib > info.memory_bytes // MIB:
            return f"its pods hold {describe(CPU, cpu)} and {describe(MEMORY, memory_mib * MIB)}"
        if any(c > GPU_MILLI for c in cards):
            return "its cards are allocated beyond a whole card"
        return ""

    def update_node(self, info: NodeInfo) -> None:
        """A node was added or changed: flags and labels in place, capacity changes by a rebuild."""
        old = self.nodes.get(info.id)
        self.nodes[info.id] = info
        if old is None or (old.cpu_milli, old.memory_bytes, old.gpu_models) != (
            info.cpu_milli,
            info.memory_bytes,
            info.gpu_models,
        ):
            self.rebuild()
            return
        self.placer.set_schedulable(info.id, info.schedulable)
        self._selector_masks.clear()
        self._base_capacity = capacity_of([n for n in self.nodes.values() if n.schedulable])
        self._held_elsewhere = {}
        self.quotas.capacity = dict(self._base_capacity)
        for name in self._holders:
            self._count_elsewhere(self.workloads[name], 1)
        self._failed.clear()
        self._ever_fits.clear()
        self._epoch += 1
        self._all_dirty = True

    def touch(self) -> None:
        """Quotas or limits changed: the next pass looks at every queue, and preemption searches
        that found nothing are worth trying again."""
        self._all_dirty = True
        self._epoch += 1

    def evict(self, w: Workload, reason: str, message: str, now: dt.datetime) -> State:
        """Take `w`'s resources away at once (its node is gone): PREEMPTED, for the owner to act on."""
        previous = w.state
        if w.holds:
            self._release(w)
        w.transition(State.PREEMPTED)
        w.preemption = Preemption(reason, message, "", now, now)
        return previous

    def fragmented_gpu_milli(self) -> int:
        """Free GPU milli that whole-card pods cannot use: the free part of partly used cards, and
        free cards on nodes with no CPU left."""
        total = 0
        for n in self.placer.nodes:
            for free in n.gpu_free:
                if 0 < free < GPU_MILLI or (free == GPU_MILLI and n.cpu_free <= 0):
                    total += free
        return total

    def selector_mask(self, selector: tuple[tuple[str, str], ...]) -> Mask | None:
        """The nodes (in placer order) whose labels match `selector`; None when it selects all."""
        if not selector:
            return None
        mask = self._selector_masks.get(selector)
        if mask is None:
            mask = np.array(
                [all(self.nodes[n.name].labels.get(k) == v for k, v in selector) for n in self.placer.nodes],
                dtype=np.bool_,
            )
            self._selector_masks[selector] = mask
        return mask

    def _maybe_refresh_policy(self) -> None:
        """Relearn the typical pod shapes when the mix has grown by half since the last build."""
        total = sum(self._shape_counts.values())
        if self.policy.placement != "bestfit" and total >= max(64, 2 * self._shapes_at_build):
            self.rebuild()

    def _count_elsewhere(self, w: Workload, sign: int) -> None:
        """Keep what `w` holds on cordoned or not-ready nodes in the group's capacity."""
        by_set = {ps.name: ps for ps in w.pod_sets}
        held: dict[str, int] = {}
        for p in w.placements:
            node = self.nodes.get(p.node)
            if node is None or node.schedulable:
                continue
            ps = by_set[p.pod_set]
            gpu = p.gpu_milli * len(p.gpu_indices)
            for key, amount in ((CPU, ps.cpu_milli), (MEMORY, ps.memory_bytes), (GPU, gpu)):
                held[key] = held.get(key, 0) + amount
            if gpu and p.gpu_model:
                held[gpu_model_key(p.gpu_model)] = held.get(gpu_model_key(p.gpu_model), 0) + gpu
        if held:
            for key, amount in held.items():
                self._held_elsewhere[key] = self._held_elsewhere.get(key, 0) + sign * amount
            self.quotas.capacity = {
                k: self._base_capacity.get(k, 0) + self._held_elsewhere.get(k, 0)
                for k in self._base_capacity.keys() | self._held_elsewhere.keys()
            }

    def _reserve_or_orphan(self, w: Workload) -> None:
        """Re-place a holding workload (start, node change); if its placement no longer fits the
        node it names, it loses it (PREEMPTED, NODE_DELETED) and lands in `orphans` for the owner."""
        try:
            self._reserve(w)
        except PlacementError as exc:
            now = utcnow()
            w.transition(State.PREEMPTED)
            w.preemption = Preemption("NODE_DELETED", str(exc), "", now, now)
            self._holders.discard(w.name)
            self.orphans.append(w)

    def _reserve(self, w: Workload) -> None:
        """Take what `w`'s placements say, all of it or (raising PlacementError) nothing."""
        pods = {ps.name: ps.pod for ps in w.pod_sets}
        done: list[tuple[PodRequest, Placement]] = []
        try:
            for p in w.placements:
                placement = Placement(p.pod_set, p.node, p.gpu_indices)
                if p.node not in self.nodes:
                    raise PlacementError(f"node {p.node} is gone")
                self.placer.reserve(pods[p.pod_set], placement)
                done.append((pods[p.pod_set], placement))
        except (PlacementError, KeyError) as exc:
            for pod, placement in reversed(done):
                self.placer.release(pod, placement)
            raise PlacementError(f"{w.name} no longer fits where it was placed: {exc}") from exc
        self.quotas.charge(w.quota, w.usage())
        self._holders.add(w.name)
        self._epoch += 1
        self._count_elsewhere(w, 1)

    def _release(self, w: Workload) -> None:
        pods = {ps.name: ps.pod for ps in w.pod_sets}
        for p in w.placements:
            self.placer.release(pods[p.pod_set], Placement(p.pod_set, p.node, p.gpu_indices))
        self.quotas.charge(w.quota, w.usage(), -1)
        self._holders.discard(w.name)
        self._count_elsewhere(w, -1)
        self._all_dirty = True
        self._epoch += 1
        self._failed.clear()  # freed capacity may fit gangs that failed before
