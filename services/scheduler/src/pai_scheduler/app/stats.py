"""The scheduler's figures: per group, its nodes, capacity, queues and decisions (and its quotas')."""

from __future__ import annotations

import datetime as dt
import time

from pai_scheduler.app.engine import Scheduler
from pai_scheduler.domain.records import ResourceGroup
from pai_scheduler.domain.stats import GroupStats, QuotaQueueStats, SchedulerStats, oldest_enqueue
from pai_scheduler.domain.usage import Tally, quota_usage, tallies
from pai_scheduler.domain.workload import State


class Stats:
    """The stats query."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def get(self, resource_group: str, include_quotas: bool) -> SchedulerStats:
        """The figures of one group (`resource_group`) or of all; with every quota's when asked."""
        s = self._s
        now = s.clock()
        groups = (
            [s.group(resource_group)] if resource_group else sorted(s.groups.values(), key=lambda g: g.id)
        )
        tally = tallies(s.workloads.values()) if include_quotas else None
        return SchedulerStats(now, [self._group(g, now, tally) for g in groups])

    def _group(self, g: ResourceGroup, now: dt.datetime, tally: dict[str, Tally] | None) -> GroupStats:
        s = self._s
        engine = s.engines[g.id]
        live = [w for w in s.workloads.values() if w.resource_group == g.name]
        pending = [w for w in live if w.state == State.PENDING]
        quotas: list[QuotaQueueStats] = []
        if tally is not None:
            for q in sorted((q for q in s.quotas.values() if q.resource_group == g.id), key=lambda q: q.name):
                waiting = oldest_enqueue(w for w in pending if w.quota == q.name)
                quotas.append(
                    QuotaQueueStats(
                        q.name,
                        q.spec.workspace,
                        quota_usage(engine.quotas, q.spec, tally, s.clock()),
                        _age(now, waiting),
                    )
                )
        return GroupStats(
            resource_group=g.name,
            node_count=len(s.nodes[g.id]),
            schedulable_node_count=sum(1 for n in s.nodes[g.id].values() if n.ready and not n.cordoned),
            capacity=dict(engine.quotas.capacity),
            allocated=dict(engine.quotas.usage[""]),
            fragmented_gpu_milli=int(engine.fragmented_gpu_milli()),
            pending_count=len(pending),
            admitted_count=sum(1 for w in live if w.state == State.ADMITTED),
            preempting_count=sum(1 for w in live if w.state == State.PREEMPTING),
            oldest_pending_age=_age(now, oldest_enqueue(pending)),
            decisions=s.stats[g.id].summary(time.monotonic()),
            quotas=quotas,
        )


def _age(now: dt.datetime, since: dt.datetime | None) -> float:
    return (now - since).total_seconds() if since else 0
