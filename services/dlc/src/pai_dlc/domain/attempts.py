"""A job's attempts: marking one before its processes start, recording where its replicas run and how
they ended, and the notice-driven stops (preemption, a lost workload).

An attempt is marked (`begin`) and stored before anything starts, so that a dlc that stops between
starting processes and storing their handles sees, on its next step, that processes of that attempt
may run unwatched (`runtime.launching`), and stops them before starting it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pai_dlc.domain.job import Failure, Job, JobState, ReplicaState
from pai_dlc.domain.runtime import Outcome
from pai_dlc.domain.spec import replicas
from pai_runtime.types import ReplicaExit, ReplicaHandle

S = JobState
ENDED = (ReplicaState.SUCCEEDED, ReplicaState.FAILED)


def next_attempt(job: Job) -> int:
    """The attempt to start: the one that was being started when dlc stopped, else a new one."""
    rt = job.runtime
    return rt.launching if rt.launching is not None else rt.attempt + 1


def begin(job: Job, attempt: int) -> None:
    """Mark `attempt` as being started (store the job before starting anything)."""
    rt = job.runtime
    rt.attempt = rt.launching = attempt
    rt.logs[attempt] = {}


def launched(job: Job, attempt: int, handles: list[ReplicaHandle], now: dt.datetime, now_ns: int) -> None:
    """Every replica of `attempt` runs: keep the handles and log paths, and move to RUNNING."""
    rt = job.runtime
    rt.handles = list(handles)
    rt.logs[attempt] = {h.replica: h.log_path for h in handles}
    rt.launched_ns, rt.exits, rt.launching = now_ns, {}, None
    by_name = {h.replica: h for h in handles}
    for st in job.replica_statuses:
        h = by_name.get(st.replica)
        if h is None:
            continue
        st.state, st.attempt, st.pid, st.node, st.engine_ref = (
            ReplicaState.RUNNING,
            attempt,
            h.pid,
            h.node,
            h.engine_ref,
        )
        st.exit_code, st.signal, st.message = None, 0, ""
        st.start_time, st.end_time = now, None
    n = len(handles)
    job.transition_to(
        S.RUNNING, "RUNNING", f"{n} replica{'s' if n != 1 else ''} running (attempt {attempt})", now
    )


def ended(job: Job, exits: Iterable[ReplicaExit], now: dt.datetime) -> bool:
    """Record replica exits on the job; True when a replica's exit is new."""
    rt = job.runtime
    new = False
    for ex in exits:
        new = new or ex.replica not in rt.exits
        rt.exits[ex.replica] = ex
    for st in job.replica_statuses:
        end = rt.exits.get(st.replica)
        if end is None or st.state in ENDED:
            continue
        st.state = ReplicaState.SUCCEEDED if end.succeeded else ReplicaState.FAILED
        if end.exit_code is not None:
            st.exit_code = end.exit_code
        st.signal, st.message, st.end_time = end.signal, end.message, now
    return new


def blame(job: Job, culprit: ReplicaExit, now: dt.datetime) -> None:
    """Say on the job which replica's failure ended the attempt, and how."""
    r = next(r for r in replicas(job.spec) if r.name == culprit.replica)
    job.failure = Failure(
        role=r.role, index=r.index, replica=r.name, rank=r.rank, attempt=job.runtime.attempt,
        exit_code=culprit.exit_code, signal=culprit.signal, message=culprit.message,
        details=culprit.details[-8000:], time=now,
    )  # fmt: skip


def preempted(job: Job, now: dt.datetime) -> None:
    """The gang is gone after a preemption notice: wait to be admitted again."""
    rt = job.runtime
    notice = rt.preempt
    message = notice.message if notice is not None else "preempted"
    job.preemption_count += 1
    msg = f"{message}; the job resumes from its newest checkpoint when admitted again"
    job.transition_to(S.PREEMPTED, "PREEMPTED", msg, now, warning=True)
    rt.handles, rt.preempt, rt.admitted = [], None, None


def preemption_grace(job: Job, now: dt.datetime, kill_grace: float) -> float:
    """SIGTERM → SIGKILL for a preempted gang: what is left of the notice, within [1 s, kill grace]."""
    notice = job.runtime.preempt
    left = (notice.deadline - now).total_seconds() if notice is not None else 0.0
    return max(1.0, min(kill_grace, left))


def lose_workload(job: Job, now: dt.datetime) -> None:
    """The job's capacity is gone for good (its workload ended outside dlc): fail it, saying so."""
    msg = f"{job.runtime.lost_workload}; the job can no longer run"
    job.end(S.FAILED, "WORKLOAD_LOST", msg, now, finish=None)


def stopped(job: Job, now: dt.datetime) -> None:
    """Every replica is gone after a stop."""
    job.end(S.STOPPED, "STOP_REQUESTED", "stopped by a user; every replica is gone", now, Outcome.CANCELLED)
