"""`pai.dlc.v1.Job` and its history and events ⇄ the domain's `Job`."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from pai.dlc.v1 import events_pb2, job_pb2
from pai_common.events import OutboxEvent
from pai_common.wire import ts
from pai_dlc.domain.job import Change, Failure, Job, JobState, ReplicaState, ReplicaStatus, Severity
from pai_dlc.domain.runtime import Runtime
from pai_dlc.domain.spec import Role
from pai_dlc.mapping.specs import spec_from, spec_to

SOURCE = "pai.dlc"


def when(m: timestamp_pb2.Timestamp | None, present: bool) -> dt.datetime | None:
    return m.ToDatetime(dt.UTC) if m is not None and present else None


def _status_to(st: ReplicaStatus) -> job_pb2.ReplicaStatus:
    out = job_pb2.ReplicaStatus(
        role=int(st.role), index=st.index, replica=st.replica, rank=st.rank, attempt=st.attempt,  # type: ignore[arg-type]
        state=int(st.state), signal=st.signal, node=st.node, pid=st.pid, engine_ref=st.engine_ref,  # type: ignore[arg-type]
        message=st.message, start_time=ts(st.start_time), end_time=ts(st.end_time),
    )  # fmt: skip
    if st.exit_code is not None:
        out.exit_code = st.exit_code
    return out


def _status_from(m: job_pb2.ReplicaStatus) -> ReplicaStatus:
    return ReplicaStatus(
        Role(m.role), m.index, m.replica, m.rank, m.attempt, ReplicaState(m.state),
        m.exit_code if m.HasField("exit_code") else None, m.signal, m.node, m.pid, m.engine_ref, m.message,
        when(m.start_time, m.HasField("start_time")), when(m.end_time, m.HasField("end_time")),
    )  # fmt: skip


def _failure_to(f: Failure) -> job_pb2.JobFailure:
    out = job_pb2.JobFailure(
        role=int(f.role), index=f.index, replica=f.replica, rank=f.rank, attempt=f.attempt,  # type: ignore[arg-type]
        signal=f.signal, node=f.node, message=f.message, details=f.details, time=ts(f.time),
    )  # fmt: skip
    if f.exit_code is not None:
        out.exit_code = f.exit_code
    return out


def _failure_from(m: job_pb2.JobFailure) -> Failure:
    return Failure(
        Role(m.role), m.index, m.replica, m.rank, m.attempt, m.exit_code if m.HasField("exit_code") else None,
        m.signal, m.message, m.details, m.time.ToDatetime(dt.UTC), m.node,
    )  # fmt: skip


def job_to(job: Job) -> job_pb2.Job:
    """The API resource (with its etag)."""
    return job_pb2.Job(
        name=job.name, uid=job.uid, display_name=job.display_name, description=job.description,
        labels=job.labels, spec=spec_to(job.spec), state=int(job.state),  # type: ignore[arg-type]
        reason=job.reason, message=job.message, state_time=ts(job.state_time),
        restart_count=job.restart_count, preemption_count=job.preemption_count,
        replica_statuses=[_status_to(st) for st in job.replica_statuses],
        failure=_failure_to(job.failure) if job.failure is not None else None,
        workload=job.workload, output_model_version=job.output_model_version, trial=job.trial,
        creator=job.creator, create_time=ts(job.create_time), update_time=ts(job.update_time),
        start_time=ts(job.start_time), end_time=ts(job.end_time), etag=job.etag if job.version else "",
    )  # fmt: skip


def job_from(
    m: job_pb2.Job, *, version: int = 0, runtime: Runtime | None = None, request_id: str | None = None
) -> Job:
    """The domain job from its stored resource (`version`, `runtime`, `request_id` are the row's)."""
    return Job(
        name=m.name, uid=m.uid, spec=spec_from(m.spec), creator=m.creator, display_name=m.display_name,
        description=m.description, labels=dict(m.labels), state=JobState(m.state), reason=m.reason,
        message=m.message, state_time=when(m.state_time, m.HasField("state_time")),
        restart_count=m.restart_count, preemption_count=m.preemption_count,
        replica_statuses=[_status_from(st) for st in m.replica_statuses],
        failure=_failure_from(m.failure) if m.HasField("failure") else None,
        workload=m.workload, output_model_version=m.output_model_version, trial=m.trial,
        create_time=when(m.create_time, m.HasField("create_time")),
        update_time=when(m.update_time, m.HasField("update_time")),
        start_time=when(m.start_time, m.HasField("start_time")),
        end_time=when(m.end_time, m.HasField("end_time")),
        version=version, request_id=request_id, runtime=runtime or Runtime(),
    )  # fmt: skip


def history_entry(change: Change) -> job_pb2.JobEvent:
    """A history entry (`ListJobEvents`); the store names it."""
    entry = job_pb2.JobEvent(
        severity=int(change.severity), state=int(change.state), reason=change.reason,  # type: ignore[arg-type]
        message=change.message, attempt=change.attempt, create_time=ts(change.time),
    )  # fmt: skip
    if not change.created:
        entry.previous_state = int(change.previous)  # type: ignore[assignment]
    return entry


def history_from(m: job_pb2.JobEvent) -> Change:
    return Change(
        previous=JobState(m.previous_state), state=JobState(m.state), reason=m.reason, message=m.message,
        severity=Severity(m.severity), attempt=m.attempt, time=m.create_time.ToDatetime(dt.UTC),
        created=not m.previous_state and JobState(m.state) == JobState.CREATING, name=m.name,
    )  # fmt: skip


def history_to(change: Change) -> job_pb2.JobEvent:
    entry = history_entry(change)
    entry.name, entry.etag = change.name, 'W/"1"'
    return entry


def change_event(change: Change, stored: Job) -> OutboxEvent | None:
    """The event a history entry makes known: `job.created` (with the job as `stored`, etag and
    all), `job.state_changed` (with the job as it was right after the change), or none for a note."""
    if change.created:
        return OutboxEvent("pai.dlc.job.created", events_pb2.JobCreated(job=job_to(stored)), SOURCE)
    if change.state == change.previous:
        return None
    job = job_to(change.snapshot or stored)
    message = events_pb2.JobStateChanged(job=job, previous_state=int(change.previous))  # type: ignore[arg-type]
    return OutboxEvent("pai.dlc.job.state_changed", message, SOURCE)


def job_updated(job: Job) -> OutboxEvent:
    return OutboxEvent("pai.dlc.job.updated", events_pb2.JobUpdated(job=job_to(job)), SOURCE)


def job_deleted(job: Job) -> OutboxEvent:
    return OutboxEvent("pai.dlc.job.deleted", events_pb2.JobDeleted(job=job_to(job)), SOURCE)


def job_succeeded(job: Job, final_metrics: dict[str, float]) -> OutboxEvent:
    message = events_pb2.JobSucceeded(
        job=job_to(job), model_artifact_uri=job.spec.output_uri, model=job.spec.output_model,
        final_metrics=final_metrics,
    )  # fmt: skip
    return OutboxEvent("pai.dlc.job.succeeded", message, SOURCE)
