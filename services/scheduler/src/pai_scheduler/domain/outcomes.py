"""What a scheduling decision says: why a workload waits, and what a cycle changed."""

from __future__ import annotations

from dataclasses import dataclass, field

from pai_scheduler.domain.quota import Verdict
from pai_scheduler.domain.workload import Workload


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a workload was not admitted: a pending reason code, its message and metadata."""

    code: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


def quota_failure(v: Verdict) -> Failure:
    """The pending reason for a quota verdict; a group that is simply full is a placement matter."""
    meta = {"resource": v.resource}
    if v.quota:
        meta["quota"] = v.quota
    return Failure("NO_PLACEMENT" if v.code == "NO_CAPACITY" else v.code, v.message, meta)


@dataclass
class Changes:
    """What a cycle decided, for the store and the events."""

    admitted: list[Workload] = field(default_factory=list)
    preempting: list[Workload] = field(default_factory=list)  # notices given this cycle
    preempted: list[Workload] = field(default_factory=list)  # resources freed this cycle
    reasons: list[tuple[Workload, str]] = field(default_factory=list)  # (workload, previous code)
    decisions: int = 0
    more: bool = False  # the budget ran out before the queues did

    def __bool__(self) -> bool:
        return bool(self.admitted or self.preempting or self.preempted or self.reasons)
