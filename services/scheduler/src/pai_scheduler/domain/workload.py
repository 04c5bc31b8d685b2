"""Workloads: gangs of pod sets that are admitted whole or not at all, and their lifecycle.

PENDING -> ADMITTED -> FINISHED; ADMITTED -> PREEMPTING (notice given, resources held until the
deadline) -> PREEMPTED (resources freed) -> PENDING (requeued by the owner) or FINISHED.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from pai_common.errors import FailedPrecondition, bad_request
from pai_common.etags import Versioned
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, Amounts, gpu_model_key
from pai_scheduler.domain.resources import GPU_MILLI, PodRequest

MIB = 2**20


class State(enum.StrEnum):
    PENDING = "PENDING"
    ADMITTED = "ADMITTED"
    PREEMPTING = "PREEMPTING"
    PREEMPTED = "PREEMPTED"
    FINISHED = "FINISHED"


HOLDING = (State.ADMITTED, State.PREEMPTING)
"""States in which a workload holds its placement."""

_TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.ADMITTED, State.FINISHED}),
    State.ADMITTED: frozenset({State.PREEMPTING, State.PREEMPTED, State.PENDING, State.FINISHED}),
    State.PREEMPTING: frozenset({State.PREEMPTED, State.PENDING, State.FINISHED}),
    State.PREEMPTED: frozenset({State.PENDING, State.FINISHED}),
    State.FINISHED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class PodSet:
    """`count` identical pods. GPU: `gpu_count` whole cards, or `gpu_milli` of one card."""

    name: str
    count: int
    cpu_milli: int = 0
    memory_bytes: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0
    allowed_gpu_models: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()

    @property
    def pod(self) -> PodRequest:
        """One pod of the set, in the placement engine's units (memory rounded up to MiB)."""
        if self.gpu_count:
            num, milli = self.gpu_count, GPU_MILLI
        elif self.gpu_milli:
            num, milli = 1, self.gpu_milli
        else:
            num, milli = 0, 0
        return PodRequest(
            self.name,
            self.cpu_milli,
            -(-self.memory_bytes // MIB),
            num,
            milli,
            frozenset(self.allowed_gpu_models),
        )

    @property
    def pod_gpu_milli(self) -> int:
        return self.gpu_count * GPU_MILLI if self.gpu_count else self.gpu_milli


def check_pod_sets(pod_sets: Sequence[tuple[str, int, int]]) -> None:
    """Pod sets as asked for, `(name, gpu_count, gpu_milli)`: names are unique, and a set asks for
    whole cards or a share of one, not both; INVALID_POD_SET otherwise."""
    names = [name for name, _, _ in pod_sets]
    if len(set(names)) != len(names):
        raise bad_request("workload.pod_sets", "pod set names must be unique", "INVALID_POD_SET")
    for i, (_, gpu_count, gpu_milli) in enumerate(pod_sets):
        if gpu_count > 1 and gpu_milli:
            raise bad_request(
                f"workload.pod_sets[{i}]", "set gpu_count or gpu_milli, not both", "INVALID_POD_SET"
            )


@dataclass(frozen=True, slots=True)
class PodPlacement:
    pod_set: str
    pod_index: int
    node: str  # the node's id in its resource group
    gpu_indices: tuple[int, ...]
    gpu_milli: int  # per listed card
    gpu_model: str


@dataclass
class Preemption:
    reason: str  # QUOTA_RECLAIM | PRIORITY | NODE_DRAINED | NODE_DELETED
    message: str
    preemptor: str
    preempt_time: dt.datetime
    deadline: dt.datetime


@dataclass
class Workload(Versioned):
    """A workload as the scheduler holds it (names are full resource names)."""

    name: str  # workspaces/{ws}/workloads/{id}
    uid: str
    quota: str
    resource_group: str
    pod_sets: tuple[PodSet, ...]
    priority: int = 0
    preemptible: bool = False
    owner: str = ""
    owner_kind: str = "EXTERNAL"
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    grace_seconds: float = 0.0
    state: State = State.PENDING
    seq: int = 0  # queue order within a priority (enqueue order); kept across requeues
    pending_code: str = "NOT_EVALUATED"
    pending_reason: str = "not evaluated by the scheduler yet"
    pending_metadata: dict[str, str] = field(default_factory=dict)
    victims: tuple[str, ...] = ()
    placements: tuple[PodPlacement, ...] = ()
    preemption: Preemption | None = None
    outcome: str = ""
    finish_message: str = ""
    requeue_count: int = 0
    enqueue_time: dt.datetime | None = None
    admit_time: dt.datetime | None = None
    finish_time: dt.datetime | None = None
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1
    admit_seq: int = 0  # admission order, newest highest (preemption takes the newest first)

    def __post_init__(self) -> None:
        self.state = State(self.state)

    @property
    def workspace(self) -> str:
        return self.name.rsplit("/workloads/", 1)[0]

    @property
    def holds(self) -> bool:
        return self.state in HOLDING

    def transition(self, target: State) -> State:
        """Move to `target`, returning the state before; FAILED_PRECONDITION when not allowed."""
        if target not in _TRANSITIONS[self.state]:
            raise FailedPrecondition(
                "ILLEGAL_STATE_TRANSITION",
                f"{self.name} is {self.state}; it cannot become {target}",
                workload=self.name,
                state=str(self.state),
            )
        previous, self.state = self.state, target
        return previous

    def request(self) -> Amounts:
        """What all pods request together; GPU per model where a pod set allows one model only (for
        others the model is known once placed: see `usage`)."""
        out: Amounts = {CPU: 0, MEMORY: 0, GPU: 0}
        for ps in self.pod_sets:
            out[CPU] += ps.count * ps.cpu_milli
            out[MEMORY] += ps.count * ps.memory_bytes
            out[GPU] += ps.count * ps.pod_gpu_milli
            if ps.pod_gpu_milli and len(ps.allowed_gpu_models) == 1:
                key = gpu_model_key(ps.allowed_gpu_models[0])
                out[key] = out.get(key, 0) + ps.count * ps.pod_gpu_milli
        return {k: v for k, v in out.items() if v}

    def usage(self) -> Amounts:
        """What the workload holds once placed: its request, GPU per model from its placements."""
        out = {k: v for k, v in self.request().items() if not k.startswith("gpu/")}
        for p in self.placements:
            key = gpu_model_key(p.gpu_model)
            if p.gpu_indices and p.gpu_model:
                out[key] = out.get(key, 0) + p.gpu_milli * len(p.gpu_indices)
        return out

    def set_pending(
        self, code: str, reason: str, metadata: dict[str, str] | None = None, victims: tuple[str, ...] = ()
    ) -> bool:
        """Set the pending reason; True when it changed."""
        metadata = metadata or {}
        changed = (code, reason, metadata, victims) != (
            self.pending_code,
            self.pending_reason,
            self.pending_metadata,
            self.victims,
        )
        self.pending_code, self.pending_reason, self.pending_metadata = code, reason, metadata
        self.victims = victims
        return changed

    def clear_pending(self) -> None:
        self.pending_code, self.pending_reason, self.pending_metadata, self.victims = "", "", {}, ()
