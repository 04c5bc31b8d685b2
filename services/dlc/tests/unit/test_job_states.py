"""The job aggregate without I/O: every state transition, the scheduler's facts, attempts and endings."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from pai_common.errors import FailedPrecondition
from pai_dlc.domain import attempts
from pai_dlc.domain.job import ACTIVE, TERMINAL, TRANSITIONS, Job, JobState, ReplicaState, can_move
from pai_dlc.domain.runtime import Admission, FactKind, Outcome, PreemptNotice, WorkloadFact
from pai_dlc.domain.spec import JobSpec, ReplicaSpec, RestartPolicy, Role
from pai_dlc.domain.verdict import Action, Verdict
from pai_runtime.types import ReplicaExit, ReplicaHandle

S = JobState
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
WORKLOAD = "workspaces/w/workloads/job-u1"
ALLOWED = {
    (S.CREATING, S.QUEUED), (S.CREATING, S.FAILED), (S.CREATING, S.STOPPED),
    (S.QUEUED, S.STARTING), (S.QUEUED, S.FAILED), (S.QUEUED, S.STOPPING), (S.QUEUED, S.STOPPED),
    (S.STARTING, S.RUNNING), (S.STARTING, S.RESTARTING), (S.STARTING, S.PREEMPTED), (S.STARTING, S.SUCCEEDED),
    (S.STARTING, S.FAILED), (S.STARTING, S.STOPPING),
    (S.RUNNING, S.RESTARTING), (S.RUNNING, S.PREEMPTED), (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED),
    (S.RUNNING, S.STOPPING),
    (S.RESTARTING, S.STARTING), (S.RESTARTING, S.FAILED), (S.RESTARTING, S.STOPPING), (S.RESTARTING, S.PREEMPTED),
    (S.PREEMPTED, S.QUEUED), (S.PREEMPTED, S.FAILED), (S.PREEMPTED, S.STOPPING), (S.PREEMPTED, S.STOPPED),
    (S.STOPPING, S.STOPPED),
}  # fmt: skip


def spec(workers: int = 2, **kw: object) -> JobSpec:
    rs = ReplicaSpec(
        role=Role.WORKER, count=workers, command=("python", "t.py"), restart_policy=RestartPolicy.ON_FAILURE
    )
    return JobSpec(replica_specs=(rs,), **kw)  # type: ignore[arg-type]


def job(state: JobState = S.CREATING, **kw: object) -> Job:
    j = Job.create("workspaces/w/jobs/j", "u1", spec(**kw), T0, workload=WORKLOAD, creator="users/a")
    j.state = state
    j.take_changes()
    return j


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def handle(replica: str, attempt: int = 0) -> ReplicaHandle:
    return ReplicaHandle(
        replica, 0, attempt, 100, 100, f"/r/{replica}.log", f"/r/{replica}.exit", "", "n1", "pid 100"
    )


def test_the_transition_table_is_exactly_the_documented_one() -> None:
    table = {(src, dst) for src, dsts in TRANSITIONS.items() for dst in dsts}
    assert table == ALLOWED
    for t in TERMINAL:
        assert not TRANSITIONS.get(t)


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(list(S)[1:], list(S)[1:])))
def test_every_transition_is_taken_or_refused_by_the_table(src: JobState, dst: JobState) -> None:
    j = job(src)
    if src == dst or (src, dst) in ALLOWED:
        j.transition_to(dst, "WHY", "because", at(1))
        assert (j.state, j.reason, j.message, j.state_time) == (dst, "WHY", "because", at(1))
        [change] = j.take_changes()
        assert (change.previous, change.state) == (src, dst) and change.snapshot is not None
        assert change.snapshot.state == dst
    else:
        with pytest.raises(FailedPrecondition) as caught:
            j.transition_to(dst, "WHY", "because", at(1))
        assert caught.value.reason == "ILLEGAL_STATE_TRANSITION"
        assert (j.state, j.changes) == (src, [])
    assert can_move(src, dst) == ((src, dst) in ALLOWED)


def test_a_new_job_is_creating_with_pending_replicas_and_a_first_entry() -> None:
    j = Job.create("workspaces/w/jobs/j", "u1", spec(workers=2), T0, workload=WORKLOAD, labels={"a": "b"})
    assert (j.state, j.reason, j.workload, j.labels) == (S.CREATING, "CREATED", WORKLOAD, {"a": "b"})
    assert [(s.replica, s.rank, s.state) for s in j.replica_statuses] == [
        ("worker-0", 0, ReplicaState.PENDING), ("worker-1", 1, ReplicaState.PENDING)
    ]  # fmt: skip
    [first] = j.take_changes()
    assert first.created and (first.previous, first.state, first.message) == (
        S.STATE_UNSPECIFIED,
        S.CREATING,
        "job created",
    )
    assert j.etag == 'W/"0"' and j.runtime.attempt == -1


def test_start_time_is_the_first_run_and_end_time_the_end() -> None:
    j = job(S.STARTING)
    j.transition_to(S.RUNNING, "RUNNING", "", at(1))
    j.transition_to(S.RESTARTING, "R", "", at(2))
    j.transition_to(S.STARTING, "R", "", at(3))
    j.transition_to(S.RUNNING, "RUNNING", "", at(4))
    assert j.start_time == at(1) and j.end_time is None
    j.transition_to(S.SUCCEEDED, "SUCCEEDED", "", at(5))
    assert j.end_time == at(5) and j.terminal


def fact(kind: FactKind, version: int = 1, **kw: object) -> WorkloadFact:
    return WorkloadFact(kind, WORKLOAD, version, **kw)  # type: ignore[arg-type]


def test_admission_moves_a_waiting_job_to_starting_once() -> None:
    j = job(S.CREATING)
    j.apply(fact(FactKind.ADMITTED, 3, nodes="n1, n2"), at(1))
    assert j.state == S.STARTING and j.message == "admitted on n1, n2; starting replicas"
    assert [(c.previous, c.state) for c in j.take_changes()] == [
        (S.CREATING, S.QUEUED),
        (S.QUEUED, S.STARTING),
    ]
    assert j.runtime.admitted == Admission("n1, n2", 3) and j.runtime.workload_version == 3
    j.apply(fact(FactKind.ADMITTED, 2), at(2))  # an older snapshot: ignored
    j.apply(fact(FactKind.PENDING, 3, pending_reason="later"), at(2))  # not newer: ignored
    assert j.runtime.workload_version == 3 and j.changes == []


def test_facts_about_another_workload_or_a_finished_job_change_nothing() -> None:
    j = job(S.QUEUED)
    j.apply(WorkloadFact(FactKind.ADMITTED, "workspaces/w/workloads/other", 1), at(1))
    assert j.state == S.QUEUED
    done = job(S.SUCCEEDED)
    done.apply(fact(FactKind.PREEMPTED), at(1))
    assert done.runtime.preempt is None


def test_preemption_and_eviction_leave_a_notice() -> None:
    j = job(S.RUNNING)
    j.apply(
        fact(FactKind.PREEMPTED, 1, preemption_deadline=at(30), preemption_message="spot reclaimed"), at(1)
    )
    assert j.runtime.preempt == PreemptNotice(at(30), "spot reclaimed") and j.state == S.RUNNING
    evicted = job(S.RUNNING)
    evicted.apply(fact(FactKind.EVICTED, 1), at(2))
    assert evicted.runtime.preempt == PreemptNotice(at(2), "its node is gone")
    plain = job(S.RUNNING)
    plain.apply(fact(FactKind.PREEMPTED, 1), at(2))
    assert plain.runtime.preempt == PreemptNotice(at(2), "preempted")


def test_a_pending_reason_is_shown_while_waiting() -> None:
    j = job(S.QUEUED)
    j.apply(fact(FactKind.PENDING, 1, pending_reason="quota max reached for cpu"), at(1))
    assert j.message == "waiting for admission: quota max reached for cpu" and j.changes == []
    running = job(S.RUNNING)
    running.apply(fact(FactKind.PENDING, 1, pending_reason="x"), at(1))
    assert running.message == "asking the scheduler for capacity"  # unchanged once admitted


@pytest.mark.parametrize("kind", [FactKind.FINISHED, FactKind.DELETED])
def test_a_workload_ended_outside_dlc_loses_the_job(kind: FactKind) -> None:
    j = job(S.RUNNING)
    j.apply(fact(kind, 0), at(1))
    assert j.runtime.lost_workload == f"the scheduler's workload {WORKLOAD} was {kind.value} outside dlc"
    attempts.lose_workload(j, at(2))
    assert (j.state, j.reason, j.runtime.finish) == (S.FAILED, "WORKLOAD_LOST", None)
    stopping = job(S.STOPPING)
    stopping.apply(fact(kind, 0), at(1))
    owing = job(S.RUNNING)
    owing.runtime.finish = Outcome.FAILED
    owing.apply(fact(kind, 0), at(1))
    assert stopping.runtime.lost_workload == owing.runtime.lost_workload == ""


def test_an_attempt_is_marked_before_it_starts_and_recorded_once_it_runs() -> None:
    j = job(S.STARTING)
    assert attempts.next_attempt(j) == 0
    attempts.begin(j, 0)
    assert (j.runtime.attempt, j.runtime.launching) == (0, 0)
    assert attempts.next_attempt(j) == 0  # dlc stopped mid-launch: the same attempt again
    attempts.launched(j, 0, [handle("worker-0"), handle("worker-1")], at(1), 123)
    assert (j.state, j.message, j.runtime.launching, j.runtime.launched_ns) == (
        S.RUNNING, "2 replicas running (attempt 0)", None, 123
    )  # fmt: skip
    assert j.runtime.logs == {0: {"worker-0": "/r/worker-0.log", "worker-1": "/r/worker-1.log"}}
    assert all(s.state == ReplicaState.RUNNING and s.pid == 100 for s in j.replica_statuses)
    assert attempts.next_attempt(j) == 1


def test_exits_are_recorded_on_the_replicas_and_the_first_failure_is_blamed() -> None:
    j = job(S.RUNNING)
    attempts.launched(j, 0, [handle("worker-0"), handle("worker-1")], at(1), 1)
    assert attempts.ended(j, [ReplicaExit("worker-1", 1, message="exit code 1", details="Traceback")], at(2))
    assert not attempts.ended(j, [ReplicaExit("worker-1", 1, message="exit code 1")], at(3))  # seen already
    w1 = j.replica_statuses[1]
    assert (w1.state, w1.exit_code, w1.end_time) == (ReplicaState.FAILED, 1, at(2))
    attempts.blame(j, j.runtime.exits["worker-1"], at(3))
    assert j.failure is not None and (j.failure.replica, j.failure.rank, j.failure.exit_code) == (
        "worker-1",
        1,
        1,
    )


def test_endings_leave_nothing_to_watch_and_say_what_the_scheduler_must_hear() -> None:
    j = job(S.RUNNING)
    j.runtime.handles = [handle("worker-0")]
    j.end(S.SUCCEEDED, "SUCCEEDED", "done", at(1), Outcome.SUCCEEDED)
    assert (j.runtime.handles, j.runtime.finish) == ([], Outcome.SUCCEEDED)
    r = job(S.RUNNING, max_restarts=2)
    r.restart_gang(Verdict(Action.RESTART, "REPLICA_FAILED", "w-0 failed"), at(1))
    assert (r.state, r.restart_count, r.changes[-1].severity.name) == (S.RESTARTING, 1, "WARNING")
    s = job(S.STOPPING)
    attempts.stopped(s, at(1))
    assert (s.state, s.runtime.finish) == (S.STOPPED, Outcome.CANCELLED)


def test_a_preempted_gang_gets_what_is_left_of_its_notice_and_waits_again() -> None:
    j = job(S.RUNNING)
    j.runtime.preempt = PreemptNotice(at(5), "spot reclaimed")
    assert attempts.preemption_grace(j, at(1), kill_grace=10) == 4
    assert attempts.preemption_grace(j, at(4.9), kill_grace=10) == 1  # at least a second
    assert attempts.preemption_grace(j, at(-60), kill_grace=10) == 10  # at most the kill grace
    attempts.preempted(j, at(2))
    assert (j.state, j.preemption_count, j.runtime.preempt) == (S.PREEMPTED, 1, None)
    assert "resumes from its newest checkpoint" in j.message
    j.queued("no node fits", at(3))
    assert (j.state, j.message, j.runtime.queued_at) == (
        S.QUEUED,
        "waiting for admission: no node fits",
        at(3),
    )


def test_active_states_are_the_ones_with_replicas() -> None:
    assert {S.STARTING, S.RUNNING} == ACTIVE
