"""What replica exits and timers mean for a running attempt: keep running, succeed, restart, or fail.

- An exit is retried by its replica group's restart policy: NEVER never, EXIT_CODE only signals, lost
  supervisors and codes 128–255, ON_FAILURE and ALWAYS always; and only while restarts are left.
- The first replica to fail is the culprit shown (its peers often fail because it did); unknown times
  and ties go to the lowest rank.
- A job succeeds when every replica that decides the outcome succeeded: every replica for PyTorch and
  Custom, the chief (else the first worker) for TensorFlow, the launcher for MPI, the master for XGBoost.
- Past its active deadline a job fails; with no log line for its log silence timeout it restarts (or
  fails when no restart is left) as HANG_DETECTED.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pai_dlc.domain.spec import JobSpec, Kind, Replica, RestartPolicy, Role, replicas
from pai_runtime.types import ReplicaExit


class Action(enum.Enum):
    RUN = "run"
    SUCCEED = "succeed"
    RESTART = "restart"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str = ""
    message: str = ""
    culprit: ReplicaExit | None = None


KEEP_RUNNING = Verdict(Action.RUN)

# whose success is the job's success, by kind: the first role present (every replica when absent)
_DECIDING: dict[Kind, tuple[Role, ...]] = {
    Kind.TENSORFLOW: (Role.CHIEF, Role.WORKER),
    Kind.MPI: (Role.LAUNCHER,),
    Kind.XGBOOST: (Role.MASTER, Role.WORKER),
}


def retryable(policy: RestartPolicy, ex: ReplicaExit) -> bool:
    if policy == RestartPolicy.NEVER:
        return False
    if policy == RestartPolicy.EXIT_CODE:
        if ex.lost or ex.signal:
            return True
        return ex.exit_code is not None and 128 <= ex.exit_code <= 255
    return True  # ON_FAILURE and ALWAYS


def deciding(spec: JobSpec, everyone: Sequence[Replica]) -> list[str]:
    """The replicas whose success is the job's success."""
    for role in _DECIDING.get(spec.kind, ()):
        for r in everyone:
            if r.role == role:
                return [r.name]
    return [r.name for r in everyone]


def judge(spec: JobSpec, exits: Mapping[str, ReplicaExit], restart_count: int) -> Verdict:
    """The verdict on a running attempt given every replica that has ended so far (by name)."""
    everyone = replicas(spec)
    by_name = {r.name: r for r in everyone}
    failed = [ex for name, ex in exits.items() if not ex.succeeded and name in by_name]
    if failed:
        ex = min(failed, key=lambda e: (e.time_ns or 1 << 62, by_name[e.replica].rank))
        return _failure(spec, by_name[ex.replica], ex, restart_count)
    if all(name in exits for name in deciding(spec, everyone)):
        return Verdict(Action.SUCCEED, "SUCCEEDED", "every replica that decides the outcome succeeded")
    return KEEP_RUNNING


def _failure(spec: JobSpec, r: Replica, ex: ReplicaExit, restart_count: int) -> Verdict:
    what = f"{r.name} (rank {r.rank}) {ex.message or 'failed'}"
    if not retryable(r.spec.restart_policy, ex):
        policy = r.spec.restart_policy.name
        return Verdict(
            Action.FAIL, "REPLICA_FAILED", f"{what}; restart policy {policy} does not retry it", ex
        )
    if restart_count >= spec.max_restarts:
        reason = "MAX_RESTARTS_EXCEEDED" if spec.max_restarts else "REPLICA_FAILED"
        return Verdict(
            Action.FAIL, reason, f"{what}; {restart_count} of {spec.max_restarts} restarts used", ex
        )
    return Verdict(
        Action.RESTART, "REPLICA_FAILED", f"{what}; restarting the gang from the newest checkpoint", ex
    )


def past_deadline(spec: JobSpec, started: dt.datetime | None, now: dt.datetime) -> Verdict | None:
    """FAIL when the job has run longer than its active deadline."""
    if spec.active_deadline is None or started is None or now - started <= spec.active_deadline:
        return None
    return Verdict(
        Action.FAIL,
        "DEADLINE_EXCEEDED",
        f"the job ran longer than its active deadline ({spec.active_deadline})",
    )


def hung(spec: JobSpec, quiet_seconds: float, restart_count: int) -> Verdict | None:
    """RESTART (or FAIL without restarts left) when no replica wrote a log line for too long."""
    if spec.log_silence_timeout is None:
        return None
    silence = spec.log_silence_timeout.total_seconds()
    if quiet_seconds <= silence:
        return None
    msg = f"no replica wrote a log line for {quiet_seconds:.0f} s (log silence timeout {silence:g} s)"
    if restart_count >= spec.max_restarts:
        return Verdict(Action.FAIL, "HANG_DETECTED", f"{msg}; no restart left")
    return Verdict(Action.RESTART, "HANG_DETECTED", f"{msg}; restarting the gang")


def pending_too_long(spec: JobSpec, queued_at: dt.datetime | None, now: dt.datetime) -> str | None:
    """Why a queued job fails now (its pending timeout passed), or None."""
    if spec.pending_timeout is None:
        return None
    since = queued_at or now
    if (now - since).total_seconds() <= spec.pending_timeout.total_seconds():
        return None
    return f"not admitted within the pending timeout ({spec.pending_timeout})"
