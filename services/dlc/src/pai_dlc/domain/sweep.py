"""A sweep and its trials: how a trial follows its job, which trial is best, when the sweep ends.

Each trial is an ordinary job; the sweep's step (app/sweeps.py) reads the trials' jobs and reported
metrics and asks the rules here what follows: the trials' new states, early stops, how many new
trials to start, and whether (and how) the sweep ends.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from pai_common.etags import Versioned
from pai_dlc.domain import search
from pai_dlc.domain.job import Job, JobState
from pai_dlc.domain.search import Points, SweepSpec


class SweepState(enum.IntEnum):
    STATE_UNSPECIFIED = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    STOPPING = 4
    STOPPED = 5


class TrialState(enum.IntEnum):
    STATE_UNSPECIFIED = 0
    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    EARLY_STOPPED = 5
    STOPPED = 6


T = TrialState
DONE = frozenset({T.SUCCEEDED, T.FAILED, T.EARLY_STOPPED, T.STOPPED})
LIVE = frozenset({T.PENDING, T.RUNNING})
ACTIVE_SWEEP = frozenset({SweepState.RUNNING, SweepState.STOPPING})
FINAL_SWEEP = frozenset({SweepState.SUCCEEDED, SweepState.FAILED, SweepState.STOPPED})
TRIAL_OF_JOB = {JobState.SUCCEEDED: T.SUCCEEDED, JobState.FAILED: T.FAILED, JobState.STOPPED: T.STOPPED}
RUNNING_JOB = frozenset({JobState.RUNNING, JobState.STARTING, JobState.RESTARTING})


@dataclass
class Trial:
    name: str
    parameter_assignments: dict[str, str]
    job: str = ""
    state: TrialState = T.PENDING
    reason: str = ""
    message: str = ""
    objective_value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None

    def observe(self, job: Job | None, points: Points, extras: dict[str, float], spec: SweepSpec) -> None:
        """Follow the trial's job (None: deleted) and its reported metrics, until the trial is done."""
        if self.state in DONE:
            return
        value = search.objective_value(points, spec.objective)
        if value is not None:
            self.objective_value = value
        self.metrics.update(extras)
        if job is None:
            self.state, self.reason, self.message = T.FAILED, "JOB_DELETED", f"{self.job} was deleted"
        elif job.state in TRIAL_OF_JOB:
            self.state, self.reason, self.message = TRIAL_OF_JOB[job.state], job.reason, job.message
            self.end_time = job.end_time
        elif job.state in RUNNING_JOB:
            self.state = T.RUNNING
            self.start_time = job.start_time or self.start_time

    def stop_early(self) -> None:
        self.state, self.reason = T.EARLY_STOPPED, "EARLY_STOPPED"
        self.message = "worse than the median of the completed trials (median stopping rule)"


@dataclass
class TrialCounts:
    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    early_stopped: int = 0
    stopped: int = 0

    @classmethod
    def of(cls, trials: Sequence[Trial], planned: int) -> TrialCounts:
        counts = cls(total=planned)
        for t in trials:
            name = t.state.name.lower()
            setattr(counts, name, getattr(counts, name) + 1)
        counts.pending += planned - len(trials)
        return counts


@dataclass(frozen=True)
class End:
    """How a sweep ends: its final state, the reason and the sentence."""

    state: SweepState
    reason: str
    message: str


# what a STOPPING sweep becomes once its trials have ended, by the reason it is stopping
_FINAL_BY_REASON = {
    "STOP_REQUESTED": End(SweepState.STOPPED, "STOPPED", "stopped by a user"),
    "MAX_FAILED_TRIALS_REACHED": End(SweepState.FAILED, "MAX_FAILED_TRIALS_REACHED", ""),
    "GOAL_REACHED": End(SweepState.SUCCEEDED, "GOAL_REACHED", ""),
}


@dataclass(frozen=True)
class SweepChange:
    previous: SweepState
    snapshot: Sweep = field(repr=False)


@dataclass
class Sweep(Versioned):
    name: str
    uid: str
    spec: SweepSpec
    creator: str = ""
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    state: SweepState = SweepState.RUNNING
    reason: str = ""
    message: str = ""
    state_time: dt.datetime | None = None
    trial_counts: TrialCounts = field(default_factory=TrialCounts)
    best_trial: Trial | None = None
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    version: int = 0
    request_id: str | None = None
    changes: list[SweepChange] = field(default_factory=list, repr=False, compare=False)

    def transition_to(self, state: SweepState, reason: str, message: str, now: dt.datetime) -> None:
        previous = self.state
        self.state, self.reason, self.message, self.state_time = state, reason, message, now
        if state in FINAL_SWEEP:
            self.end_time = now
        snapshot = copy.deepcopy(_without_changes(self))
        self.changes.append(SweepChange(previous, snapshot))

    def take_changes(self) -> list[SweepChange]:
        out, self.changes = self.changes, []
        return out

    def ending(self, trials: Sequence[Trial], best: Trial | None) -> End | None:
        """Why the sweep ends now, if it does: a user's stop, too many failures, the target reached."""
        spec = self.spec
        if self.state == SweepState.STOPPING:
            end = _FINAL_BY_REASON.get(self.reason, End(SweepState.STOPPED, "STOPPED", "stopped by a user"))
            return end if end.reason == "STOPPED" else End(end.state, end.reason, self.message)
        failed = sum(1 for t in trials if t.state == T.FAILED)
        if spec.max_failed_trials is not None and failed > spec.max_failed_trials:
            return End(SweepState.FAILED, "MAX_FAILED_TRIALS_REACHED", f"{failed} trials failed")
        if (
            best is not None
            and best.objective_value is not None
            and search.reached(best.objective_value, spec.objective)
        ):
            return End(SweepState.SUCCEEDED, "GOAL_REACHED", f"{best.name} reached the target")
        return None

    def move(self, end: End | None, live: int) -> End | None:
        """The state change the step makes: STOPPING while trials still run, the end once none does."""
        if end is None:
            return None
        if live and self.state == SweepState.RUNNING:
            return End(SweepState.STOPPING, end.reason, end.message)
        return None if live else end


def _without_changes(s: Sweep) -> Sweep:
    """A copy of `s` without its pending changes (a snapshot for events)."""
    out = copy.copy(s)
    out.changes = []
    return out


def best_of(trials: Sequence[Trial], spec: SweepSpec) -> Trial | None:
    """The succeeded trial with the best objective value (the first of equals)."""
    best: Trial | None = None
    for t in trials:
        if t.state != T.SUCCEEDED or t.objective_value is None:
            continue
        if best is None or search.better(t.objective_value, best.objective_value, spec.objective.goal):  # type: ignore[arg-type]
            best = t
    return best


def all_ended(trials: Sequence[Trial], planned: int, best: Trial | None) -> End | None:
    """Every planned trial has started and ended: the sweep ends with its best, or without one."""
    if len(trials) < planned or any(t.state in LIVE for t in trials):
        return None
    if best is not None:
        return End(SweepState.SUCCEEDED, "SUCCEEDED", f"every trial ended; the best is {best.name}")
    return End(SweepState.FAILED, "NO_SUCCESSFUL_TRIAL", "every trial ended and none succeeded")
