"""Exit verdicts, restart rules and timers without I/O."""

from __future__ import annotations

import datetime as dt

import pytest

from pai_dlc.domain.job import Job
from pai_dlc.domain.spec import JobSpec, Kind, ReplicaSpec, RestartPolicy, Role
from pai_dlc.domain.verdict import Action, hung, judge, past_deadline, pending_too_long, retryable
from pai_runtime.types import ReplicaExit

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def pytorch(workers: int = 2, policy: RestartPolicy = RestartPolicy.ON_FAILURE, **kw: object) -> JobSpec:
    rs = ReplicaSpec(role=Role.WORKER, count=workers, command=("x",), restart_policy=policy)
    return JobSpec(kind=Kind.PYTORCH, replica_specs=(rs,), **kw)  # type: ignore[arg-type]


def ok(name: str) -> ReplicaExit:
    return ReplicaExit(name, 0)


def test_pytorch_succeeds_when_every_replica_did() -> None:
    s = pytorch(2)
    assert judge(s, {"worker-0": ok("worker-0")}, 0).action == Action.RUN
    assert judge(s, {"worker-0": ok("worker-0"), "worker-1": ok("worker-1")}, 0).action == Action.SUCCEED


@pytest.mark.parametrize(
    ("kind", "roles", "decides"),
    [
        (Kind.TENSORFLOW, (Role.CHIEF, Role.WORKER), "chief-0"),
        (Kind.TENSORFLOW, (Role.WORKER, Role.PS), "worker-0"),
        (Kind.MPI, (Role.LAUNCHER, Role.WORKER), "launcher-0"),
        (Kind.XGBOOST, (Role.MASTER, Role.WORKER), "master-0"),
    ],
)
def test_coordinated_kinds_succeed_with_their_coordinator(
    kind: Kind, roles: tuple[Role, ...], decides: str
) -> None:
    s = JobSpec(kind=kind, replica_specs=tuple(ReplicaSpec(role=r, count=1, command=("x",)) for r in roles))
    assert judge(s, {decides: ok(decides)}, 0).action == Action.SUCCEED
    others = [f"{r.label}-0" for r in roles if f"{r.label}-0" != decides]
    assert judge(s, {o: ok(o) for o in others}, 0).action == Action.RUN


def test_failures_restart_until_max_restarts_and_the_first_to_fail_is_the_culprit() -> None:
    s = pytorch(3, max_restarts=2)
    exits = {
        "worker-2": ReplicaExit(
            "worker-2", None, signal=9, message="killed by signal SIGKILL (9)", time_ns=2
        ),
        "worker-1": ReplicaExit("worker-1", 1, message="exit code 1", time_ns=1),
    }
    v = judge(s, exits, 0)
    assert v.action == Action.RESTART and v.culprit is not None and v.culprit.replica == "worker-1"
    assert "worker-1 (rank 1) exit code 1; restarting the gang" in v.message
    assert (judge(s, exits, 2).action, judge(s, exits, 2).reason) == (Action.FAIL, "MAX_RESTARTS_EXCEEDED")
    no_restarts = judge(pytorch(1), {"worker-0": ReplicaExit("worker-0", 1, message="exit code 1")}, 0)
    assert (no_restarts.action, no_restarts.reason) == (Action.FAIL, "REPLICA_FAILED")
    unknown_times = {
        "worker-0": ReplicaExit("worker-0", 1, time_ns=5),
        "worker-1": ReplicaExit("worker-1", 1),
    }
    assert judge(pytorch(2, max_restarts=1), unknown_times, 0).culprit == unknown_times["worker-0"]


@pytest.mark.parametrize(
    ("policy", "exit_code", "signal", "lost", "retried"),
    [
        (RestartPolicy.NEVER, 1, 0, False, False), (RestartPolicy.NEVER, None, 9, False, False),
        (RestartPolicy.NEVER, None, 0, True, False),
        (RestartPolicy.ON_FAILURE, 1, 0, False, True), (RestartPolicy.ON_FAILURE, None, 9, False, True),
        (RestartPolicy.ON_FAILURE, None, 0, True, True),
        (RestartPolicy.ALWAYS, 1, 0, False, True), (RestartPolicy.ALWAYS, 137, 0, False, True),
        (RestartPolicy.EXIT_CODE, 1, 0, False, False), (RestartPolicy.EXIT_CODE, 127, 0, False, False),
        (RestartPolicy.EXIT_CODE, 128, 0, False, True), (RestartPolicy.EXIT_CODE, 255, 0, False, True),
        (RestartPolicy.EXIT_CODE, None, 9, False, True), (RestartPolicy.EXIT_CODE, None, 0, True, True),
    ],
)  # fmt: skip
def test_restart_policies(
    policy: RestartPolicy, exit_code: int | None, signal: int, lost: bool, retried: bool
) -> None:
    ex = ReplicaExit("worker-0", exit_code, signal=signal, lost=lost)
    assert retryable(policy, ex) == retried
    v = judge(pytorch(1, policy, max_restarts=3), {"worker-0": ex}, 0)
    assert v.action == (Action.RESTART if retried else Action.FAIL)
    if not retried:
        assert f"restart policy {policy.name} does not retry it" in v.message


def test_the_active_deadline_fails_a_running_job() -> None:
    s = pytorch(1, active_deadline=dt.timedelta(minutes=5))
    assert past_deadline(s, T0, T0 + dt.timedelta(minutes=5)) is None
    v = past_deadline(s, T0, T0 + dt.timedelta(minutes=6))
    assert v is not None and (v.action, v.reason) == (Action.FAIL, "DEADLINE_EXCEEDED")
    assert past_deadline(s, None, T0 + dt.timedelta(hours=1)) is None  # never started
    assert past_deadline(pytorch(1), T0, T0 + dt.timedelta(days=9)) is None  # no deadline


def test_log_silence_restarts_a_hung_gang_then_fails_it() -> None:
    s = pytorch(1, log_silence_timeout=dt.timedelta(seconds=60), max_restarts=1)
    assert hung(s, 59.0, 0) is None
    v = hung(s, 61.0, 0)
    assert v is not None and (v.action, v.reason) == (Action.RESTART, "HANG_DETECTED")
    last = hung(s, 61.0, 1)
    assert last is not None and last.action == Action.FAIL and "no restart left" in last.message
    assert hung(pytorch(1), 1e9, 0) is None


def test_the_pending_timeout_fails_a_job_never_admitted() -> None:
    s = pytorch(1, pending_timeout=dt.timedelta(seconds=30))
    assert pending_too_long(s, T0, T0 + dt.timedelta(seconds=30)) is None
    assert "pending timeout (0:00:30)" in (pending_too_long(s, T0, T0 + dt.timedelta(seconds=31)) or "")
    assert pending_too_long(pytorch(1), T0, T0 + dt.timedelta(days=1)) is None


def test_a_jobs_verdict_weighs_exits_then_the_deadline_then_silence() -> None:
    s = pytorch(1, active_deadline=dt.timedelta(seconds=10), log_silence_timeout=dt.timedelta(seconds=5))
    job = Job("workspaces/w/jobs/j", "u", s, start_time=T0)
    assert job.judge(T0 + dt.timedelta(seconds=1), quiet_seconds=1).action == Action.RUN
    assert job.judge(T0 + dt.timedelta(seconds=1), quiet_seconds=6).reason == "HANG_DETECTED"
    assert job.judge(T0 + dt.timedelta(seconds=11), quiet_seconds=6).reason == "DEADLINE_EXCEEDED"
    assert job.judge(T0 + dt.timedelta(seconds=1), quiet_seconds=None).action == Action.RUN  # no logs here
    job.runtime.exits["worker-0"] = ok("worker-0")
    assert job.judge(T0 + dt.timedelta(seconds=11), quiet_seconds=60).action == Action.SUCCEED
