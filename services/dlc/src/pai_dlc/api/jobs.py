"""`pai.dlc.v1.JobService`: take the request, call one use case, map the answer. No job rules here."""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.dlc.v1 import job_pb2, job_pb2_grpc
from pai_common import fieldmask, pagination
from pai_common.errors import bad_request
from pai_common.principal import principal
from pai_dlc.api.observe import JobObservation
from pai_dlc.app.jobs import JobUseCases, NewJob
from pai_dlc.domain.job import Job, JobState
from pai_dlc.mapping import jobs as mapping
from pai_dlc.mapping.specs import spec_from

Ctx: TypeAlias = grpc.aio.ServicerContext
UPDATABLE = ("display_name", "description", "labels")


def _list_key(request: job_pb2.ListJobsRequest) -> tuple[str, tuple[dt.datetime, str] | None]:
    """The page token's query and the (create time, id) a page starts after."""
    if request.filter.strip():
        raise bad_request("filter", "filter is not supported yet; use `states`", "INVALID_FILTER")
    query = pagination.fingerprint(parent=request.parent, states=sorted(request.states))
    after = pagination.decode_token(request.page_token, query, list)
    if after is None:
        return query, None
    try:
        return query, (dt.datetime.fromisoformat(after[0]), str(after[1]))
    except (IndexError, ValueError, TypeError) as e:
        raise bad_request("page_token", "page_token is malformed", "INVALID_PAGE_TOKEN") from e


class JobServicer(JobObservation, job_pb2_grpc.JobServiceServicer):
    def __init__(self, jobs: JobUseCases) -> None:
        self.jobs = jobs

    async def CreateJob(self, request: job_pb2.CreateJobRequest, context: Ctx) -> job_pb2.Job:
        m = request.job
        new = NewJob(spec_from(m.spec), m.display_name, m.description, dict(m.labels))
        job = await self.jobs.create(
            request.parent, request.job_id, new, request_id=request.request_id, creator=principal().name,
            validate_only=request.validate_only,
        )  # fmt: skip
        return mapping.job_to(job)

    async def GetJob(self, request: job_pb2.GetJobRequest, context: Ctx) -> job_pb2.Job:
        return mapping.job_to(await self.jobs.get(request.name))

    async def ListJobs(self, request: job_pb2.ListJobsRequest, context: Ctx) -> job_pb2.ListJobsResponse:
        size = pagination.page_size(request.page_size)
        query, after = _list_key(request)
        states = [JobState(s) for s in request.states]
        rows = await self.jobs.page(request.parent.split("/")[1], after, size + 1, states)
        page = rows[:size]
        token = ""
        if len(rows) > size and (last := page[-1]).create_time is not None:
            token = pagination.PageToken(
                [last.create_time.isoformat(), last.name.rsplit("/", 1)[1]], query
            ).encode()
        return job_pb2.ListJobsResponse(jobs=[mapping.job_to(j) for j in page], next_page_token=token)

    async def UpdateJob(self, request: job_pb2.UpdateJobRequest, context: Ctx) -> job_pb2.Job:
        fields = fieldmask.paths(request.update_mask.paths, UPDATABLE)
        given = request.job

        def change(job: Job) -> None:
            fieldmask.assign(job, given, fields)

        # only the caller's etag is checked: the reconciler moves a job on its own all the time
        return mapping.job_to(await self.jobs.update(given.name, given.etag, change))

    async def DeleteJob(self, request: job_pb2.DeleteJobRequest, context: Ctx) -> empty_pb2.Empty:
        await self.jobs.delete(request.name, request.etag, request.force)
        return empty_pb2.Empty()

    async def StopJob(self, request: job_pb2.StopJobRequest, context: Ctx) -> job_pb2.Job:
        grace = (
            request.grace_period.ToTimedelta().total_seconds() if request.HasField("grace_period") else None
        )
        return mapping.job_to(await self.jobs.stop(request.name, request.etag, grace))

    async def RestartJob(self, request: job_pb2.RestartJobRequest, context: Ctx) -> job_pb2.Job:
        return mapping.job_to(await self.jobs.restart(request.name, request.etag))

    async def ListJobEvents(
        self, request: job_pb2.ListJobEventsRequest, context: Ctx
    ) -> job_pb2.ListJobEventsResponse:
        job = await self.jobs.get(request.parent)  # NOT_FOUND before anything about the request
        size = pagination.page_size(request.page_size)
        query = pagination.fingerprint(parent=request.parent)
        after = pagination.decode_token(request.page_token, query, int) or 0
        rows = await self.jobs.history(job, after, size + 1)
        page = rows[:size]
        token = pagination.PageToken(page[-1][0], query).encode() if len(rows) > size else ""
        return job_pb2.ListJobEventsResponse(
            job_events=[mapping.history_to(change) for _, change in page], next_page_token=token
        )
