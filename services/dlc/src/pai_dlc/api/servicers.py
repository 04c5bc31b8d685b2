"""dlc's gRPC servicer: check the request, ask the controller, render the job. No job rules here.

Logs and metrics are read from the replicas' log files (dlc's own store of them, kept after the job
ends): every attempt of every replica has its file, recorded on the job when it was launched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.dlc.v1 import job_pb2, job_pb2_grpc, log_pb2, metric_pb2
from pai_common import fieldmask, pagination
from pai_common.errors import FieldViolation, InvalidArgument
from pai_common.principal import principal
from pai_dlc.app.controller import Controller
from pai_dlc.db.store import JobStore, StoredJob, stamp
from pai_dlc.domain.lifecycle import TERMINAL
from pai_dlc.domain.spec import ROLE_NAMES
from pai_dlc.engine.logfile import LogRecord, read_records, tail_records

Ctx: TypeAlias = grpc.aio.ServicerContext
Entry = log_pb2.LogEntry
STREAMS = {"stdout": Entry.STDOUT, "stderr": Entry.STDERR, "system": Entry.SYSTEM}
ROLES = {v: k for k, v in ROLE_NAMES.items()}
METRIC_PREFIX = "@pai.metric "
UPDATABLE = ("display_name", "description", "labels")


def _bad(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument(reason, message, violations=[FieldViolation(field, message)])


def log_files(s: StoredJob, replicas: list[str], attempt: int | None) -> list[tuple[str, int, str]]:
    """(replica, attempt, path) of the job's log files, oldest attempt first, replicas by name."""
    out = []
    for a, files in sorted(s.runtime.get("logs", {}).items(), key=lambda kv: int(kv[0])):
        if attempt is not None and int(a) != attempt:
            continue
        for replica, path in sorted(files.items()):
            if replicas and replica not in replicas:
                continue
            out.append((replica, int(a), path))
    return out


def entry(replica: str, attempt: int, r: LogRecord) -> log_pb2.LogEntry:
    role, _, index = replica.rpartition("-")
    return Entry(
        role=ROLES.get(role, 0),  # type: ignore[arg-type]
        index=int(index) if index.isdigit() else 0,
        replica=replica,
        attempt=attempt,
        offset=r.offset,
        stream=STREAMS.get(r.stream, Entry.STREAM_UNSPECIFIED),
        time=stamp(dt.datetime.fromtimestamp(r.time_ns / 1e9, dt.UTC)),
        text=r.text,
    )


class JobServicer(job_pb2_grpc.JobServiceServicer):
    def __init__(self, controller: Controller) -> None:
        self._c = controller

    async def CreateJob(self, request: job_pb2.CreateJobRequest, context: Ctx) -> job_pb2.Job:
        return await self._c.create(
            request.parent,
            request.job_id,
            request.job,
            request.request_id,
            principal().name,
            request.validate_only,
        )

    async def GetJob(self, request: job_pb2.GetJobRequest, context: Ctx) -> job_pb2.Job:
        return (await self._c.get(request.name)).job

    async def ListJobs(self, request: job_pb2.ListJobsRequest, context: Ctx) -> job_pb2.ListJobsResponse:
        if request.filter.strip():
            raise _bad("filter", "filter is not supported yet; use `states`", "INVALID_FILTER")
        size = pagination.page_size(request.page_size)
        query = pagination.fingerprint(parent=request.parent, states=sorted(request.states))
        after = pagination.decode_token(request.page_token, query, list)
        key = None
        if after is not None:
            try:
                key = (dt.datetime.fromisoformat(after[0]), str(after[1]))
            except (IndexError, ValueError, TypeError) as e:
                raise _bad("page_token", "page_token is malformed", "INVALID_PAGE_TOKEN") from e
        async with self._c.db.connect() as conn:
            rows = await JobStore(conn).page(
                request.parent.split("/")[1], after=key, limit=size + 1, states=list(request.states)
            )
        page = rows[:size]
        token = ""
        if len(rows) > size:
            last = page[-1].job
            token = pagination.PageToken(
                [last.create_time.ToDatetime(dt.UTC).isoformat(), last.name.rsplit("/", 1)[1]], query
            ).encode()
        return job_pb2.ListJobsResponse(jobs=[s.job for s in page], next_page_token=token)

    async def UpdateJob(self, request: job_pb2.UpdateJobRequest, context: Ctx) -> job_pb2.Job:
        fields = fieldmask.paths(request.update_mask.paths, UPDATABLE)
        s = await self._c.get(request.job.name)
        s.job.etag = request.job.etag or s.job.etag
        new = request.job

        def apply(job: job_pb2.Job) -> None:
            if "display_name" in fields:
                job.display_name = new.display_name
            if "description" in fields:
                job.description = new.description
            if "labels" in fields:
                job.labels.clear()
                job.labels.update(new.labels)

        return await self._c.update(s, apply)

    async def DeleteJob(self, request: job_pb2.DeleteJobRequest, context: Ctx) -> empty_pb2.Empty:
        await self._c.delete(request.name, request.etag)
        return empty_pb2.Empty()

    async def StopJob(self, request: job_pb2.StopJobRequest, context: Ctx) -> job_pb2.Job:
        return await self._c.stop_job(request.name, request.etag)

    async def RestartJob(self, request: job_pb2.RestartJobRequest, context: Ctx) -> job_pb2.Job:
        return await self._c.restart_job(request.name, request.etag)

    async def ListJobEvents(
        self, request: job_pb2.ListJobEventsRequest, context: Ctx
    ) -> job_pb2.ListJobEventsResponse:
        s = await self._c.get(request.parent)
        size = pagination.page_size(request.page_size)
        query = pagination.fingerprint(parent=request.parent)
        after = pagination.decode_token(request.page_token, query, int) or 0
        async with self._c.db.connect() as conn:
            rows = await JobStore(conn).history(s, after=after, limit=size + 1)
        page = rows[:size]
        token = pagination.PageToken(page[-1][0], query).encode() if len(rows) > size else ""
        return job_pb2.ListJobEventsResponse(job_events=[e for _, e in page], next_page_token=token)

    # ---- logs ----------------------------------------------------------------------------------

    def _read(
        self, s: StoredJob, replicas: list[str], attempt: int | None, offset: int, since_ns: int, tail: int
    ) -> list[tuple[str, int, str, list[LogRecord]]]:
        out = []
        for replica, a, path in log_files(s, replicas, attempt):
            records = tail_records(path, tail) if tail else read_records(path, offset)
            records = [r for r in records if r.offset >= offset and r.time_ns >= since_ns]
            out.append((replica, a, path, records))
        return out

    async def ReadJobLogs(
        self, request: log_pb2.ReadJobLogsRequest, context: Ctx
    ) -> log_pb2.ReadJobLogsResponse:
        s = await self._c.get(request.name)
        attempt = request.attempt if request.HasField("attempt") else None
        since = request.since_time.ToNanoseconds() if request.HasField("since_time") else 0
        size = pagination.page_size(request.page_size, default=1000, maximum=10000)
        query = pagination.fingerprint(name=request.name, replicas=sorted(request.replicas), attempt=attempt)
        after = pagination.decode_token(request.page_token, query, list)
        entries: list[log_pb2.LogEntry] = []
        for replica, a, _, records in await asyncio.to_thread(
            self._read, s, list(request.replicas), attempt, request.offset, since, request.tail_lines
        ):
            for r in records:
                if after is not None and (a, replica, r.offset) <= (after[0], after[1], after[2]):
                    continue
                entries.append(entry(replica, a, r))
        entries.sort(key=lambda e: (e.attempt, e.replica, e.offset))
        page = entries[:size]
        token = ""
        if len(entries) > size:
            last = page[-1]
            token = pagination.PageToken([last.attempt, last.replica, last.offset], query).encode()
        return log_pb2.ReadJobLogsResponse(entries=page, next_page_token=token)

    async def StreamJobLogs(
        self, request: log_pb2.StreamJobLogsRequest, context: Ctx
    ) -> AsyncIterator[log_pb2.StreamJobLogsResponse]:
        s = await self._c.get(request.name)
        attempt = request.attempt if request.HasField("attempt") else None
        since = request.since_time.ToNanoseconds() if request.HasField("since_time") else 0
        positions: dict[str, int] = {}
        first = True
        while True:
            batch: list[log_pb2.LogEntry] = []
            for replica, a, path in log_files(s, list(request.replicas), attempt):
                if path not in positions:
                    if first and request.tail_lines:
                        records = await asyncio.to_thread(tail_records, path, request.tail_lines)
                    else:
                        records = await asyncio.to_thread(read_records, path, request.offset)
                else:
                    records = await asyncio.to_thread(read_records, path, positions[path])
                if records:
                    positions[path] = records[-1].next_offset
                elif path not in positions:
                    positions[path] = request.offset
                batch.extend(entry(replica, a, r) for r in records if r.time_ns >= since)
            first = False
            if batch:
                yield log_pb2.StreamJobLogsResponse(entries=batch)
            if not request.follow:
                return
            if s.state in TERMINAL and not batch:
                return
            await asyncio.sleep(0.2)
            s = await self._c.get(request.name)

    # ---- metrics -------------------------------------------------------------------------------

    async def QueryJobMetrics(
        self, request: metric_pb2.QueryJobMetricsRequest, context: Ctx
    ) -> metric_pb2.QueryJobMetricsResponse:
        s = await self._c.get(request.name)
        series = await asyncio.to_thread(self._metrics, s, request)
        return metric_pb2.QueryJobMetricsResponse(series=series)

    def _metrics(
        self, s: StoredJob, request: metric_pb2.QueryJobMetricsRequest
    ) -> list[metric_pb2.MetricSeries]:
        keys = set(request.keys)
        ranks = set(request.ranks)
        since = request.start_time.ToNanoseconds() if request.HasField("start_time") else 0
        rank_of = {st.replica: st.rank for st in s.job.replica_statuses}
        points: dict[tuple[str, int], list[metric_pb2.MetricPoint]] = {}
        for replica, a, path in log_files(s, [], None):
            rank = rank_of.get(replica, 0)
            if ranks and rank not in ranks:
                continue
            for r in read_records(path, 0):
                if r.stream != "stdout" or not r.text.startswith(METRIC_PREFIX) or r.time_ns < since:
                    continue
                try:
                    data: dict[str, Any] = json.loads(r.text[len(METRIC_PREFIX) :])
                    step = int(data.pop("step", 0))
                except (ValueError, TypeError):
                    continue
                if step < request.start_step:
                    continue
                for k, v in data.items():
                    if (keys and k not in keys) or isinstance(v, bool) or not isinstance(v, int | float):
                        continue
                    p = metric_pb2.MetricPoint(
                        step=step,
                        value=float(v),
                        time=stamp(dt.datetime.fromtimestamp(r.time_ns / 1e9, dt.UTC)),
                        attempt=a,
                    )
                    points.setdefault((k, rank), []).append(p)
        out = []
        for (k, rank), pts in sorted(points.items()):
            values = [p.value for p in pts]
            shown = pts
            if request.max_points and len(pts) > request.max_points:
                stride = len(pts) / request.max_points
                shown = [pts[int(i * stride)] for i in range(request.max_points - 1)] + [pts[-1]]
            out.append(
                metric_pb2.MetricSeries(
                    key=k,
                    rank=rank,
                    points=[] if request.summary_only else shown,
                    last=pts[-1],
                    min=min(values),
                    max=max(values),
                    count=len(pts),
                )
            )
        return out
