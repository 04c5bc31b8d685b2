"""How the scheduler is doing: decision counters and timings per group, and what the API shows of them."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pai_scheduler.domain.quota import Amounts
from pai_scheduler.domain.usage import QuotaUsage
from pai_scheduler.domain.workload import Workload

RECENT_SECONDS = 60.0  # the window of the admission rate


def quantile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0.01 steps) of `values`, inclusive; the value itself for one, 0 for none."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def oldest_enqueue(pending: Iterable[Workload]) -> dt.datetime | None:
    """When the longest-waiting of `pending` was queued."""
    return min((w.enqueue_time for w in pending if w.enqueue_time), default=None)


@dataclass(frozen=True)
class DecisionSummary:
    """A group's decision counters, admission rate and latencies (seconds)."""

    admitted_total: int
    preempted_total: int
    attempts_total: int
    admissions_per_second: float
    decision_latency_p50: float
    decision_latency_p99: float
    admission_wait_p50: float
    last_cycle: dt.datetime | None


@dataclass
class DecisionStats:
    """A group's decision counters and its recent timings (bounded)."""

    admitted_total: int = 0
    preempted_total: int = 0
    attempts_total: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    admit_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))  # monotonic
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    last_cycle: dt.datetime | None = None

    def summary(self, monotonic_now: float) -> DecisionSummary:
        """The counters with the admission rate over the last minute and the latency quantiles."""
        recent = [t for t in self.admit_times if t > monotonic_now - RECENT_SECONDS]
        latencies = list(self.latencies)
        return DecisionSummary(
            admitted_total=self.admitted_total,
            preempted_total=self.preempted_total,
            attempts_total=self.attempts_total,
            admissions_per_second=len(recent) / RECENT_SECONDS,
            decision_latency_p50=quantile(latencies, 0.5),
            decision_latency_p99=quantile(latencies, 0.99),
            admission_wait_p50=quantile(list(self.waits), 0.5),
            last_cycle=self.last_cycle,
        )


@dataclass(frozen=True)
class QuotaQueueStats:
    """One quota's usage and how long its oldest pending workload has waited (seconds)."""

    quota: str
    workspace: str
    usage: QuotaUsage
    oldest_pending_age: float


@dataclass(frozen=True)
class GroupStats:
    """One resource group's nodes, capacity, queues and decisions."""

    resource_group: str
    node_count: int
    schedulable_node_count: int
    capacity: Amounts
    allocated: Amounts
    fragmented_gpu_milli: int
    pending_count: int
    admitted_count: int
    preempting_count: int
    oldest_pending_age: float
    decisions: DecisionSummary
    quotas: list[QuotaQueueStats] = field(default_factory=list)


@dataclass(frozen=True)
class SchedulerStats:
    """The scheduler's figures as of `compute_time`."""

    compute_time: dt.datetime
    resource_groups: list[GroupStats]
