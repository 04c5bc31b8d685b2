"""What dlc keeps about a job's run beside the API resource, and the scheduler's facts about it.

`Runtime` is everything a restarted dlc needs to pick a job up where it was: the attempt and the
backend handles of its replicas, where their logs are, the exits seen so far, the notices and
timers that run against it, and what the scheduler still has to hear. `WorkloadFact` is what the
scheduler said about the job's workload, recorded by the event consumer and applied by the job's
next step.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from pai_runtime.types import ReplicaExit, ReplicaHandle


class Outcome(enum.IntEnum):
    """How a job ended, as the scheduler is told (its workload outcome numbers)."""

    SUCCEEDED = 1
    FAILED = 2
    CANCELLED = 3


@dataclass(frozen=True, slots=True)
class PreemptNotice:
    """The scheduler wants the capacity back by `deadline` (preempted, or its node is gone)."""

    deadline: dt.datetime
    message: str


@dataclass(frozen=True, slots=True)
class Admission:
    """Where the scheduler admitted the job's gang (node ids, for people) and at which version."""

    nodes: str
    version: int


@dataclass
class Runtime:
    """dlc's own notes about a job's run (stored with the job, never shown by the API)."""

    attempt: int = -1  # the current (or last) attempt; -1 before the first
    launching: int | None = None  # an attempt being started whose handles are not stored yet
    handles: list[ReplicaHandle] = field(default_factory=list)
    logs: dict[int, dict[str, str]] = field(default_factory=dict)  # attempt -> replica -> log path
    launched_ns: int = 0  # when the current attempt's replicas started (hang detection)
    exits: dict[str, ReplicaExit] = field(default_factory=dict)  # replica -> how it ended (this attempt)
    finish: Outcome | None = None  # the scheduler has not heard yet how the job ended
    preempt: PreemptNotice | None = None
    admitted: Admission | None = None
    workload_version: int = 0  # the newest workload snapshot applied
    queued_at: dt.datetime | None = None  # for the pending timeout
    stop_grace: float | None = None  # a stop's SIGTERM → SIGKILL, when its caller chose one
    lost_workload: str = ""  # why the job's capacity is gone for good, once it is


class FactKind(enum.Enum):
    ADMITTED = "admitted"
    PREEMPTED = "preempted"
    EVICTED = "evicted"
    PENDING = "pending"  # the reason it waits changed
    FINISHED = "finished"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class WorkloadFact:
    """One scheduler event about a job's workload, as much of it as a job needs."""

    kind: FactKind
    workload: str  # the workload's name
    version: int  # the workload's version in the snapshot (0: unknown)
    nodes: str = ""  # admitted: where
    pending_reason: str = ""
    preemption_deadline: dt.datetime | None = None  # preempted or evicted: the notice, when it has one
    preemption_message: str = ""
