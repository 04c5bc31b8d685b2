"""The read side of `pai.dlc.v1.JobService`: a job's logs (read in pages or followed) and its reported
metrics. The servicer takes these methods from here; the app reads the files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from pai.dlc.v1 import log_pb2, metric_pb2
from pai_common import pagination
from pai_common.errors import bad_request
from pai_dlc.app import logs
from pai_dlc.app.jobs import JobUseCases
from pai_dlc.mapping.observe import log_entry, metric_series

Ctx: TypeAlias = grpc.aio.ServicerContext


def _read_after(request: log_pb2.ReadJobLogsRequest, query: str) -> tuple[int, str, int] | None:
    """Where the page starts: (attempt, replica, line) of the last entry of the page before."""
    after = pagination.decode_token(request.page_token, query, list)
    if after is None:
        return None
    if not (
        len(after) == 3
        and isinstance(after[0], int)
        and isinstance(after[1], str)
        and isinstance(after[2], int)
    ):
        raise bad_request("page_token", "page_token is malformed", "INVALID_PAGE_TOKEN")
    return after[0], after[1], after[2]


class JobObservation:
    jobs: JobUseCases

    async def ReadJobLogs(
        self, request: log_pb2.ReadJobLogsRequest, context: Ctx
    ) -> log_pb2.ReadJobLogsResponse:
        job = await self.jobs.get(request.name)
        attempt = request.attempt if request.HasField("attempt") else None
        since = request.since_time.ToNanoseconds() if request.HasField("since_time") else 0
        size = pagination.page_size(request.page_size, default=1000, maximum=10000)
        query = pagination.fingerprint(
            name=request.name, replicas=sorted(request.replicas), attempt=attempt, offset=request.offset,
            tail=request.tail_lines, since=since,
        )  # fmt: skip
        after = _read_after(request, query)
        lines = await logs.read(
            job, list(request.replicas), attempt, request.offset, since, request.tail_lines
        )
        chosen = sorted(
            (x for x in lines if after is None or (x.attempt, x.replica, x.line) > after),
            key=lambda x: (x.attempt, x.replica, x.line),
        )
        page = chosen[:size]
        token = ""
        if len(chosen) > size:
            last = page[-1]
            token = pagination.PageToken([last.attempt, last.replica, last.line], query).encode()
        return log_pb2.ReadJobLogsResponse(entries=[log_entry(x) for x in page], next_page_token=token)

    async def StreamJobLogs(
        self, request: log_pb2.StreamJobLogsRequest, context: Ctx
    ) -> AsyncIterator[log_pb2.StreamJobLogsResponse]:
        job = await self.jobs.get(request.name)
        follow = logs.Follow(
            wanted=tuple(request.replicas),
            attempt=request.attempt if request.HasField("attempt") else None,
            offset=request.offset,
            since_ns=request.since_time.ToNanoseconds() if request.HasField("since_time") else 0,
            tail=request.tail_lines,
            follow=request.follow,
        )
        async for batch in logs.stream(job, follow, lambda: self.jobs.get(request.name)):
            yield log_pb2.StreamJobLogsResponse(entries=[log_entry(x) for x in batch])

    async def QueryJobMetrics(
        self, request: metric_pb2.QueryJobMetricsRequest, context: Ctx
    ) -> metric_pb2.QueryJobMetricsResponse:
        job = await self.jobs.get(request.name)
        ranks = set(request.ranks)
        found = await logs.reported(job, set(request.keys) or None)
        series = [metric_series(s, request) for s in found if not ranks or s.rank in ranks]
        return metric_pb2.QueryJobMetricsResponse(series=[s for s in series if s is not None])
