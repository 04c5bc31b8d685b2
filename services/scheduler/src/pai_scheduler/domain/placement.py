"""The placement engine: filters, a policy's node score, and deterministic tie-breaking.

`Placer` holds the nodes in a seeded permutation of the name-sorted list; a pod goes to the node with
the lowest policy score, ties to the earliest node in that order, and on that node to the cards the
policy chose. Scores are cached per pod shape and node and only recomputed for nodes whose state has
changed since (a version per node), and policies are memoised by (node state, pod shape), so nodes in
identical states are scored once. The choice itself is a numpy argmin over the cached scores.

Policies (lower score is better):
- `BestFit`: the FGD simulator's best fit, `int(100 * (1 - leftover))` with leftover CPU and GPU over
  fixed constants (128 cores, 8 GPUs), highest wins; on the node, the fullest card that fits.
- `Fgd`: the FGD simulator's score, `int(100 * sigmoid(fragmentation decrease / 1000))`, highest wins;
  for a GPU-sharing pod, every card with the best integer score is an option, and the pod goes to the
  lowest-numbered of those cards (as in the simulator, which scans cards in index order).
- `FragmentationAware` (ours): FGD's integer score over a fragmentation that also counts the GPUs a
  node could not use once filled (CPU that cannot feed them, card remainders); node ties go to the
  node order (first fit), card ties to the fullest card.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pai_scheduler.domain.fragmentation import (
    FillingFragmentation,
    Fragmentation,
    TypicalShape,
    fgd_integer_score,
    typical_shapes,
)
from pai_scheduler.domain.resources import (
    GPU_MILLI,
    Node,
    NodeState,
    PlacementError,
    PodRequest,
    PodShape,
    after,
    card_choices,
)

Choice = tuple[int, ...]
"""Card positions in a `NodeState`'s (sorted) cards."""

Decision = tuple[float, tuple[Choice, ...]]
"""A policy's score for a node (lower is better) and its equally good card choices (at least one).

The choices depend only on the node's state (a multiset of cards), so decisions stay memoisable by
state; the placer maps each choice to the node's actual card ids and takes the lowest ids. With one
choice that is the lowest-numbered cards of the chosen (model, free) values; with several (FGD's tied
integer scores), the lowest-numbered card among all the tied values.
"""


class Policy(Protocol):
    name: str

    def score(self, state: NodeState, shape: PodShape) -> Decision | None:
        """Score placing `shape` on a node in `state`; None when the filters reject it."""
        ...


MAX_SPEC_CPU_MILLI = 128_000
"""Best fit's normalisation constants (the FGD simulator's): the largest node's CPU and GPU milli."""
MAX_SPEC_GPU_MILLI = 8 * GPU_MILLI


def best_fit_integer_score(state: NodeState, shape: PodShape) -> int:
    """The FGD simulator's best-fit score (higher is better): 100 * (1 - leftover), truncated, where
    leftover = 0.5 * CPU left after / 128 cores + 0.5 * GPU milli left after / 8 GPUs (absolute amounts
    over fixed constants, not shares of the node's own capacity)."""
    cpu = (state.cpu_free - shape.cpu_milli) / MAX_SPEC_CPU_MILLI
    gpu = (state.gpu_free_milli - shape.num_gpu * shape.gpu_milli) / MAX_SPEC_GPU_MILLI
    return int((1.0 - (0.5 * cpu + 0.5 * gpu)) * 100)


class BestFit:
    """Best fit as the FGD simulator scores it: the highest `best_fit_integer_score` (integer, so ties go
    to the node order); on the node, the fullest card that fits (the lowest such card on ties)."""

    name = "bestfit"

    def score(self, state: NodeState, shape: PodShape) -> Decision | None:
        choices = card_choices(state, shape)
        if not choices:
            return None
        # choices are in (model, free) order; prefer the least free card (best fit on the card)
        choice = min(choices, key=lambda c: (sum(state.cards[i][1] for i in c), c))
        return -float(best_fit_integer_score(state, shape)), (choice,)


class Fgd:
    """FGD as its simulator scores it (integer scores, so many ties go to the node order).

    Every choice with the best integer score is returned: the simulator puts a sharing pod on the
    lowest-numbered card among the tied ones, which depends on the card ids, not only on the state.
    """

    name = "fgd"

    def __init__(self, shapes: tuple[TypicalShape, ...]) -> None:
        self._frag = Fragmentation(shapes)

    def score(self, state: NodeState, shape: PodShape) -> Decision | None:
        choices = card_choices(state, shape)
        if not choices:
            return None
        before = self._frag(state.cpu_free, state.cards)
        best = -1
        tied: list[Choice] = []
        for choice in choices:
            new = after(state, shape, choice)
            s = fgd_integer_score(before, self._frag(new.cpu_free, new.cards))
            if s > best:
                best, tied = s, [choice]
            elif s == best:
                tied.append(choice)
        return -float(best), tuple(tied)


FILL_WEIGHT = 0.05
"""`FragmentationAware`'s share of the filled fragmentation (see `FillingFragmentation`) when no pod is
limited to GPU models, measured with benchmarks/scheduler/placement.py: at 0.15 and more the multi-GPU
traces lose to FGD, at 0.02 most of the gain on the others is gone."""

MODEL_DAMPING = 2.0
"""How fast the filled share shrinks as pods get limited to GPU models (see `fill_weight_for`)."""


def fill_weight_for(shapes: tuple[TypicalShape, ...]) -> float:
    """The filled share for a workload: `FILL_WEIGHT * max(0, 1 - MODEL_DAMPING * c)`, where `c` is the
    weight of the GPU shapes limited to some GPU models among all GPU shapes.

    The filled part counts GPUs a node's CPU cannot feed, whatever their model, so it pulls pods off
    nodes of the common model onto nodes of scarce models; FGD's own part is what sees that a scarce
    card is worth more to the pods that can use nothing else. With a quarter of the GPU pods limited
    to models (`gpuspec25`), a fixed 0.05 left 0.6 points more GPU unallocated than FGD; damped, it is
    level with FGD there and keeps its gain where no pod names a model.
    """
    gpu = [s for s in shapes if s.num_gpu]
    total = sum(s.weight for s in gpu)
    limited = sum(s.weight for s in gpu if s.gpu_models) / total if total else 0.0
    return FILL_WEIGHT * max(0.0, 1.0 - MODEL_DAMPING * limited)


class FragmentationAware:
    """Ours: FGD's integer score over a fragmentation that also sees what filling a node would strand.

    The node score is `fgd_integer_score` of the change in `FillingFragmentation` (FGD's measure with a
    small share of the filled one, which counts GPUs the free CPU cannot feed and card remainders; the
    share is `fill_weight_for` the workload's typical shapes unless given), so
    nodes whose change falls in the same integer bin tie and go to the earliest node in the placer's
    order: that first-fit packing is worth more than an exact score (an exact fragmentation change
    with a best-fit tie-break spreads pods and leaves over 1 point more GPU unallocated on `default`).
    On the node, the best-scoring choice; ties go to the first choice in (model, free) order, i.e. to
    the fullest card, so the decision depends on the node's state only.
    """

    name = "frag"

    def __init__(self, shapes: tuple[TypicalShape, ...], fill_weight: float | None = None) -> None:
        self.fill_weight = fill_weight_for(shapes) if fill_weight is None else fill_weight
        self._frag = FillingFragmentation(shapes, self.fill_weight)

    def score(self, state: NodeState, shape: PodShape) -> Decision | None:
        choices = card_choices(state, shape)
        if not choices:
            return None
        before = self._frag(state.cpu_free, state.cards)
        best, best_choice = -1, choices[0]
        for choice in choices:
            new = after(state, shape, choice)
            s = fgd_integer_score(before, self._frag(new.cpu_free, new.cards))
            if s > best:
                best, best_choice = s, choice
        return -float(best), (best_choice,)


POLICIES = ("frag", "fgd", "bestfit")


def make_policy(name: str, workload: Iterable[PodRequest] = ()) -> Policy:
    """A policy by name; the fragmentation policies learn typical shapes from `workload`."""
    if name == "bestfit":
        return BestFit()
    if name == "fgd":
        return Fgd(typical_shapes(workload))
    if name == "frag":
        return FragmentationAware(typical_shapes(workload))
    raise PlacementError(f"unknown placement policy {name!r}; known: {', '.join(POLICIES)}")


@dataclass(frozen=True, slots=True)
class Placement:
    pod: str
    node: str
    gpu_ids: tuple[int, ...]


@dataclass(slots=True)
class _Row:
    """Cached decisions for one pod shape: the score of every node (in placer order) and the
    decision for every distinct node state seen (by state id)."""

    scores: npt.NDArray[np.float64]  # inf where the node cannot take the shape or is unschedulable
    seen: int  # the change-log position this row is current to; -1: never filled
    by_state: dict[int, Decision | None]


class Placer:
    """Places pods one at a time on `nodes` with `policy`; ties follow a permutation seeded by `seed`.

    The permutation is `random.Random(seed).shuffle` of the nodes sorted by name.
    """

    def __init__(self, nodes: Sequence[Node], policy: Policy, seed: int = 0) -> None:
        ordered = sorted(nodes, key=lambda n: n.name)
        if len({n.name for n in ordered}) != len(ordered):
            raise PlacementError("node names must be unique")
        random.Random(seed).shuffle(ordered)
        self.nodes: list[Node] = ordered
        self.policy = policy
        self._index = {n.name: i for i, n in enumerate(ordered)}
        self._states = [n.state() for n in ordered]
        # node states are interned: nodes in the same state share an id, so a shape's row is filled
        # by scoring each distinct state once and spreading the scores with numpy
        self._state_ids: dict[NodeState, int] = {}
        self._state_id = np.array([self._intern(s) for s in self._states], dtype=np.int64)
        # every change (a placement, a release, a schedulable flag) appends the node's index; a row
        # refreshes only the nodes logged since it was last current, so a decision costs what changed
        # since, not the node count (the log is dropped, and rows refilled, when it outgrows them)
        self._log: list[int] = []
        self._log_base = 0
        self._rows: dict[PodShape, _Row] = {}
        self.schedulable: npt.NDArray[np.bool_] = np.ones(len(ordered), dtype=np.bool_)

    def index_of(self, node: str) -> int:
        """The placer-order index of the node named `node` (KeyError when unknown)."""
        return self._index[node]

    def set_schedulable(self, node: str, schedulable: bool) -> None:
        """Exclude a node from (or return it to) placement; what it holds stays allocated."""
        i = self._index[node]
        self.schedulable[i] = schedulable
        self._log.append(i)

    def _intern(self, state: NodeState) -> int:
        sid = self._state_ids.get(state)
        if sid is None:
            sid = self._state_ids[state] = len(self._state_ids)
        return sid

    def _row(self, shape: PodShape) -> _Row:
        row = self._rows.get(shape)
        n = len(self.nodes)
        if row is None:
            row = _Row(np.full(n, np.inf), -1, {})
            self._rows[shape] = row
        end = self._log_base + len(self._log)
        if row.seen < self._log_base:
            dirty = np.arange(n, dtype=np.int64)
        elif row.seen < end:
            dirty = np.unique(np.asarray(self._log[row.seen - self._log_base :], dtype=np.int64))
        else:
            dirty = np.empty(0, dtype=np.int64)
        row.seen = end
        if dirty.size:
            ids = self._state_id[dirty]
            distinct, first, where = np.unique(ids, return_index=True, return_inverse=True)
            values = np.empty(len(distinct))
            decisions, score = row.by_state, self.policy.score
            for k, sid in enumerate(distinct.tolist()):
                if sid in decisions:
                    decision = decisions[sid]
                else:
                    state = self._states[int(dirty[first[k]])]
                    decision = decisions[sid] = score(state, shape)
                values[k] = np.inf if decision is None else decision[0]
            row.scores[dirty] = np.where(self.schedulable[dirty], values[where], np.inf)
        return row

    def choose(
        self, pod: PodRequest, eligible: npt.NDArray[np.bool_] | None = None
    ) -> tuple[int, tuple[int, ...]] | None:
        """The node index (placer order) and card ids for `pod`, without placing it.

        Only schedulable nodes are considered, and of those only the ones `eligible` marks (a node
        selector's mask, in placer order) when it is given.
        """
        shape = pod.shape
        row = self._row(shape)
        if not len(row.scores):
            return None
        scores = row.scores if eligible is None else np.where(eligible, row.scores, np.inf)
        i = int(np.argmin(scores))  # first minimum = earliest in the seeded order
        if scores[i] == np.inf:
            return None
        node, state = self.nodes[i], self._states[i]
        decision = row.by_state[int(self._state_id[i])]
        assert decision is not None  # a finite score has a decision
        options = decision[1]
        gpu_ids = node.card_ids_for(tuple(state.cards[p] for p in options[0]))
        for option in options[1:]:  # tied choices: the lowest card ids
            gpu_ids = min(gpu_ids, node.card_ids_for(tuple(state.cards[p] for p in option)))
        return i, gpu_ids

    def place(self, pod: PodRequest, eligible: npt.NDArray[np.bool_] | None = None) -> Placement | None:
        """Place `pod` whole on one node, or return None and change nothing."""
        chosen = self.choose(pod, eligible)
        if chosen is None:
            return None
        i, gpu_ids = chosen
        node = self.nodes[i]
        node.allocate(pod, gpu_ids)
        self._changed(i)
        return Placement(pod.name, node.name, gpu_ids)

    def reserve(self, pod: PodRequest, placement: Placement) -> None:
        """Take `pod`'s resources where `placement` says (rebuilding state, undoing a release);
        raises PlacementError and changes nothing when they are not free there."""
        i = self._index[placement.node]
        self.nodes[i].allocate(pod, placement.gpu_ids)
        self._changed(i)

    def release(self, pod: PodRequest, placement: Placement) -> None:
        i = self._index[placement.node]
        self.nodes[i].release(pod, placement.gpu_ids)
        self._changed(i)

    def _changed(self, i: int) -> None:
        self._states[i] = self.nodes[i].state()
        self._state_id[i] = self._intern(self._states[i])
        self._log.append(i)
        if len(self._log) > 4 * len(self.nodes) + 1024:
            self._log_base += len(self._log)
            self._log = []

    @property
    def gpu_used_milli(self) -> int:
        return sum(GPU_MILLI * len(n.gpu_free) - sum(n.gpu_free) for n in self.nodes)
