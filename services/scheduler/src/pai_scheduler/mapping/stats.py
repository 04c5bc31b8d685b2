"""The scheduler's figures on the wire."""

from __future__ import annotations

from pai.scheduler.v1 import stats_pb2
from pai_common.wire import duration, ts
from pai_scheduler.domain.stats import DecisionSummary, GroupStats, QuotaQueueStats, SchedulerStats
from pai_scheduler.mapping.amounts import resources
from pai_scheduler.mapping.quotas import quota_usage


def scheduler_stats(s: SchedulerStats) -> stats_pb2.SchedulerStats:
    # one replica decides for now, so whoever answers is the leader
    return stats_pb2.SchedulerStats(
        leader=True,
        compute_time=ts(s.compute_time),
        resource_groups=[_group(g) for g in s.resource_groups],
    )


def _group(g: GroupStats) -> stats_pb2.ResourceGroupStats:
    return stats_pb2.ResourceGroupStats(
        resource_group=g.resource_group,
        node_count=g.node_count,
        schedulable_node_count=g.schedulable_node_count,
        capacity=resources(g.capacity),
        allocated=resources(g.allocated),
        fragmented_gpu_milli=g.fragmented_gpu_milli,
        pending_workload_count=g.pending_count,
        admitted_workload_count=g.admitted_count,
        preempting_workload_count=g.preempting_count,
        oldest_pending_age=duration(g.oldest_pending_age),
        decisions=_decisions(g.decisions),
        quotas=[_quota(q) for q in g.quotas],
    )


def _decisions(d: DecisionSummary) -> stats_pb2.DecisionStats:
    return stats_pb2.DecisionStats(
        admitted_total=d.admitted_total,
        preempted_total=d.preempted_total,
        attempts_total=d.attempts_total,
        admissions_per_second=d.admissions_per_second,
        decision_latency_p50=duration(d.decision_latency_p50),
        decision_latency_p99=duration(d.decision_latency_p99),
        admission_wait_p50=duration(d.admission_wait_p50),
        last_cycle_time=ts(d.last_cycle),
    )


def _quota(q: QuotaQueueStats) -> stats_pb2.QuotaQueueStats:
    return stats_pb2.QuotaQueueStats(
        quota=q.quota,
        workspace=q.workspace,
        usage=quota_usage(q.usage),
        oldest_pending_age=duration(q.oldest_pending_age),
    )
