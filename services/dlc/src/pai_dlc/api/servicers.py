"""dlc's gRPC servicer: check the request, ask the controller, render the job. No job rules here.

Logs and metrics are read from the replicas' log files (dlc's own store of them, kept after the job
ends): every attempt of every replica has its file, recorded on the job when it was launched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.dlc.v1 import job_pb2, job_pb2_grpc, log_pb2, metric_pb2, sweep_pb2, sweep_pb2_grpc
from pai_common import fieldmask, pagination
from pai_common.errors import FieldViolation, InvalidArgument, NotFound
from pai_common.principal import principal
from pai_dlc.app import metrics
from pai_dlc.app.controller import Controller
from pai_dlc.app.metrics import log_files
from pai_dlc.app.sweeps import SweepController
from pai_dlc.db.store import JobStore, StoredJob, SweepStore, stamp
from pai_dlc.model.lifecycle import TERMINAL
from pai_dlc.model.spec import ROLE_NAMES
from pai_runtime.logfile import LogRecord, read_records

Ctx: TypeAlias = grpc.aio.ServicerContext
Entry = log_pb2.LogEntry
STREAMS = {"stdout": Entry.STDOUT, "stderr": Entry.STDERR, "system": Entry.SYSTEM}
ROLES = {v: k for k, v in ROLE_NAMES.items()}
UPDATABLE = ("display_name", "description", "labels")


def _bad(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument(reason, message, violations=[FieldViolation(field, message)])


def entry(replica: str, attempt: int, line: int, r: LogRecord) -> log_pb2.LogEntry:
    role, _, index = replica.rpartition("-")
    return Entry(
        role=ROLES.get(role, 0),  # type: ignore[arg-type]
        index=int(index) if index.isdigit() else 0,
        replica=replica,
        attempt=attempt,
        offset=line,
        stream=STREAMS.get(r.stream, Entry.STREAM_UNSPECIFIED),
        time=stamp(dt.datetime.fromtimestamp(r.time_ns / 1e9, dt.UTC)),
        text=r.text,
    )


def selected(
    s: StoredJob, wanted: list[str], attempt: int | None, *, later: bool = False
) -> list[tuple[str, int, str]]:
    """(replica, attempt, path) of the logs a request selects: `wanted` holds roles (`worker`) or
    replicas (`worker-1`), empty for all; attempt None is the latest (and every later one if `later`)."""
    files = log_files(s, [], None)
    if not files:
        return []
    if attempt is None:
        latest = max(a for _, a, _ in files)
        files = [f for f in files if f[1] >= latest] if later else [f for f in files if f[1] == latest]
    else:
        files = [f for f in files if f[1] == attempt]
    if wanted:
        files = [f for f in files if f[0] in wanted or f[0].rpartition("-")[0] in wanted]
    return files


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
        new = request.job

        def apply(job: job_pb2.Job) -> None:
            fieldmask.apply(job, new, fields)

        # only the caller's etag is checked: the controller moves a job on its own all the time
        return await self._c.update(new.name, new.etag, apply)

    async def DeleteJob(self, request: job_pb2.DeleteJobRequest, context: Ctx) -> empty_pb2.Empty:
        await self._c.delete(request.name, request.etag, request.force)
        return empty_pb2.Empty()

    async def StopJob(self, request: job_pb2.StopJobRequest, context: Ctx) -> job_pb2.Job:
        grace = (
            request.grace_period.ToTimedelta().total_seconds() if request.HasField("grace_period") else None
        )
        return await self._c.stop_job(request.name, request.etag, grace)

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
        self, s: StoredJob, wanted: list[str], attempt: int | None, offset: int, since_ns: int, tail: int
    ) -> list[tuple[str, int, list[tuple[int, LogRecord]]]]:
        """Each selected log's lines with their numbers: past `offset`, since `since_ns`, the last `tail`."""
        out = []
        for replica, a, path in selected(s, wanted, attempt):
            lines = list(enumerate(read_records(path, 0)))
            if tail:
                lines = lines[-tail:]
            out.append((replica, a, [(n, r) for n, r in lines if n >= offset and r.time_ns >= since_ns]))
        return out

    async def ReadJobLogs(
        self, request: log_pb2.ReadJobLogsRequest, context: Ctx
    ) -> log_pb2.ReadJobLogsResponse:
        s = await self._c.get(request.name)
        attempt = request.attempt if request.HasField("attempt") else None
        since = request.since_time.ToNanoseconds() if request.HasField("since_time") else 0
        size = pagination.page_size(request.page_size, default=1000, maximum=10000)
        query = pagination.fingerprint(
            name=request.name, replicas=sorted(request.replicas), attempt=attempt, offset=request.offset,
            tail=request.tail_lines, since=since,
        )  # fmt: skip
        after = pagination.decode_token(request.page_token, query, list)
        if after is not None and not (
            len(after) == 3
            and isinstance(after[0], int)
            and isinstance(after[1], str)
            and isinstance(after[2], int)
        ):
            raise _bad("page_token", "page_token is malformed", "INVALID_PAGE_TOKEN")
        entries: list[log_pb2.LogEntry] = []
        for replica, a, lines in await asyncio.to_thread(
            self._read, s, list(request.replicas), attempt, request.offset, since, request.tail_lines
        ):
            for n, r in lines:
                if after is not None and (a, replica, n) <= (after[0], after[1], after[2]):
                    continue
                entries.append(entry(replica, a, n, r))
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
        wanted = list(request.replicas)
        first_files = {path for _, _, path in selected(s, wanted, attempt)}
        positions: dict[str, tuple[int, int]] = {}  # path -> (byte position, lines read)
        while True:
            batch: list[log_pb2.LogEntry] = []
            for replica, a, path in selected(s, wanted, attempt, later=request.follow):
                pos, count = positions.get(path, (0, 0))
                records = await asyncio.to_thread(read_records, path, pos)
                numbered = list(enumerate(records, start=count))
                if records:
                    positions[path] = (records[-1].next_offset, count + len(records))
                if path not in positions:
                    positions[path] = (0, 0)
                if count == 0 and path in first_files and request.tail_lines:
                    numbered = numbered[-request.tail_lines :]
                # the offset is where the caller resumes one replica's stream (its first attempt)
                skip = request.offset if path in first_files else 0
                batch.extend(entry(replica, a, n, r) for n, r in numbered if n >= skip and r.time_ns >= since)
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
        ranks = set(request.ranks)
        since = request.start_time.ToNanoseconds() if request.HasField("start_time") else 0
        out = []
        for (k, rank), found in sorted(metrics.reported(s, set(request.keys) or None).items()):
            if ranks and rank not in ranks:
                continue
            pts = [
                metric_pb2.MetricPoint(
                    step=step, value=v, time=stamp(dt.datetime.fromtimestamp(t / 1e9, dt.UTC)), attempt=a
                )
                for step, v, t, a in found
                if step >= request.start_step and t >= since
            ]
            if not pts:
                continue
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


class SweepServicer(sweep_pb2_grpc.SweepServiceServicer):
    def __init__(self, sweeps: SweepController) -> None:
        self._s = sweeps

    async def CreateSweep(self, request: sweep_pb2.CreateSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        return await self._s.create(
            request.parent,
            request.sweep_id,
            request.sweep,
            request.request_id,
            principal().name,
            request.validate_only,
        )

    async def GetSweep(self, request: sweep_pb2.GetSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        return (await self._s.get(request.name)).sweep

    async def ListSweeps(
        self, request: sweep_pb2.ListSweepsRequest, context: Ctx
    ) -> sweep_pb2.ListSweepsResponse:
        if request.filter.strip():
            raise _bad("filter", "filter is not supported yet; use `states`", "INVALID_FILTER")
        size = pagination.page_size(request.page_size)
        query = pagination.fingerprint(parent=request.parent, states=sorted(request.states))
        after = pagination.decode_token(request.page_token, query, str)
        async with self._s.db.connect() as conn:
            rows = await SweepStore(conn).page(
                request.parent.split("/")[1],
                after=after,
                limit=size + 1,
                states=[sweep_pb2.Sweep.State.Name(st) for st in request.states],
            )
        page = rows[:size]
        token = (
            pagination.PageToken(page[-1].name.rsplit("/", 1)[1], query).encode() if len(rows) > size else ""
        )
        return sweep_pb2.ListSweepsResponse(sweeps=[s.sweep for s in page], next_page_token=token)

    async def UpdateSweep(self, request: sweep_pb2.UpdateSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        fields = fieldmask.paths(request.update_mask.paths, UPDATABLE)
        new = request.sweep

        def apply(sweep: sweep_pb2.Sweep) -> None:
            fieldmask.apply(sweep, new, fields)

        return await self._s.update(new.name, new.etag, apply)

    async def DeleteSweep(self, request: sweep_pb2.DeleteSweepRequest, context: Ctx) -> empty_pb2.Empty:
        await self._s.delete(request.name)
        return empty_pb2.Empty()

    async def StopSweep(self, request: sweep_pb2.StopSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        return await self._s.stop_sweep(request.name)

    async def GetTrial(self, request: sweep_pb2.GetTrialRequest, context: Ctx) -> sweep_pb2.Trial:
        sweep_name = request.name.rsplit("/trials/", 1)[0]
        for t in await self._s.trials(await self._s.get(sweep_name)):
            if t.name == request.name:
                return t
        raise NotFound("TRIAL_NOT_FOUND", f"{request.name} does not exist", trial=request.name)

    async def ListTrials(
        self, request: sweep_pb2.ListTrialsRequest, context: Ctx
    ) -> sweep_pb2.ListTrialsResponse:
        size = pagination.page_size(request.page_size)
        query = pagination.fingerprint(parent=request.parent, states=sorted(request.states))
        after = pagination.decode_token(request.page_token, query, int) or 0
        trials = await self._s.trials(await self._s.get(request.parent))
        chosen = [
            (i, t)
            for i, t in enumerate(trials)
            if i >= after and (not request.states or t.state in request.states)
        ]
        page = chosen[:size]
        token = pagination.PageToken(page[-1][0] + 1, query).encode() if len(chosen) > size else ""
        return sweep_pb2.ListTrialsResponse(trials=[t for _, t in page], next_page_token=token)
