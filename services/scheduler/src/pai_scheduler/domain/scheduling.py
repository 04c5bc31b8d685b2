"""One resource group's scheduler: queues, gang admission against quota *and* placement, preemption.

`GroupScheduler.cycle(now)` is the decision function. It frees the resources of victims whose grace
deadline passed, then walks the quotas' queues, lowest weighted dominant share first; within a quota,
by priority then enqueue order, trying at most `lookahead` workloads that do not fit before it moves
on (so a small workload is admitted past a large one that cannot fit: no head-of-line blocking).

A try is a *decision*: the quota check up the tree, then every pod of the gang placed on the
placement engine; on any failure everything placed so far is released (never a partial gang, so two
gangs can never deadlock on each other's partial holdings). A failed gang that may preempt searches
victims: spot first, then borrowers above their `min`, then lower priority, newest first, keeping only
the victims the gang really needs. Victims get a grace deadline and keep their resources until then;
the preemptor waits (WAITING_FOR_PREEMPTION) and is tried first once they are gone.

No preemption loops: a victim is always spot, lower priority, or in a quota above its `min` while the
preemptor's side is within its `min`; none of these relations can hold in reverse.
"""

from __future__ import annotations

import datetime as dt
import heapq
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pai_scheduler.domain.placement import Placement, Placer, make_policy
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, QuotaTree, Verdict, describe, gpu_model_key
from pai_scheduler.domain.resources import GPU_MILLI, Node, PlacementError, PodRequest
from pai_scheduler.domain.workload import MIB, PodPlacement, PodSet, Preemption, State, Workload

Mask = npt.NDArray[np.bool_]


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
    placement: str = "frag"  # frag | fgd | bestfit
    seed: int = 0
    lookahead: int = 16
    default_grace: float = 30.0
    max_grace: float = 3600.0
    preemption: bool = True
    budget: int = 256  # decisions per cycle (under the lock); the rest waits for the next cycle


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Changes:
    """What a cycle decided, for the store and the events."""

    admitted: list[Workload] = field(default_factory=list)
    preempting: list[Workload] = field(default_factory=list)  # notices given this cycle
    preempted: list[Workload] = field(default_factory=list)  # resources freed this cycle
    reasons: list[tuple[Workload, str]] = field(default_factory=list)  # (workload, previous code)
    decisions: int = 0
    more: bool = False  # the budget ran out before the queues did

    def __bool__(self) -> bool:
        return bool(self.admitted or self.preempting or self.preempted or self.reasons)


def _queue_key(w: Workload) -> tuple[int, int, str]:
    return (-w.priority, w.seq, w.name)


class GroupScheduler:
    """The scheduling state of one resource group: nodes, quotas, workloads, queues."""

    MAX_CANDIDATES = 1024  # victims considered per preemption search, best ranked first

    def __init__(self, name: str, nodes: Iterable[NodeInfo] = (), policy: Policy | None = None) -> None:
        self.name = name
        self.policy = policy or Policy()
        self.nodes: dict[str, NodeInfo] = {n.id: n for n in nodes}
        self.quotas = QuotaTree()
        self.workloads: dict[str, Workload] = {}
        self.queues: dict[str, list[tuple[tuple[int, int, str], Workload]]] = {}
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
        self._pass: dict[str, tuple[tuple[int, int, str] | None, int]] | None = None  # quota -> (last, fails)
        self._all_dirty = True
        self._dirty_quotas: set[str] = set()
        self.orphans: list[Workload] = []  # lost their placement on a rebuild; the engine reports them
        self.rebuild()

    # ---- inventory ---------------------------------------------------------------------------

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
        self._base_capacity = self.capacity_of([n for n in self.nodes.values() if n.schedulable])
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
        self._base_capacity = self.capacity_of([n for n in self.nodes.values() if n.schedulable])
        self._held_elsewhere = {}
        self.quotas.capacity = dict(self._base_capacity)
        for name in self._holders:
            self._count_elsewhere(self.workloads[name], 1)
        self._failed.clear()
        self._ever_fits.clear()
        self._epoch += 1
        self._all_dirty = True

    def evict(self, w: Workload, reason: str, message: str, now: dt.datetime) -> State:
        """Take `w`'s resources away at once (its node is gone): PREEMPTED, for the owner to act on."""
        previous = w.state
        if w.holds:
            self._release(w)
        w.transition(State.PREEMPTED)
        w.preemption = Preemption(reason, message, "", now, now)
        return previous

    @staticmethod
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

    def _maybe_refresh_policy(self) -> None:
        """Relearn the typical pod shapes when the mix has grown by half since the last build."""
        total = sum(self._shape_counts.values())
        if self.policy.placement != "bestfit" and total >= max(64, 2 * self._shapes_at_build):
            self.rebuild()

    def _selector_mask(self, selector: tuple[tuple[str, str], ...]) -> Mask | None:
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

    # ---- workloads ---------------------------------------------------------------------------

    def add(self, w: Workload) -> None:
        """Track a workload (new, or loaded from the store); a holding one is placed where it was."""
        self.workloads[w.name] = w
        self._admit_seq = max(self._admit_seq, w.admit_seq)
        if w.victims:
            self._waiting.add(w.name)
        for ps in w.pod_sets:
            self._shape_counts[ps.pod] += ps.count
        if w.state == State.PENDING:
            self._enqueue(w)
        elif w.holds:
            self._reserve_or_orphan(w)

    def _reserve_or_orphan(self, w: Workload) -> None:
        """Re-place a holding workload (start, node change); if its placement no longer fits the
        node it names, it loses it (PREEMPTED, NODE_DELETED) and lands in `orphans` for the owner."""
        try:
            self._reserve(w)
        except PlacementError as exc:
            now = dt.datetime.now(dt.UTC)
            w.transition(State.PREEMPTED)
            w.preemption = Preemption("NODE_DELETED", str(exc), "", now, now)
            self._holders.discard(w.name)
            self.orphans.append(w)

    def forget(self, w: Workload) -> None:
        """Stop tracking a workload (finished or deleted); free what it holds."""
        if w.name in self.workloads:
            if w.state == State.PENDING:
                self._dirty_quotas.add(w.quota)  # the ones behind it move up
            self._dequeue(w)
            if w.holds:
                self._release(w)
            del self.workloads[w.name]
        if w.name in self._waiting:
            self._all_dirty = True  # what it held back may go now
        self._waiting.discard(w.name)
        self._unevaluated.discard(w.name)
        self._no_victims.pop(w.name, None)

    def touch(self) -> None:
        """Quotas or limits changed: the next pass looks at every queue, and preemption searches
        that found nothing are worth trying again."""
        self._all_dirty = True
        self._epoch += 1

    def _enqueue(self, w: Workload) -> None:
        self._dirty_quotas.add(w.quota)
        if w.pending_code == "NOT_EVALUATED":
            self._unevaluated.add(w.name)
        insort(self.queues.setdefault(w.quota, []), (_queue_key(w), w), key=lambda e: e[0])

    def _dequeue(self, w: Workload) -> None:
        queue = self.queues.get(w.quota, [])
        key = _queue_key(w)
        i = bisect_left(queue, key, key=lambda e: e[0])
        if i < len(queue) and queue[i][1] is w:
            del queue[i]

    def reprioritise(self, w: Workload, priority: int) -> None:
        pending = w.state == State.PENDING and w.name in self.workloads
        if pending:
            self._dequeue(w)
        w.priority = priority
        if pending:
            self._enqueue(w)

    def queue_position(self, w: Workload) -> int:
        if w.state != State.PENDING:
            return 0
        queue = self.queues.get(w.quota, [])
        i = bisect_left(queue, _queue_key(w), key=lambda e: e[0])
        return i + 1 if i < len(queue) and queue[i][1] is w else 0

    def requeue(self, w: Workload, now: dt.datetime, seq: int | None = None) -> State:
        """The owner gives the placement back (or acts on a preemption): back to PENDING, at its old
        place in the queue, or with `seq` behind everything queued since."""
        previous = w.transition(State.PENDING)
        if seq is not None:
            w.seq, w.enqueue_time = seq, now
        if previous in (State.ADMITTED, State.PREEMPTING):
            self._release(w)
        w.placements, w.preemption, w.requeue_count = (), None, w.requeue_count + 1
        w.set_pending("NOT_EVALUATED", "requeued; not evaluated by the scheduler yet")
        self._waiting.discard(w.name)
        self._enqueue(w)
        return previous

    def finish(self, w: Workload, outcome: str, message: str, now: dt.datetime) -> State:
        previous = w.state
        self.forget(w)
        w.transition(State.FINISHED)
        w.outcome, w.finish_message, w.finish_time = outcome, message, now
        w.clear_pending()
        return previous

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

    # ---- the decision ------------------------------------------------------------------------

    def try_admit(self, w: Workload, *, commit: bool = True) -> tuple[PodPlacement, ...] | Failure:
        """Admit `w` whole (quota and placement) or change nothing and say why not."""
        for ps in w.pod_sets:  # a pod no node could ever host: say so before anything else
            if not self._ever_fits_somewhere(ps):
                return Failure(
                    "NO_MATCHING_NODE",
                    f"no schedulable node can ever host a pod of {ps.name}",
                    {"pod_set": ps.name},
                )
        request = w.request()
        verdict = self.quotas.check(w.quota, request)
        if not verdict.fits:
            return _quota_failure(verdict)
        headroom = self._model_headroom(w)
        key = tuple((ps.pod.shape, ps.count, ps.node_selector) for ps in w.pod_sets)
        if not headroom and key in self._failed:
            return self._failed[key]
        placed: list[tuple[PodRequest, Placement, PodPlacement]] = []
        failure: Failure | None = None
        for ps in w.pod_sets:
            pod = ps.pod
            base = self._selector_mask(ps.node_selector)
            for index in range(ps.count):
                mask = base
                blocked = (
                    [m for m, room in headroom.items() if room < ps.pod_gpu_milli] if pod.num_gpu else []
                )
                for m in blocked:
                    model_mask = self._model_masks.get(m)
                    if model_mask is not None:
                        mask = ~model_mask if mask is None else mask & ~model_mask
                p = self.placer.place(pod, mask)
                if p is None:
                    failure = self._placement_failure(w, ps, index, blocked)
                    break
                node = self.placer.nodes[self.placer.index_of(p.node)]
                model = node.gpu_models[p.gpu_ids[0]] if p.gpu_ids else ""
                if model in headroom:
                    headroom[model] -= ps.pod_gpu_milli
                placed.append((pod, p, PodPlacement(ps.name, index, p.node, p.gpu_ids, pod.gpu_milli, model)))
            if failure is not None:
                break
        if failure is not None or not commit:
            for pod, p, _ in reversed(placed):
                self.placer.release(pod, p)
            if failure is not None and not headroom and failure.code == "NO_PLACEMENT":
                self._failed[key] = failure
            return failure if failure is not None else tuple(pp for _, _, pp in placed)
        placements = tuple(pp for _, _, pp in placed)
        w.placements = placements
        self.quotas.charge(w.quota, w.usage())
        return placements

    def _model_headroom(self, w: Workload) -> dict[str, int]:
        """Per-model room left by per-model limits on the workload's quota path (limited models only)."""
        if not any(ps.pod_gpu_milli for ps in w.pod_sets):
            return {}
        models = {
            res.split("/", 1)[1]
            for spec in self.quotas.path(w.quota)
            for limits in (spec.max, spec.borrowing_limit)
            for res in limits
            if res.startswith("gpu/")
        }
        return {m: self.quotas.room(w.quota, gpu_model_key(m)) for m in sorted(models)}

    def _placement_failure(self, w: Workload, ps: PodSet, index: int, blocked: Sequence[str]) -> Failure:
        pod = ps.pod
        meta = {"pod_set": ps.name}
        allowed = set(ps.allowed_gpu_models) or {m for n in self.nodes.values() for m in n.gpu_models}
        if pod.num_gpu and blocked and allowed <= set(blocked):
            model = sorted(blocked)[0]
            spec = next(iter(self.quotas.path(w.quota)))
            return Failure(
                "QUOTA_MAX_REACHED",
                f"quota max reached for gpu/{model} in {spec.label}",
                {"quota": w.quota, "resource": f"gpu/{model}"},
            )
        models = "/".join(ps.allowed_gpu_models) if ps.allowed_gpu_models else "GPU"
        if ps.gpu_count:
            what = f"no node with {ps.gpu_count} free {models} card{'s' if ps.gpu_count > 1 else ''}"
            meta["resource"] = "gpu"
        elif ps.gpu_milli:
            what = f"no {models} card with {ps.gpu_milli / GPU_MILLI:g} GPU free"
            meta["resource"] = "gpu"
        else:
            what = f"no node with {describe(CPU, ps.cpu_milli)} and {describe(MEMORY, ps.memory_bytes)} free"
            meta["resource"] = "cpu"
        if index or len(w.pod_sets) > 1 or ps.count > 1:
            what += f" (gang: {index} of {ps.count} {ps.name} pods fit now, all are needed)"
        return Failure("NO_PLACEMENT", what, meta)

    def _ever_fits_somewhere(self, ps: PodSet) -> bool:
        ever = self._ever_fits.get(ps)
        if ever is None:
            ever = self._ever_fits[ps] = any(self._fits_empty(n, ps) for n in self.nodes.values())
        return ever

    @staticmethod
    def _fits_empty(n: NodeInfo, ps: PodSet) -> bool:
        if not n.schedulable or any(n.labels.get(k) != v for k, v in ps.node_selector):
            return False
        if ps.cpu_milli > n.cpu_milli or ps.memory_bytes > n.memory_bytes:
            return False
        if not (ps.gpu_count or ps.gpu_milli):
            return True
        usable = [m for m in n.gpu_models if not ps.allowed_gpu_models or m in ps.allowed_gpu_models]
        return len(usable) >= max(ps.gpu_count, 1)

    # ---- explanations ------------------------------------------------------------------------

    def explain_fit(self, w: Workload) -> list[PodSetFit]:
        """How each pod set fits now: nodes rejected by each filter, and how many pods would place."""
        out: list[PodSetFit] = []
        placed: list[tuple[PodRequest, Placement]] = []
        for ps in w.pod_sets:
            fit = PodSetFit(ps.name, ps.count, nodes=len(self.nodes))
            for n in self.placer.nodes:
                info = self.nodes[n.name]
                f, msg = _first_rejection(info, n, ps)
                if f is None:
                    fit.feasible += 1
                else:
                    count, example = fit.rejections.get(f, (0, msg))
                    fit.rejections[f] = (count + 1, example)
            mask = self._selector_mask(ps.node_selector)
            for _ in range(ps.count):
                p = self.placer.place(ps.pod, mask)
                if p is None:
                    break
                placed.append((ps.pod, p))
                fit.placeable += 1
            out.append(fit)
        for pod, p in reversed(placed):
            self.placer.release(pod, p)
        return out

    def fragmented_gpu_milli(self) -> int:
        """Free GPU milli that whole-card pods cannot use: the free part of partly used cards, and
        free cards on nodes with no CPU left."""
        total = 0
        for n in self.placer.nodes:
            for free in n.gpu_free:
                if 0 < free < GPU_MILLI or (free == GPU_MILLI and n.cpu_free <= 0):
                    total += free
        return total

    # ---- preemption --------------------------------------------------------------------------

    def _candidates(self, w: Workload, failure: Failure) -> list[Workload]:
        """Admitted workloads `w` may preempt, best victims first."""
        request = w.request()
        q = self.quotas.specs[w.quota]
        own_max = failure.code == "QUOTA_MAX_REACHED" and failure.metadata.get("quota") == w.quota
        path = [s.name for s in self.quotas.path(w.quota)]
        out: list[tuple[tuple[int, int, int, int], Workload]] = []
        # per other quota: may `w` reclaim from it, and is that quota itself above its min (the
        # answers depend on the quota, not the candidate, so each is worked out once per search)
        reclaim: dict[str, tuple[bool, bool]] = {}
        for name in self._holders:
            c = self.workloads[name]
            if c.state != State.ADMITTED or c is w:
                continue
            spot_first = c.preemptible and not w.preemptible
            if c.quota == w.quota:
                if q.within_quota == "NEVER" or not (spot_first or c.priority < w.priority):
                    continue
                if w.preemptible and not c.preemptible:
                    continue  # spot never preempts on-demand work, whatever the priorities
                borrower = False
            else:
                if own_max or q.reclaim == "NEVER" or (w.preemptible and not c.preemptible):
                    continue
                if q.reclaim == "LOWER_PRIORITY" and c.priority >= w.priority:
                    continue
                verdict = reclaim.get(c.quota)
                if verdict is None:
                    side_c, side_q = self._sides(c.quota, path)
                    managed = [self.quotas.guaranteed(s, request) for s in side_q or ()]
                    allowed = bool(side_q) and all(managed) and self.quotas.borrowing(side_c, managed[-1])
                    own = allowed and self.quotas.borrowing(c.quota, managed[-1])  # its own quota over min
                    verdict = reclaim[c.quota] = (allowed, own)
                if not verdict[0]:
                    continue
                borrower = verdict[1]
            rank = (0 if spot_first else 1, 0 if borrower else 1, c.priority, -c.admit_seq)
            out.append((rank, c))
        out.sort(key=lambda e: e[0])
        return [c for _, c in out]

    def _sides(self, other: str, path: list[str]) -> tuple[str, list[str] | None]:
        """The children of the lowest common ancestor on `other`'s side and the quotas of `path`
        (bottom-up) below it."""
        other_path = [s.name for s in self.quotas.path(other)]
        common = set(path) & set(other_path)
        below_other = [n for n in other_path if n not in common]
        below_mine = [n for n in path if n not in common]
        return below_other[-1], below_mine or None

    def find_victims(self, w: Workload, failure: Failure) -> list[Workload]:
        """The fewest victims (best first) whose removal lets `w` in; empty when none would.

        Candidates are released in rank order and the gang is tried at exponentially spaced counts
        (1, 2, 4, ...); the shortest sufficient prefix is then found by bisection, and every victim
        in it the gang does not need is given back. So a search costs O(log n + victims) gang
        trials, not one per candidate. A search that found nothing is not repeated until capacity
        is taken or freed.
        """
        if self._no_victims.get(w.name) == self._epoch:
            return []
        epoch, dirty = self._epoch, self._all_dirty
        path = [s.name for s in self.quotas.path(w.quota)]
        removed: list[Workload] = []
        released = 0  # removed[:released] are released now

        def fits() -> bool:
            return not isinstance(self.try_admit(w, commit=False), Failure)

        def release_prefix(k: int) -> None:
            nonlocal released
            while released < k:
                self._release(removed[released])
                released += 1
            while released > k:
                released -= 1
                self._reserve(removed[released])

        known_short, enough, checkpoint = 0, 0, 1
        for c in self._candidates(w, failure)[: self.MAX_CANDIDATES]:
            if c.quota != w.quota and not self._keeps_min(c, path):
                continue
            removed.append(c)
            release_prefix(len(removed))
            if len(removed) == checkpoint:
                if fits():
                    enough = len(removed)
                    break
                known_short, checkpoint = len(removed), 2 * checkpoint
        else:
            if len(removed) > known_short and fits():
                enough = len(removed)
        victims: list[Workload] = []
        if enough:
            while enough - known_short > 1:
                middle = (known_short + enough) // 2
                release_prefix(middle)
                if fits():
                    enough = middle
                else:
                    known_short = middle
            release_prefix(enough)
            victims = removed[:enough]
            for c in reversed(victims[:-1]):  # give back every victim the gang does not need
                self._reserve(c)
                if fits():
                    victims.remove(c)
                else:
                    self._release(c)
            for c in victims:  # the search changes nothing: the preemption does, with notices
                self._reserve(c)
            released = 0
            removed = [c for c in removed if c not in victims]
        release_prefix(0)
        self._failed.clear()
        self._epoch, self._all_dirty = epoch, dirty  # the search itself changed nothing
        if not victims:
            self._no_victims[w.name] = epoch
        return victims

    def _keeps_min(self, c: Workload, path: list[str]) -> bool:
        """Reclaiming `c` must take no quota on its side of the tree (its own up to the child of the
        common ancestor) below its `min` in any resource."""
        mine = set(path)
        for spec in self.quotas.path(c.quota):
            if spec.name in mine:
                break
            used = self.quotas.usage[spec.name]
            for res, v in c.usage().items():
                lo = spec.min.get(res, 0)
                if used.get(res, 0) >= lo and used.get(res, 0) - v < lo:
                    return False
        return True

    def _preempt(self, victims: list[Workload], w: Workload, now: dt.datetime, changes: Changes) -> None:
        for v in victims:
            grace = v.grace_seconds or self.policy.default_grace
            grace = min(grace, self.policy.max_grace)
            reason = "PRIORITY" if v.quota == w.quota else "QUOTA_RECLAIM"
            kind = "spot workload" if v.preemptible else "workload"
            why = (
                f"{kind} preempted for higher-priority {w.name}"
                if reason == "PRIORITY"
                else f"{kind} preempted to reclaim borrowed capacity for {self.quotas.specs[w.quota].label}"
            )
            v.transition(State.PREEMPTING)
            v.preemption = Preemption(reason, why, w.name, now, now + dt.timedelta(seconds=grace))
            changes.preempting.append(v)

    def drain(self, node_id: str, now: dt.datetime) -> list[Workload]:
        """Give every workload placed on `node_id` a preemption notice (NODE_DRAINED)."""
        victims = []
        for name in sorted(self._holders):
            v = self.workloads[name]
            if v.state == State.ADMITTED and any(p.node == node_id for p in v.placements):
                grace = min(v.grace_seconds or self.policy.default_grace, self.policy.max_grace)
                v.transition(State.PREEMPTING)
                why = f"node {node_id} is being drained"
                v.preemption = Preemption("NODE_DRAINED", why, "", now, now + dt.timedelta(seconds=grace))
                victims.append(v)
        return victims

    # ---- the cycle ---------------------------------------------------------------------------

    def next_deadline(self) -> dt.datetime | None:
        """The soonest grace deadline of a workload being preempted."""
        deadlines = [
            w.preemption.deadline
            for name in self._holders
            if (w := self.workloads[name]).state == State.PREEMPTING and w.preemption is not None
        ]
        return min(deadlines, default=None)

    def expire(self, now: dt.datetime, changes: Changes) -> None:
        for name in sorted(self._holders):
            v = self.workloads[name]
            if v.state == State.PREEMPTING and v.preemption and v.preemption.deadline <= now:
                self._release(v)
                v.transition(State.PREEMPTED)
                changes.preempted.append(v)

    def cycle(self, now: dt.datetime) -> Changes:
        """One scheduling pass over the queues (at most `policy.budget` decisions)."""
        changes = Changes()
        self.expire(now, changes)
        self._maybe_refresh_policy()
        budget = self.policy.budget
        tried: set[str] = set()
        # preemptors whose victims are gone go first, so no one else takes what was freed for them
        nominated = [
            w
            for name in self._waiting
            if (w := self.workloads[name]).state == State.PENDING
            and not any(self._holding(v, w.name) for v in w.victims)
        ]
        for w in sorted(nominated, key=_queue_key):
            budget -= 1
            tried.add(w.name)
            self._decide(w, now, changes, preempt=True)
        if self._pass is None:  # start a pass over the queues that something changed for
            quotas = self.queues if self._all_dirty else self._dirty_quotas
            self._pass = {q: (None, 0) for q in quotas if self.queues.get(q)}
            self._all_dirty = False
            self._dirty_quotas = set()
        progress = self._pass
        for q in [q for q in progress if q not in self.quotas.specs]:  # deleted meanwhile
            del progress[q]
        # a quota's progress is the queue key of the last workload tried (not a position, which
        # removals ahead of it would shift), so the pass resumes right after it
        heap = [(self.quotas.dominant_share(q), q) for q in progress]
        heapq.heapify(heap)
        while heap and budget > 0:
            _, q = heapq.heappop(heap)
            after, failures = progress[q]
            queue = self.queues.get(q, [])
            pos = 0 if after is None else bisect_right(queue, after, key=lambda e: e[0])
            if pos >= len(queue):
                del progress[q]
                continue
            key, w = queue[pos]
            if w.name in tried:
                progress[q] = (key, failures)
                heapq.heappush(heap, (self.quotas.dominant_share(q), q))
                continue
            budget -= 1
            tried.add(w.name)
            if self._decide(w, now, changes, preempt=failures == 0):
                heapq.heappush(heap, (self.quotas.dominant_share(q), q))  # dequeued: resume after `after`
            elif failures + 1 < self.policy.lookahead:
                progress[q] = (key, failures + 1)
                heapq.heappush(heap, (self.quotas.dominant_share(q), q))
            else:
                del progress[q]
        if heap:  # the budget ran out: the pass goes on next cycle where it stopped
            changes.more = True
        else:
            # the pass is over; another one only if something changed meanwhile (an admission
            # here makes reasons given before it stale, so that counts)
            self._pass = None
            changes.more = self._all_dirty or bool(self._dirty_quotas)
        changes.decisions = self.policy.budget - budget
        self._mark_behind(tried, changes)
        return changes

    def _holding(self, name: str, preemptor: str = "") -> bool:
        """Whether victim `name` still holds what it was preempted for (by `preemptor`)."""
        v = self.workloads.get(name)
        if v is None or v.state != State.PREEMPTING or v.preemption is None:
            return False
        return not preemptor or v.preemption.preemptor == preemptor

    def _blocked_by(self, w: Workload) -> Workload | None:
        """A waiting preemptor whose freed capacity `w` must not take (or a preemption loop starts):
        `w` is one it could preempt, or in a quota it reclaims from and above its guarantee."""
        for name in self._waiting:
            p = self.workloads.get(name)
            if p is None or p is w or p.state != State.PENDING:
                continue
            if w.quota == p.quota:
                if w.priority < p.priority or (w.preemptible and not p.preemptible):
                    return p
                continue
            victim_quotas = {self.workloads[v].quota for v in p.victims if v in self.workloads}
            if w.quota in victim_quotas and not self.quotas.guaranteed(w.quota, w.request()):
                return p
        return None

    def _decide(self, w: Workload, now: dt.datetime, changes: Changes, *, preempt: bool) -> bool:
        """Try `w`; on failure maybe preempt; record the outcome. True when admitted."""
        if w.victims and any(self._holding(v, w.name) for v in w.victims):
            return False  # still waiting for its victims: nothing new to decide
        blocker = self._blocked_by(w) if self._waiting else None
        if blocker is not None:
            previous = w.pending_code
            why = f"capacity is being freed for {blocker.name}, which goes first"
            if w.set_pending("QUEUED_BEHIND", why, {"ahead_count": "1", "preemptor": blocker.name}):
                changes.reasons.append((w, previous))
            self._unevaluated.discard(w.name)
            return False
        result = self.try_admit(w)
        if not isinstance(result, Failure):
            self._dequeue(w)
            w.transition(State.ADMITTED)
            w.admit_time = now
            self._admit_seq += 1
            w.admit_seq = self._admit_seq
            self._holders.add(w.name)
            self._epoch += 1
            self._all_dirty = True
            self._no_victims.pop(w.name, None)
            w.clear_pending()
            self._waiting.discard(w.name)
            self._unevaluated.discard(w.name)
            changes.admitted.append(w)
            return True
        previous = w.pending_code
        failure = result
        victims: list[Workload] = []
        if (
            preempt
            and self.policy.preemption
            and failure.code in ("NO_PLACEMENT", "QUOTA_BORROWING_EXHAUSTED", "QUOTA_MAX_REACHED")
        ):
            victims = self.find_victims(w, failure)
        if victims:
            self._preempt(victims, w, now, changes)
            spot = sum(1 for v in victims if v.preemptible)
            kind = "spot workload" if spot == len(victims) else "workload"
            n = len(victims)
            failure = Failure(
                "WAITING_FOR_PREEMPTION",
                f"waiting for preemption of {n} {kind}{'s' if n > 1 else ''}",
                {"victim_count": str(n)},
            )
        if victims:
            self._waiting.add(w.name)
        elif w.name in self._waiting:
            self._waiting.discard(w.name)
            self._all_dirty = True  # it no longer holds anything back
        self._unevaluated.discard(w.name)
        names = tuple(v.name for v in victims)
        if w.set_pending(failure.code, failure.message, dict(failure.metadata), names):
            changes.reasons.append((w, previous))
        return False

    def _mark_behind(self, tried: set[str], changes: Changes) -> None:
        """Workloads never evaluated yet learn what they wait behind (once, to avoid churn)."""
        for name in sorted(self._unevaluated - tried):
            w = self.workloads[name]
            ahead = self.queue_position(w) - 1
            w.set_pending(
                "QUEUED_BEHIND", f"{ahead} workloads ahead in the queue", {"ahead_count": str(ahead)}
            )
            changes.reasons.append((w, "NOT_EVALUATED"))
        self._unevaluated.clear()


@dataclass
class PodSetFit:
    pod_set: str
    count: int
    nodes: int = 0
    feasible: int = 0
    placeable: int = 0
    rejections: dict[str, tuple[int, str]] = field(default_factory=dict)  # filter -> (nodes, example)


def _first_rejection(info: NodeInfo, n: Node, ps: PodSet) -> tuple[str | None, str]:
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


def _quota_failure(v: Verdict) -> Failure:
    meta = {"resource": v.resource}
    if v.quota:
        meta["quota"] = v.quota
    return Failure("NO_PLACEMENT" if v.code == "NO_CAPACITY" else v.code, v.message, meta)
