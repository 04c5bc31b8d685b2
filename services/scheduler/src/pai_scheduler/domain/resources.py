"""Nodes, GPU cards, pod requests and the placement filters.

Units: CPU in milli-cores, memory in MiB, GPU in milli-GPU per card (1000 = a whole card).

A node's *state* (`NodeState`) is the hashable part of a node that placement decisions depend on:
capacity, free CPU and memory, and the multiset of its cards as sorted `(model, free_milli)` pairs.
Nodes in identical states get identical scores, so policies memoise by state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GPU_MILLI = 1000

Card = tuple[str, int]
"""A GPU card in a `NodeState`: (model, free milli)."""


class PlacementError(Exception):
    """A placement request is malformed or does not fit where it was asked to go."""


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one pod asks for. `gpu_milli` is per GPU; `gpu_models` empty means any model."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int = 0
    gpu_milli: int = 0
    gpu_models: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0 or self.num_gpu < 0:
            raise PlacementError(f"pod {self.name}: negative request")
        if self.num_gpu == 0 and self.gpu_milli != 0:
            raise PlacementError(f"pod {self.name}: gpu_milli without num_gpu")
        if self.num_gpu > 0 and not 0 < self.gpu_milli <= GPU_MILLI:
            raise PlacementError(f"pod {self.name}: gpu_milli must be in (0, {GPU_MILLI}]")
        if self.num_gpu > 1 and self.gpu_milli != GPU_MILLI:
            raise PlacementError(f"pod {self.name}: only single-GPU pods may share a card")

    @property
    def shape(self) -> PodShape:
        return PodShape(self.cpu_milli, self.memory_mib, self.num_gpu, self.gpu_milli, self.gpu_models)

    @property
    def total_gpu_milli(self) -> int:
        return self.num_gpu * self.gpu_milli


@dataclass(frozen=True, slots=True)
class PodShape:
    """A pod request without its name: pods with equal shapes get equal placements decisions."""

    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_models: frozenset[str]

    def allows(self, model: str) -> bool:
        return not self.gpu_models or model in self.gpu_models


@dataclass(frozen=True, slots=True)
class NodeState:
    cpu_capacity: int
    gpu_capacity: int  # number of cards
    cpu_free: int
    memory_free: int
    cards: tuple[Card, ...]  # sorted

    @property
    def gpu_free_milli(self) -> int:
        return sum(free for _, free in self.cards)


@dataclass(slots=True)
class Node:
    """A node's capacity and what is free on it. `gpu_free` is per card, index = card id."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_models: list[str] = field(default_factory=list)
    cpu_free: int = -1
    memory_free: int = -1
    gpu_free: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cpu_free < 0:
            self.cpu_free = self.cpu_milli
        if self.memory_free < 0:
            self.memory_free = self.memory_mib
        if not self.gpu_free:
            self.gpu_free = [GPU_MILLI] * len(self.gpu_models)
        if len(self.gpu_free) != len(self.gpu_models):
            raise PlacementError(f"node {self.name}: gpu_free and gpu_models differ in length")

    @classmethod
    def uniform(cls, name: str, cpu_milli: int, memory_mib: int, gpus: int, model: str = "") -> Node:
        return cls(name, cpu_milli, memory_mib, [model] * gpus)

    def state(self) -> NodeState:
        cards = tuple(sorted(zip(self.gpu_models, self.gpu_free, strict=True)))
        return NodeState(self.cpu_milli, len(self.gpu_models), self.cpu_free, self.memory_free, cards)

    def allocate(self, pod: PodRequest, gpu_ids: tuple[int, ...]) -> None:
        """Take `pod`'s resources, its GPU share from each card in `gpu_ids`; all or nothing."""
        if len(gpu_ids) != pod.num_gpu or len(set(gpu_ids)) != len(gpu_ids):
            raise PlacementError(f"pod {pod.name}: needs {pod.num_gpu} distinct cards, got {gpu_ids}")
        if pod.cpu_milli > self.cpu_free or pod.memory_mib > self.memory_free:
            raise PlacementError(f"pod {pod.name}: no CPU or memory left on {self.name}")
        for i in gpu_ids:
            if not 0 <= i < len(self.gpu_free) or self.gpu_free[i] < pod.gpu_milli:
                raise PlacementError(f"pod {pod.name}: card {i} of {self.name} cannot take it")
            if pod.gpu_models and self.gpu_models[i] not in pod.gpu_models:
                raise PlacementError(f"pod {pod.name}: card {i} of {self.name} has a disallowed model")
        self.cpu_free -= pod.cpu_milli
        self.memory_free -= pod.memory_mib
        for i in gpu_ids:
            self.gpu_free[i] -= pod.gpu_milli

    def release(self, pod: PodRequest, gpu_ids: tuple[int, ...]) -> None:
        self.cpu_free = min(self.cpu_milli, self.cpu_free + pod.cpu_milli)
        self.memory_free = min(self.memory_mib, self.memory_free + pod.memory_mib)
        for i in gpu_ids:
            self.gpu_free[i] = min(GPU_MILLI, self.gpu_free[i] + pod.gpu_milli)

    def card_ids_for(self, cards: tuple[Card, ...]) -> tuple[int, ...]:
        """Map chosen `(model, free)` cards of this node's state back to card ids (lowest first)."""
        taken: list[int] = []
        for model, free in cards:
            for i, (m, f) in enumerate(zip(self.gpu_models, self.gpu_free, strict=True)):
                if m == model and f == free and i not in taken:
                    taken.append(i)
                    break
            else:
                raise PlacementError(f"node {self.name} has no free card {model}/{free}")
        return tuple(taken)


def card_choices(state: NodeState, shape: PodShape) -> list[tuple[int, ...]]:
    """The filters: the distinct ways `shape` can go on a node in `state`, as positions in
    `state.cards`; empty when it does not fit.

    CPU and memory must fit; every chosen card must have an allowed model; a sharing pod needs one card
    with free milli >= its request (one choice per distinct (model, free) card); a k-GPU pod needs k
    fully free cards on the node (one choice per allowed model with k free cards). Never partial.
    """
    if shape.cpu_milli > state.cpu_free or shape.memory_mib > state.memory_free:
        return []
    if shape.num_gpu == 0:
        return [()]
    eligible = [
        i for i, (model, free) in enumerate(state.cards) if free >= shape.gpu_milli and shape.allows(model)
    ]
    if len(eligible) < shape.num_gpu:
        return []
    choices: list[tuple[int, ...]] = []
    if shape.num_gpu == 1:
        seen: set[Card] = set()
        for i in eligible:
            if state.cards[i] not in seen:
                seen.add(state.cards[i])
                choices.append((i,))
        return choices
    by_model: dict[str, list[int]] = {}
    for i in eligible:
        by_model.setdefault(state.cards[i][0], []).append(i)
    for ids in by_model.values():
        if len(ids) >= shape.num_gpu:
            choices.append(tuple(ids[: shape.num_gpu]))
    if not choices:  # a mixed-model node: take the first k eligible cards across allowed models
        choices.append(tuple(eligible[: shape.num_gpu]))
    return choices


def after(state: NodeState, shape: PodShape, choice: tuple[int, ...]) -> NodeState:
    """The state of a node once `shape` is placed on the cards at positions `choice`."""
    cards = list(state.cards)
    for i in choice:
        model, free = cards[i]
        cards[i] = (model, free - shape.gpu_milli)
    return NodeState(
        state.cpu_capacity,
        state.gpu_capacity,
        state.cpu_free - shape.cpu_milli,
        state.memory_free - shape.memory_mib,
        tuple(sorted(cards)),
    )
