"""`SchedulerStatsService`: the scheduler's figures."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from pai.scheduler.v1 import stats_pb2 as pb
from pai.scheduler.v1 import stats_pb2_grpc
from pai_scheduler import mapping
from pai_scheduler.app.stats import Stats

Ctx: TypeAlias = grpc.aio.ServicerContext


class StatsServicer(stats_pb2_grpc.SchedulerStatsServiceServicer):
    """The SchedulerStatsService RPC over the stats query."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    async def GetSchedulerStats(
        self, request: pb.GetSchedulerStatsRequest, context: Ctx
    ) -> pb.SchedulerStats:
        return mapping.scheduler_stats(self._stats.get(request.resource_group, request.include_quotas))
