"""A training job: its state machine, its replicas' statuses, and the history of its changes.

CREATING → QUEUED → STARTING → RUNNING → SUCCEEDED | FAILED | STOPPED, with RESTARTING (the gang is
being restarted after a failure or a hang), PREEMPTED (the scheduler took the capacity back; the job
is queued again) and STOPPING. Every state carries a reason code and a sentence a person can act on.
Each change appends a `Change` to `changes`, which the app writes as the job's history and its events
in the transaction that saves the job.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
from dataclasses import dataclass, field

from pai_common.errors import FailedPrecondition
from pai_common.etags import Versioned
from pai_dlc.domain import verdict
from pai_dlc.domain.runtime import Admission, FactKind, Outcome, PreemptNotice, Runtime, WorkloadFact
from pai_dlc.domain.spec import JobSpec, Role, replicas
from pai_dlc.domain.verdict import Action, Verdict


class JobState(enum.IntEnum):
    STATE_UNSPECIFIED = 0
    CREATING = 1
    QUEUED = 2
    STARTING = 3
    RUNNING = 4
    RESTARTING = 5
    PREEMPTED = 6
    SUCCEEDED = 7
    FAILED = 8
    STOPPING = 9
    STOPPED = 10


S = JobState
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.STOPPED})
ACTIVE = frozenset({S.STARTING, S.RUNNING})  # replicas may be alive
IN_PROGRESS = frozenset(s for s in S if s not in TERMINAL and s != S.STATE_UNSPECIFIED)
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.CREATING: frozenset({S.QUEUED, S.FAILED, S.STOPPED}),
    S.QUEUED: frozenset({S.STARTING, S.FAILED, S.STOPPING, S.STOPPED}),
    S.STARTING: frozenset({S.RUNNING, S.RESTARTING, S.PREEMPTED, S.SUCCEEDED, S.FAILED, S.STOPPING}),
    S.RUNNING: frozenset({S.RESTARTING, S.PREEMPTED, S.SUCCEEDED, S.FAILED, S.STOPPING}),
    S.RESTARTING: frozenset({S.STARTING, S.FAILED, S.STOPPING, S.PREEMPTED}),
    S.PREEMPTED: frozenset({S.QUEUED, S.FAILED, S.STOPPING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
}


def can_move(src: JobState, dst: JobState) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


class ReplicaState(enum.IntEnum):
    STATE_UNSPECIFIED = 0
    PENDING = 1
    STARTING = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    STOPPED = 6


@dataclass
class ReplicaStatus:
    role: Role
    index: int
    replica: str
    rank: int
    attempt: int = 0
    state: ReplicaState = ReplicaState.PENDING
    exit_code: int | None = None
    signal: int = 0
    node: str = ""
    pid: int = 0
    engine_ref: str = ""
    message: str = ""
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None


@dataclass(frozen=True)
class Failure:
    """The replica whose failure ended the attempt (the first to fail)."""

    role: Role
    index: int
    replica: str
    rank: int
    attempt: int
    exit_code: int | None
    signal: int
    message: str
    details: str
    time: dt.datetime
    node: str = ""


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2


@dataclass(frozen=True)
class Change:
    """One entry of a job's history: a state change (or a note, when `state == previous`)."""

    previous: JobState
    state: JobState
    reason: str
    message: str
    severity: Severity
    attempt: int
    time: dt.datetime
    snapshot: Job | None = field(default=None, repr=False, compare=False)  # the job right after it
    created: bool = False  # the job's first entry
    name: str = ""  # `<job>/events/<n>`, once stored


@dataclass
class Job(Versioned):
    """The aggregate every job use case and the reconciler work on."""

    name: str
    uid: str
    spec: JobSpec
    creator: str = ""
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    state: JobState = JobState.CREATING
    reason: str = ""
    message: str = ""
    state_time: dt.datetime | None = None
    restart_count: int = 0
    preemption_count: int = 0
    replica_statuses: list[ReplicaStatus] = field(default_factory=list)
    failure: Failure | None = None
    workload: str = ""
    output_model_version: str = ""
    trial: str = ""
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    version: int = 0  # the stored row's version (0: not stored yet); the etag comes from it
    request_id: str | None = None
    runtime: Runtime = field(default_factory=Runtime)
    changes: list[Change] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def create(
        cls, name: str, uid: str, spec: JobSpec, now: dt.datetime, *, workload: str, creator: str = "",
        display_name: str = "", description: str = "", labels: dict[str, str] | None = None, trial: str = "",
    ) -> Job:  # fmt: skip
        """A new job in CREATING, its replicas PENDING."""
        job = cls(
            name, uid, spec, creator, display_name, description, dict(labels or {}), state_time=now,
            create_time=now, update_time=now, workload=workload, trial=trial,
        )  # fmt: skip
        job.reason, job.message = "CREATED", "asking the scheduler for capacity"
        job.replica_statuses = [ReplicaStatus(r.role, r.index, r.name, r.rank) for r in replicas(spec)]
        job.changes.append(
            Change(
                S.STATE_UNSPECIFIED,
                S.CREATING,
                "CREATED",
                "job created",
                Severity.INFO,
                0,
                now,
                job.copy(),
                True,
            )
        )
        return job

    @property
    def workspace(self) -> str:
        return self.name.split("/")[1]

    def copy(self) -> Job:
        """A deep copy without the pending changes (a snapshot for events)."""
        out = copy.copy(self)
        out.changes = []
        out.labels = dict(self.labels)
        out.replica_statuses = [copy.copy(st) for st in self.replica_statuses]
        out.runtime = copy.deepcopy(self.runtime)
        return out

    def transition_to(
        self, state: JobState, reason: str, message: str, now: dt.datetime, *, warning: bool = False
    ) -> None:
        """Move to `state`; an illegal move is FAILED_PRECONDITION and changes nothing."""
        previous = self.state
        if previous != state and not can_move(previous, state):
            raise FailedPrecondition(
                "ILLEGAL_STATE_TRANSITION",
                f"{self.name} is {previous.name} and cannot become {state.name}",
                job=self.name,
            )
        self.state, self.reason, self.message, self.state_time = state, reason, message, now
        if state == S.RUNNING and self.start_time is None:
            self.start_time = now
        if state in TERMINAL:
            self.end_time = now
        severity = Severity.WARNING if warning else Severity.INFO
        self.changes.append(
            Change(previous, state, reason, message, severity, self.runtime.attempt, now, self.copy())
        )

    def note(self, reason: str, message: str, now: dt.datetime) -> None:
        """A history entry without a change of state."""
        self.changes.append(
            Change(
                self.state, self.state, reason, message, Severity.INFO, self.runtime.attempt, now, self.copy()
            )
        )

    def take_changes(self) -> list[Change]:
        out, self.changes = self.changes, []
        return out

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    # ---- what the scheduler said ---------------------------------------------------------------

    def apply(self, fact: WorkloadFact, now: dt.datetime) -> None:
        """Act on one scheduler fact about this job's workload; stale or foreign ones change nothing.

        Admission moves a waiting job to STARTING; a preemption or eviction leaves a notice the
        next step acts on; the end of the workload by someone else leaves the job without capacity.
        """
        rt = self.runtime
        if self.workload != fact.workload or self.terminal:
            return
        if fact.kind in (FactKind.FINISHED, FactKind.DELETED):
            if self.state != S.STOPPING and rt.finish is None:
                how = "finished" if fact.kind == FactKind.FINISHED else "deleted"
                rt.lost_workload = f"the scheduler's workload {fact.workload} was {how} outside dlc"
            return
        if fact.version and fact.version <= rt.workload_version:
            return  # an older snapshot than one already applied
        rt.workload_version = fact.version
        if fact.kind == FactKind.ADMITTED:
            rt.admitted, rt.preempt = Admission(fact.nodes, fact.version), None
            if self.state == S.CREATING:
                self.transition_to(S.QUEUED, "WAITING_FOR_ADMISSION", "queued", now)
            if self.state == S.QUEUED:
                self.transition_to(
                    S.STARTING, "ADMITTED", f"admitted on {fact.nodes}; starting replicas", now
                )
        elif fact.kind in (FactKind.PREEMPTED, FactKind.EVICTED):
            why = fact.preemption_message or ("its node is gone" if fact.kind == FactKind.EVICTED else "")
            rt.preempt = PreemptNotice(fact.preemption_deadline or now, why or "preempted")
        elif self.state in (S.CREATING, S.QUEUED) and fact.pending_reason:
            self.message = f"waiting for admission: {fact.pending_reason}"

    def queued(self, pending_reason: str, now: dt.datetime) -> None:
        """The scheduler holds the job's workload: wait for admission."""
        why = f"waiting for admission: {pending_reason}" if pending_reason else "waiting for admission"
        self.transition_to(S.QUEUED, "WAITING_FOR_ADMISSION", why, now)
        self.runtime.queued_at = now

    # ---- how a running attempt goes ------------------------------------------------------------

    def judge(self, now: dt.datetime, quiet_seconds: float | None = None) -> Verdict:
        """The verdict on the running attempt: its replicas' exits, then its deadline, then log
        silence (`quiet_seconds`: since the last log line of any replica; None when there are no logs)."""
        v = verdict.judge(self.spec, self.runtime.exits, self.restart_count)
        if v.action == Action.RUN:
            v = verdict.past_deadline(self.spec, self.start_time, now) or v
        if v.action == Action.RUN and quiet_seconds is not None:
            v = verdict.hung(self.spec, quiet_seconds, self.restart_count) or v
        return v

    def end(
        self, state: JobState, reason: str, message: str, now: dt.datetime, finish: Outcome | None
    ) -> None:
        """Move to a final state (or STOPPING's end) with no replica left to watch; `finish` is what
        the scheduler must hear (None when its workload never existed or is not ours to finish)."""
        self.transition_to(state, reason, message, now, warning=state == S.FAILED)
        self.runtime.handles = []
        self.runtime.launching = None
        if finish is not None:
            self.runtime.finish = finish

    def restart_gang(self, v: Verdict, now: dt.datetime) -> None:
        self.restart_count += 1
        self.transition_to(S.RESTARTING, v.reason, v.message, now, warning=True)
        self.runtime.handles = []
