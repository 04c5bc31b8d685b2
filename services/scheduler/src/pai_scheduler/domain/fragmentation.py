"""GPU fragmentation as in FGD (Weng et al., "Beware of Fragmentation", USENIX ATC'23).

From the point of view of one pod shape m, the free GPU milli of a node is *fragmented* unless m could
go there: if m does not fit at all (no accessible card model, not enough CPU, not enough cards with
room), every free milli of the node is a fragment; if it fits, the free milli of the cards that cannot
take m's per-card request (or have a model m may not use) is a fragment. A pod without GPUs sees every
free GPU milli as a fragment. The node's expected fragmentation is the frequency-weighted sum over the
*typical* pod shapes: the most frequent (cpu, gpu_milli, num_gpu, models) shapes covering >= 95 % of
the pods, weighted by their frequency renormalised over the chosen shapes (as in the authors'
simulator). FGD places a pod where that expectation grows least.

`filled_shape_fragmentation` and `FillingFragmentation` (used by our `frag` policy) extend it: they also
count what a node could not use once filled with copies of a shape, e.g. GPUs its free CPU cannot feed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pai_scheduler.domain.resources import GPU_MILLI, Card, PodRequest


@dataclass(frozen=True, slots=True)
class TypicalShape:
    cpu_milli: int
    num_gpu: int
    gpu_milli: int
    gpu_models: frozenset[str]
    weight: float  # share among the pods of the typical shapes (the weights sum to 1)

    def allows(self, model: str) -> bool:
        return not self.gpu_models or model in self.gpu_models


def typical_shapes(pods: Iterable[PodRequest], coverage: float = 0.95) -> tuple[TypicalShape, ...]:
    """The most frequent shapes until they cover `coverage` of the pods, as the FGD simulator picks them.

    Shapes are counted over all pods (CPU-only ones included, each pod counting 1), taken in decreasing
    count, equal counts in decreasing (cpu, gpu_milli, num_gpu, models) order, until the cumulative
    count reaches `coverage`; the chosen shapes' weights are then renormalised to sum to 1 (the pods
    the cut leaves out are not counted as "no shape").
    """
    counts = Counter((p.cpu_milli, p.gpu_milli, p.num_gpu, "|".join(sorted(p.gpu_models))) for p in pods)
    total = sum(counts.values())
    if total == 0:
        return ()
    ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    chosen: list[tuple[tuple[int, int, int, str], int]] = []
    covered = 0
    for key, n in ordered:
        if covered >= coverage * total:
            break
        chosen.append((key, n))
        covered += n
    return tuple(
        TypicalShape(cpu, num_gpu, gpu_milli, frozenset(m for m in models.split("|") if m), n / covered)
        for (cpu, gpu_milli, num_gpu, models), n in chosen
    )


def shape_fragmentation(cpu_free: int, cards: tuple[Card, ...], shape: TypicalShape) -> int:
    """Free GPU milli of a node (free CPU `cpu_free`, `cards`) that `shape` could not use."""
    total = 0
    for _, free in cards:
        total += free
    if shape.num_gpu == 0 or cpu_free < shape.cpu_milli:
        return total
    fit = 0
    for model, free in cards:
        if free >= shape.gpu_milli and shape.allows(model):
            fit += 1
    if fit < shape.num_gpu:
        return total
    frag = 0
    for model, free in cards:
        if free < shape.gpu_milli or not shape.allows(model):
            frag += free
    return frag


class Fragmentation:
    """Expected fragmentation of node states against typical shapes, memoised by state."""

    def __init__(self, shapes: tuple[TypicalShape, ...]) -> None:
        self.shapes = shapes
        self._memo: dict[tuple[int, tuple[Card, ...]], float] = {}

    def __call__(self, cpu_free: int, cards: tuple[Card, ...]) -> float:
        key = (cpu_free, cards)
        value = self._memo.get(key)
        if value is None:
            value = 0.0
            for shape in self.shapes:
                value += shape.weight * shape_fragmentation(cpu_free, cards, shape)
            self._memo[key] = value
        return value


def fgd_integer_score(before: float, after: float) -> int:
    """The FGD simulator's node score: sigmoid of the fragmentation decrease (in GPUs), × 100, truncated."""
    x = (before - after) / 1000.0
    return int(100.0 / (1.0 + math.exp(-x)))


def filled_shape_fragmentation(cpu_free: int, cards: tuple[Card, ...], shape: TypicalShape) -> int:
    """Free GPU milli of a node that `shape` could not use even with as many copies packed on it as fit.

    Where `shape_fragmentation` asks whether one copy fits, this fills the node with copies: a card
    holds `free // gpu_milli` sharing copies (its remainder is a fragment), a k-GPU shape takes whole
    allowed cards k at a time (the cards left over are fragments), and no more copies than the free CPU
    can feed (`cpu_free // cpu_milli`): a node whose CPU runs out strands its GPUs. A pod without GPUs
    sees every free GPU milli as a fragment, as in `shape_fragmentation`.
    """
    total = 0
    for _, free in cards:
        total += free
    if shape.num_gpu == 0:
        return total
    if shape.num_gpu == 1:
        per = shape.gpu_milli
        copies = 0
        for model, free in cards:
            if free >= per and shape.allows(model):
                copies += free // per
    else:
        per = shape.num_gpu * GPU_MILLI
        whole = 0
        for model, free in cards:
            if free >= GPU_MILLI and shape.allows(model):
                whole += 1
        copies = whole // shape.num_gpu
    if shape.cpu_milli > 0:
        copies = min(copies, cpu_free // shape.cpu_milli)
    return total - copies * per


class FillingFragmentation:
    """Expected fragmentation that also counts what filling a node would strand, memoised by state.

    Per typical shape, `(1 - fill_weight) * shape_fragmentation + fill_weight *
    filled_shape_fragmentation`, weighted by the shapes' frequencies; `fill_weight=0` is FGD's
    `Fragmentation`. The filled part is what tells apart a node whose CPU can still feed its free GPUs
    from one where it cannot, which FGD's one-copy test only sees once not even one copy fits.
    """

    def __init__(self, shapes: tuple[TypicalShape, ...], fill_weight: float) -> None:
        if not 0.0 <= fill_weight <= 1.0:
            raise ValueError(f"fill_weight must be in [0, 1], got {fill_weight}")
        self.shapes = shapes
        self.fill_weight = fill_weight
        self._memo: dict[tuple[int, tuple[Card, ...]], float] = {}

    def __call__(self, cpu_free: int, cards: tuple[Card, ...]) -> float:
        key = (cpu_free, cards)
        value = self._memo.get(key)
        if value is None:
            fill = self.fill_weight
            value = 0.0
            for shape in self.shapes:
                one = shape_fragmentation(cpu_free, cards, shape)
                filled = filled_shape_fragmentation(cpu_free, cards, shape) if fill else one
                value += shape.weight * ((1.0 - fill) * one + fill * filled)
            self._memo[key] = value
        return value
