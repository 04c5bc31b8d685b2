"""A job's state machine and what replica exits mean for it.

CREATING → QUEUED → STARTING → RUNNING → SUCCEEDED | FAILED | STOPPED, with RESTARTING (the gang is
being restarted after a failure or a hang) and PREEMPTED (the scheduler took the capacity back; the
job is re-queued). Every state carries a reason code and a message a person can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pai.dlc.v1 import job_pb2
from pai_dlc.model.spec import JobSpec, Replica, ReplicaSpec, Role
from pai_runtime.types import ReplicaExit

State = job_pb2.Job.State

TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.STOPPED})
ACTIVE = frozenset({State.STARTING, State.RUNNING})  # replicas may be alive

TRANSITIONS: dict[int, frozenset[int]] = {
    State.CREATING: frozenset({State.QUEUED, State.FAILED, State.STOPPED}),
    State.QUEUED: frozenset({State.STARTING, State.FAILED, State.STOPPING, State.STOPPED}),
    State.STARTING: frozenset(
        {State.RUNNING, State.RESTARTING, State.PREEMPTED, State.SUCCEEDED, State.FAILED, State.STOPPING}
    ),
    State.RUNNING: frozenset(
        {State.RESTARTING, State.PREEMPTED, State.SUCCEEDED, State.FAILED, State.STOPPING}
    ),
    State.RESTARTING: frozenset({State.STARTING, State.FAILED, State.STOPPING, State.PREEMPTED}),
    State.PREEMPTED: frozenset({State.QUEUED, State.FAILED, State.STOPPING, State.STOPPED}),
    State.STOPPING: frozenset({State.STOPPED}),
}


def can_move(src: int, dst: int) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the exits seen so far mean: keep running, succeed, restart the gang, or fail."""

    action: str  # "run" | "succeed" | "restart" | "fail"
    reason: str = ""
    message: str = ""
    culprit: ReplicaExit | None = None


def _retryable(policy: int, ex: ReplicaExit) -> bool:
    if policy == ReplicaSpec.NEVER:
        return False
    if policy == ReplicaSpec.EXIT_CODE:
        if ex.lost or ex.signal:
            return True
        return ex.exit_code is not None and 128 <= ex.exit_code <= 255
    return True  # ON_FAILURE and ALWAYS


def _decisive(spec: JobSpec, replicas: Sequence[Replica]) -> list[str]:
    """The replicas whose success is the job's success."""
    coordinator = {
        JobSpec.TENSORFLOW: (Role.CHIEF, Role.WORKER),
        JobSpec.MPI: (Role.LAUNCHER,),
        JobSpec.XGBOOST: (Role.MASTER, Role.WORKER),
    }.get(spec.kind)
    if coordinator is None:  # PyTorch and Custom: every replica
        return [r.name for r in replicas]
    for role in coordinator:
        for r in replicas:
            if r.role == role:
                return [r.name]
    return [r.name for r in replicas]


def judge(
    spec: JobSpec, replicas: Sequence[Replica], exits: dict[str, ReplicaExit], restart_count: int
) -> Verdict:
    """The verdict on a running attempt given every replica that has ended so far (by name)."""
    by_name = {r.name: r for r in replicas}
    failed = [ex for name, ex in exits.items() if not ex.succeeded and name in by_name]
    if failed:
        # the first replica to fail is the one to show (its peers often fail because it did);
        # unknown times and ties go to the lowest rank
        ex = min(failed, key=lambda e: (e.time_ns or 1 << 62, by_name[e.replica].rank))
        r = by_name[ex.replica]
        what = f"{r.name} (rank {r.rank}) {ex.message or 'failed'}"
        if not _retryable(r.spec.restart_policy, ex):
            policy = ReplicaSpec.RestartPolicy.Name(r.spec.restart_policy)
            return Verdict("fail", "REPLICA_FAILED", f"{what}; restart policy {policy} does not retry it", ex)
        if restart_count >= spec.max_restarts:
            return Verdict(
                "fail",
                "MAX_RESTARTS_EXCEEDED" if spec.max_restarts else "REPLICA_FAILED",
                f"{what}; {restart_count} of {spec.max_restarts} restarts used",
                ex,
            )
        return Verdict(
            "restart", "REPLICA_FAILED", f"{what}; restarting the gang from the newest checkpoint", ex
        )
    decisive = _decisive(spec, replicas)
    if all(name in exits for name in decisive):
        return Verdict("succeed", "SUCCEEDED", "every replica that decides the outcome succeeded")
    return Verdict("run")
