"""The job controller: the only writer of jobs, driving each one from its stored state.

Every job moves by `step()`, called for every active job each `poll_interval` and at once when the
API or an event wakes the loop. A step holds the job's lock, reads the job, talks to the scheduler or
the engine, and writes the outcome together with its events in one transaction. Nothing lives only
in memory: the engine handles of a running attempt are stored with the job, so a restarted dlc picks
every job up where it was (running replicas are watched again, not started twice).

Scheduler facts (admitted, preempted, evicted, pending reason) arrive as events; their handlers only
record them on the job in the inbox transaction, and the next step acts on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import pathlib
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pai.dlc.v1 import events_pb2, job_pb2
from pai.lineage.v1 import events_pb2 as lineage_events
from pai.lineage.v1 import model_pb2
from pai.scheduler.v1 import events_pb2 as scheduler_events
from pai.scheduler.v1 import workload_pb2
from pai_common.clock import utcnow
from pai_common.consumer import Event
from pai_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from pai_common.etags import check_etag
from pai_dlc.app.lineage_client import DatasetResolver, same_workspace
from pai_dlc.app.metrics import final_metrics
from pai_dlc.app.scheduler_client import (
    PERMANENT,
    SchedulerClient,
    describe,
    placement_summary,
    workload_name,
)
from pai_dlc.db.store import JobStore, StoredJob, stamp
from pai_dlc.engine.base import AttemptLaunch, Engine, EngineError, ReplicaExit, ReplicaHandle, ReplicaLaunch
from pai_dlc.model import lifecycle
from pai_dlc.model.env import Cluster, hyperparameter_args, replica_env
from pai_dlc.model.lifecycle import ACTIVE, TERMINAL, State, can_move
from pai_dlc.model.spec import JobSpec, local_path, normalize, replicas, validate

log = logging.getLogger(__name__)

Job = job_pb2.Job
RS = job_pb2.ReplicaStatus
WO = workload_pb2.Workload.Outcome

FACT_KINDS: dict[type, str] = {
    scheduler_events.WorkloadAdmitted: "admitted",
    scheduler_events.WorkloadPreempted: "preempted",
    scheduler_events.WorkloadEvicted: "evicted",
    scheduler_events.WorkloadPendingReasonChanged: "pending",
    scheduler_events.WorkloadFinished: "finished",
    scheduler_events.WorkloadDeleted: "deleted",
}

LINEAGE_SUBJECTS = ("pai.lineage.model_version.created",)
SCHEDULER_SUBJECTS = (
    "pai.scheduler.workload.admitted",
    "pai.scheduler.workload.preempted",
    "pai.scheduler.workload.evicted",
    "pai.scheduler.workload.pending_reason_changed",
    "pai.scheduler.workload.finished",
    "pai.scheduler.workload.deleted",
)


@dataclasses.dataclass
class Options:
    storage_root: pathlib.Path  # checkpoints, outputs and attempt directories live under it
    default_engine: int = JobSpec.LOCAL
    poll_interval: float = 0.25
    kill_grace: float = 10.0  # SIGTERM → SIGKILL on stop, restart and failure
    preemption_grace: float = 10.0  # asked of the scheduler: time to checkpoint after a notice


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _handle(d: dict[str, Any]) -> ReplicaHandle:
    return ReplicaHandle(**d)


class Controller:
    def __init__(
        self,
        db: AsyncEngine,
        scheduler: SchedulerClient,
        engines: dict[int, Engine],
        options: Options,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], dt.datetime] = utcnow,
        datasets: DatasetResolver | None = None,
    ) -> None:
        self.db = db
        self.datasets = datasets
        self.scheduler = scheduler
        self.engines = engines
        self.options = options
        self.on_commit = on_commit
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._parallel = asyncio.Semaphore(16)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- plumbing ------------------------------------------------------------------------------

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[JobStore]:
        async with self.db.begin() as conn:
            store = JobStore(conn)
            yield store
        if store.outbox.added:
            self.on_commit()

    def kick(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dlc-controller")

    async def stop(self) -> None:
        """Stop stepping (replicas keep running: a restarted dlc watches them again)."""
        self._stopping = True
        self.kick()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # steps in progress finish (a launch records its handles); none starts after this
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.step_all()
            except Exception:  # a broken job or a store outage must not stop every other job
                log.exception("controller pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.poll_interval)
            self._wake.clear()

    async def step_all(self) -> None:
        async with self.db.connect() as conn:
            names = await JobStore(conn).names_in_states(
                [s for s in Job.State.values() if s not in TERMINAL and s != State.STATE_UNSPECIFIED]
            )
            names += await JobStore(conn).names_with_pending_finish()
            names += await JobStore(conn).names_with_facts()

        # each job steps in a task of its own (one at a time per job), so a gang being killed with a
        # grace period never delays another job's admission, preemption notice or deadline
        for name in dict.fromkeys(names):
            if self._stopping:
                return
            if name not in self._running:
                self._running[name] = asyncio.create_task(self._one(name), name=f"dlc-step-{name}")

    async def _one(self, name: str) -> None:
        try:
            async with self._parallel:
                if not self._stopping:
                    await self.step(name)
        except Exception:
            log.exception("step of %s failed", name)
        finally:
            self._running.pop(name, None)

    # ---- state changes -------------------------------------------------------------------------

    async def _move(
        self, store: JobStore, s: StoredJob, state: int, reason: str, message: str, *, warning: bool = False
    ) -> None:
        prev = s.job.state
        if prev != state and not can_move(prev, state):
            raise FailedPrecondition(
                "ILLEGAL_STATE_TRANSITION",
                f"{s.name} is {Job.State.Name(prev)} and cannot become {Job.State.Name(state)}",  # type: ignore[arg-type]
            )
        now = self.clock()
        s.job.state = state  # type: ignore[assignment]
        s.job.reason, s.job.message = reason, message
        s.job.state_time.CopyFrom(stamp(now))
        if state == State.RUNNING and not s.job.HasField("start_time"):
            s.job.start_time.CopyFrom(stamp(now))
        if state in TERMINAL:
            s.job.end_time.CopyFrom(stamp(now))
        severity = job_pb2.JobEvent.WARNING if warning else job_pb2.JobEvent.INFO
        await store.record(
            s,
            job_pb2.JobEvent(
                severity=severity,
                state=state,  # type: ignore[arg-type]
                previous_state=prev,
                reason=reason,
                message=message,
                attempt=int(s.runtime.get("attempt", 0)),
                create_time=stamp(now),
            ),
        )
        await store.publish(
            "pai.dlc.job.state_changed", events_pb2.JobStateChanged(job=s.job, previous_state=prev)
        )
        log.info("%s: %s → %s (%s) %s", s.name, Job.State.Name(prev), Job.State.Name(state), reason, message)  # type: ignore[arg-type]

    async def _write(self, s: StoredJob, change: Callable[[JobStore], Any] | None = None) -> None:
        """Save `s` (changed in memory by the caller), after `change` adds its events, in one transaction."""
        async with self.tx() as store:
            if change is not None:
                await change(store)
            await store.save(s)

    # ---- API -----------------------------------------------------------------------------------

    async def create(
        self,
        parent: str,
        job_id: str,
        job: job_pb2.Job,
        request_id: str,
        creator: str,
        validate_only: bool,
        trial: str = "",
    ) -> job_pb2.Job:
        name = f"{parent}/jobs/{job_id}"
        async with self.db.connect() as conn:
            store = JobStore(conn)
            if request_id:
                earlier = await store.by_request_id(request_id)
                if earlier is not None:
                    if earlier.name != name:
                        raise FailedPrecondition(
                            "REQUEST_ID_REUSED", f"request_id was used to create {earlier.name}"
                        )
                    return earlier.job
            if await store.get(name) is not None:
                raise AlreadyExists("JOB_ALREADY_EXISTS", f"{name} already exists", job=name)
        uid = str(uuid.uuid4())
        spec = normalize(
            job.spec,
            default_engine=self.options.default_engine,
            storage_root=self.options.storage_root,
            uid=uid,
        )
        await self.resolve_data(name, spec, pinned=bool(trial))
        violations = validate(spec, engines=frozenset(self.engines), workspace=parent)
        if violations:
            raise InvalidArgument(
                "INVALID_JOB_SPEC",
                violations[0].description,
                violations=[FieldViolation(v.field, v.description) for v in violations],
            )
        # only what a caller may set; every output-only field starts empty
        new = Job(display_name=job.display_name, description=job.description, labels=dict(job.labels))
        new.spec.CopyFrom(spec)
        new.name, new.uid, new.creator, new.trial = name, uid, creator, trial
        new.state = State.CREATING
        new.reason, new.message = "CREATED", "asking the scheduler for capacity"
        now = stamp(self.clock())
        for f in ("create_time", "update_time", "state_time"):
            getattr(new, f).CopyFrom(now)
        new.workload = workload_name(new)
        new.replica_statuses.extend(
            RS(role=r.role, index=r.index, replica=r.name, rank=r.rank, state=RS.PENDING)  # type: ignore[arg-type]
            for r in replicas(spec)
        )
        if validate_only:
            return new
        s = StoredJob(new, {"attempt": -1}, 0, request_id or None)
        try:
            await self._insert(s, now)
        except sa_exc.IntegrityError:  # a concurrent create of the same name or request id won
            async with self.db.connect() as conn:
                earlier = await JobStore(conn).by_request_id(request_id) if request_id else None
            if earlier is not None and earlier.name == name:
                return earlier.job
            raise AlreadyExists("JOB_ALREADY_EXISTS", f"{name} already exists", job=name) from None
        self.kick()
        return s.job

    async def resolve_data(
        self, owner: str, spec: JobSpec, where: str = "job.spec", *, pinned: bool = False
    ) -> None:
        """Fill every data source's `resolved_uri`; a dataset version (`@latest` included) is asked of
        lineage and recorded by its concrete name, so the job says exactly which data it read.

        `pinned`: a sweep's trial, whose template the sweep resolved at create (a caller's own
        `resolved_uri` never gets here: CreateJob resolves every source), so lineage is not asked again.
        """
        ws = owner.split("/")[1]
        for i, ds in enumerate(spec.data_sources):
            field = f"{where}.data_sources[{i}].dataset_version"
            if not ds.dataset_version:
                ds.resolved_uri = ds.uri
                continue
            if pinned and ds.resolved_uri:
                continue
            if not same_workspace(owner, ds.dataset_version):
                message = f"{ds.dataset_version} is not in workspace {ws}"
                raise InvalidArgument(
                    "INVALID_JOB_SPEC", message, violations=[FieldViolation(field, message)]
                )
            if self.datasets is None:
                raise Unavailable(
                    "LINEAGE_UNAVAILABLE",
                    "this dlc has no lineage to resolve dataset versions with; give a uri",
                )
            found = await self.datasets.resolve(field, ds.dataset_version)
            ds.dataset_version, ds.resolved_uri = found.name, found.uri

    async def _insert(self, s: StoredJob, now: timestamp_pb2.Timestamp) -> None:
        async with self.tx() as store:
            await store.insert(s)
            await store.record(
                s,
                job_pb2.JobEvent(
                    severity=job_pb2.JobEvent.INFO,
                    state=State.CREATING,
                    reason="CREATED",
                    message="job created",
                    create_time=now,
                ),
            )
            await store.publish("pai.dlc.job.created", events_pb2.JobCreated(job=s.job))

    async def get(self, name: str) -> StoredJob:
        async with self.db.connect() as conn:
            s = await JobStore(conn).get(name)
        if s is None:
            raise NotFound("JOB_NOT_FOUND", f"{name} does not exist", job=name)
        return s

    async def stop_job(self, name: str, etag: str, grace: float | None = None) -> job_pb2.Job:
        """Stop a job; `grace` is SIGTERM → SIGKILL (None: the server's default, 0: SIGKILL at once)."""
        async with self.lock(name):
            s = await self.get(name)
            check_etag(etag, s.job.etag, resource=s.name)
            if s.state in (State.SUCCEEDED, State.FAILED):
                raise FailedPrecondition(
                    "ILLEGAL_STATE_TRANSITION",
                    f"{name} already {Job.State.Name(s.state).lower()}; there is nothing to stop",  # type: ignore[arg-type]
                    job=name,
                )
            if s.state in (State.STOPPED, State.STOPPING):
                return s.job
            if grace is not None:
                s.runtime["stop_grace"] = grace
            if s.state in (State.CREATING, State.QUEUED, State.PREEMPTED) and not s.runtime.get("handles"):

                async def stop_now(store: JobStore) -> None:
                    await self._move(
                        store, s, State.STOPPED, "STOP_REQUESTED", "stopped by a user before it ran"
                    )
                    s.runtime["finish"] = int(WO.CANCELLED)

                await self._write(s, stop_now)
                await self._report_finish(s)
            else:

                async def stopping(store: JobStore) -> None:
                    await self._move(store, s, State.STOPPING, "STOP_REQUESTED", "stopping every replica")

                await self._write(s, stopping)
        self.kick()
        return s.job

    async def restart_job(self, name: str, etag: str) -> job_pb2.Job:
        """Restart a running gang from its newest checkpoint; does not count against `max_restarts`."""
        async with self.lock(name):
            s = await self.get(name)
            check_etag(etag, s.job.etag, resource=s.name)
            if s.state not in ACTIVE:
                raise FailedPrecondition(
                    "ILLEGAL_STATE_TRANSITION",
                    f"{name} is {Job.State.Name(s.state)}; only a STARTING or RUNNING job restarts",  # type: ignore[arg-type]
                    job=name,
                )

            async def restarting(store: JobStore) -> None:
                # the handles stay stored: the RESTARTING step kills the gang, so a crash between
                # killing and writing can never be judged a replica failure
                await self._move(
                    store,
                    s,
                    State.RESTARTING,
                    "RESTART_REQUESTED",
                    "restarting every replica, as a user asked",
                )

            await self._write(s, restarting)
        self.kick()
        return s.job

    async def delete(self, name: str, etag: str, force: bool = False) -> None:
        """Delete a terminal job with its logs and history (checkpoints and outputs stay); with
        `force`, a job that is not terminal is stopped first, no process of it left."""
        async with self.lock(name):
            s = await self.get(name)
            check_etag(etag, s.job.etag, resource=s.name)
            if s.state not in TERMINAL:
                if not force:
                    raise FailedPrecondition(
                        "JOB_NOT_TERMINAL",
                        f"{name} is {Job.State.Name(s.state)}; stop it first (or delete with force)",  # type: ignore[arg-type]
                        job=name,
                    )
                if s.runtime.get("launching") is not None:
                    await self._kill_unrecorded(s, int(s.runtime["launching"]))
                handles = self._handles(s)
                if handles:
                    await self._engine(s).kill(handles, self.options.kill_grace)
                s.runtime["handles"] = []
                s.runtime["finish"] = int(WO.CANCELLED)
            if "finish" in s.runtime:  # the scheduler must hear how it ended before the record goes
                await self._report_finish(s)
                if "finish" in s.runtime:
                    raise FailedPrecondition(
                        "JOB_NOT_TERMINAL",
                        f"{name} ended but the scheduler has not heard yet (it is unreachable); retry",
                        job=name,
                    )
            async with self.tx() as store:
                await store.delete(s)
                await store.publish("pai.dlc.job.deleted", events_pb2.JobDeleted(job=s.job))
        self._locks.pop(name, None)
        # the replicas' logs (and with them the reported metrics) go with the job
        await asyncio.to_thread(_remove_attempts, self.options.storage_root / "jobs" / s.job.uid)

    async def update(self, name: str, etag: str, apply: Callable[[job_pb2.Job], None]) -> job_pb2.Job:
        """Change a job's descriptive fields; a given `etag` must be the current one."""
        async with self.lock(name):
            fresh = await self.get(name)
            check_etag(etag, fresh.job.etag, resource=fresh.name)
            apply(fresh.job)

            async def publish(store: JobStore) -> None:
                await store.publish("pai.dlc.job.updated", events_pb2.JobUpdated(job=fresh.job))

            await self._write(fresh, publish)
        return fresh.job

    # ---- scheduler events ----------------------------------------------------------------------

    async def on_scheduler_event(self, event: Event, conn: AsyncConnection) -> None:
        """Note a scheduler fact for the job it is about (in the inbox transaction).

        The handler only appends: it holds the inbox transaction, so waiting here for a job's lock
        (held by a step that is about to write) would deadlock on SQLite's single writer. The job's
        next step applies the facts under its lock.
        """
        msg = event.message
        kind = FACT_KINDS.get(type(msg))
        if kind is None or msg is None:
            return
        w = msg.workload  # type: ignore[attr-defined]
        if w.owner_kind != workload_pb2.Workload.DLC_JOB or not w.owner:
            return
        await JobStore(conn).add_fact(w.owner, kind, w.SerializeToString())
        self.kick()

    async def on_lineage_event(self, event: Event, conn: AsyncConnection) -> None:
        """Lineage's registrations of job outputs (a consumer of its own beside the scheduler's)."""
        if isinstance(event.message, lineage_events.ModelVersionCreated):
            await self.on_model_registered(event.message.model_version, JobStore(conn))

    async def on_model_registered(self, v: model_pb2.ModelVersion, store: JobStore) -> None:
        """Lineage registered the output of a job as a model version: say so on the job.

        Only a SUCCEEDED job that asked for that model, has no version yet and whose output directory is
        the version's artifact takes it: a version registered by hand with `source_job`, or the output of
        an earlier job deleted and created again under the same name, is left alone. A concurrent write
        of the job aborts this transaction, and the event comes again.
        """
        if not v.source_job or not v.name:
            return
        s = await store.get(v.source_job)
        if s is None or s.state != State.SUCCEEDED or s.job.output_model_version:
            return
        ours = (
            v.name.rsplit("/versions/", 1)[0] == s.job.spec.output_model
            and v.artifact_uri == s.job.spec.output_uri
            and not (v.HasField("create_time") and v.create_time.ToDatetime() < s.job.end_time.ToDatetime())
        )
        if not ours:
            return
        s.job.output_model_version = v.name
        await store.record(
            s,
            job_pb2.JobEvent(
                severity=job_pb2.JobEvent.INFO,
                state=s.job.state,
                previous_state=s.job.state,
                reason="MODEL_REGISTERED",
                message=f"the output directory is registered as model version {v.name}",
                attempt=int(s.runtime.get("attempt", 0)),
                create_time=stamp(self.clock()),
            ),
        )
        await store.save(s)
        await store.publish("pai.dlc.job.updated", events_pb2.JobUpdated(job=s.job))
        log.info("%s: output registered as %s", s.name, v.name)

    async def _apply_fact(self, store: JobStore, s: StoredJob, kind: str, w: workload_pb2.Workload) -> None:
        """Act on one scheduler fact about `s` (under the job's lock, in the step's transaction)."""
        if s.job.workload != w.name or s.state in TERMINAL:
            return
        if kind in ("finished", "deleted"):  # someone else ended the job's workload
            if s.state != State.STOPPING and "finish" not in s.runtime:
                how = "finished" if kind == "finished" else "deleted"
                s.runtime["lost_workload"] = f"the scheduler's workload {w.name} was {how} outside dlc"
            return
        seen = int(s.runtime.get("workload_version", 0))
        if w.version and w.version <= seen:
            return  # an older snapshot than one already applied
        s.runtime["workload_version"] = int(w.version)
        if kind == "admitted":
            s.runtime["admitted"] = {"nodes": placement_summary(w.placements), "version": int(w.version)}
            s.runtime.pop("preempt", None)
            if s.state == State.CREATING:
                await self._move(store, s, State.QUEUED, "WAITING_FOR_ADMISSION", "queued")
            if s.state == State.QUEUED:
                where = s.runtime["admitted"]["nodes"]
                await self._move(
                    store, s, State.STARTING, "ADMITTED", f"admitted on {where}; starting replicas"
                )
        elif kind in ("preempted", "evicted"):
            deadline = w.preemption.deadline.ToDatetime(dt.UTC) if w.HasField("preemption") else self.clock()
            why = w.preemption.message if w.HasField("preemption") else ""
            if kind == "evicted":
                why = why or "its node is gone"
            s.runtime["preempt"] = {"deadline": deadline.isoformat(), "message": why or "preempted"}
        elif s.state in (State.CREATING, State.QUEUED) and w.pending_reason:
            s.job.message = f"waiting for admission: {w.pending_reason}"

    # ---- the step ------------------------------------------------------------------------------

    async def step(self, name: str) -> None:
        async with self.lock(name):
            async with self.db.connect() as conn:
                s = await JobStore(conn).get(name)
                facts = await JobStore(conn).facts(name)
            if facts:
                async with self.tx() as store:
                    if s is not None:
                        for _, kind, data in facts:
                            await self._apply_fact(store, s, kind, workload_pb2.Workload.FromString(data))
                        await store.save(s)
                    await store.drop_facts(name, facts[-1][0])
            if s is None:
                return
            if s.state in TERMINAL:
                await self._report_finish(s)
                return
            if s.runtime.get("lost_workload") and s.state != State.STOPPING:
                await self._lose_workload(s)
                return
            handlers: dict[int, Callable[[StoredJob], Awaitable[None]]] = {
                State.CREATING: self._step_creating,
                State.QUEUED: self._step_queued,
                State.STARTING: self._step_starting,
                State.RUNNING: self._step_running,
                State.RESTARTING: self._step_restarting,
                State.PREEMPTED: self._step_preempted,
                State.STOPPING: self._step_stopping,
            }
            handler = handlers.get(s.state)
            if handler is not None:
                await handler(s)

    async def _lose_workload(self, s: StoredJob) -> None:
        """The job's capacity is gone for good (its workload was finished or deleted by someone else):
        stop the gang and fail the job, saying so."""
        handles = self._handles(s)
        if handles:
            await self._engine(s).kill(handles, self.options.kill_grace)
            self._record_exits(s, self._engine(s).poll(handles))
        msg = f"{s.runtime['lost_workload']}; the job can no longer run"

        async def fail(store: JobStore) -> None:
            await self._move(store, s, State.FAILED, "WORKLOAD_LOST", msg, warning=True)
            s.runtime["handles"] = []
            s.runtime.pop("launching", None)

        await self._write(s, fail)

    async def _report_finish(self, s: StoredJob) -> None:
        outcome = s.runtime.get("finish")
        if outcome is None:
            return
        try:
            await self.scheduler.finish(s.job.workload, int(outcome), s.job.message)
        except grpc.aio.AioRpcError as e:
            if e.code() not in PERMANENT:
                log.warning("finishing %s: %s (will retry)", s.job.workload, describe(e))
                return
            log.warning("finishing %s: %s (giving up)", s.job.workload, describe(e))
        s.runtime.pop("finish", None)

        await self._write(s)

    async def _step_creating(self, s: StoredJob) -> None:
        try:
            w = await self.scheduler.create(s.job, self.options.preemption_grace)
        except grpc.aio.AioRpcError as e:
            if e.code() in PERMANENT:
                msg = f"the scheduler refused the job's workload: {describe(e)}"

                async def fail(store: JobStore) -> None:
                    await self._move(store, s, State.FAILED, "SCHEDULING_REJECTED", msg, warning=True)

                await self._write(s, fail)
                return
            message = f"the scheduler is unreachable ({describe(e)}); retrying"
            if s.job.message != message:
                s.job.message = message

                await self._write(s)
            return

        async def queued(store: JobStore) -> None:
            s.job.workload = w.name
            why = (
                f"waiting for admission: {w.pending_reason}" if w.pending_reason else "waiting for admission"
            )
            await self._move(store, s, State.QUEUED, "WAITING_FOR_ADMISSION", why)
            s.runtime["queued_at"] = self.clock().isoformat()

        await self._write(s, queued)

    async def _step_queued(self, s: StoredJob) -> None:
        timeout = s.job.spec.pending_timeout
        if not s.job.spec.HasField("pending_timeout"):
            return
        since = dt.datetime.fromisoformat(s.runtime.get("queued_at", self.clock().isoformat()))
        if (self.clock() - since).total_seconds() > timeout.ToTimedelta().total_seconds():
            msg = f"not admitted within the pending timeout ({timeout.ToTimedelta()}); {s.job.message}"

            async def fail(store: JobStore) -> None:
                await self._move(store, s, State.FAILED, "PENDING_TIMEOUT", msg, warning=True)
                s.runtime["finish"] = int(WO.CANCELLED)

            await self._write(s, fail)
            await self._report_finish(s)

    def _engine(self, s: StoredJob) -> Engine:
        engine = self.engines.get(s.job.spec.engine)
        if engine is None:
            raise EngineError(f"engine {JobSpec.Engine.Name(s.job.spec.engine)} is not configured")
        return engine

    def _handles(self, s: StoredJob) -> list[ReplicaHandle]:
        return [_handle(h) for h in s.runtime.get("handles", [])]

    async def _step_starting(self, s: StoredJob) -> None:
        if await self._preempt_if_asked(s):
            return
        if s.runtime.get("handles"):  # launched before a restart of dlc: watch it

            async def running(store: JobStore) -> None:
                await self._move(store, s, State.RUNNING, "RUNNING", "replicas running")

            await self._write(s, running)
            return
        launching = s.runtime.get("launching")
        if launching is not None:
            # dlc stopped (or a write failed) after this attempt's processes may have started and
            # before their handles were stored: stop whatever runs of it, then start it again
            await self._kill_unrecorded(s, int(launching))
            attempt = int(launching)
        else:
            attempt = int(s.runtime.get("attempt", -1)) + 1
        try:
            launch = self._attempt(s, attempt)
        except (OSError, ValueError) as e:
            await self._fail_launch(s, f"could not prepare the job's directories: {e}")
            return
        # the attempt is marked before anything starts, so a crash mid-launch is seen on recovery
        s.runtime["attempt"] = attempt
        s.runtime["launching"] = attempt
        s.runtime.setdefault("logs", {})[str(attempt)] = {}

        await self._write(s)
        try:
            handles = await self._engine(s).launch(launch)
        except EngineError as e:
            s.runtime.pop("launching", None)
            await self._fail_launch(s, f"could not start the replicas: {e}")
            return
        try:
            await self._record_launch(s, attempt, handles)
        except BaseException:
            # not recorded: nothing may run unwatched (the next step starts the attempt again)
            await asyncio.shield(self._engine(s).kill(handles, self.options.kill_grace))
            raise

    def _attempt(self, s: StoredJob, attempt: int) -> AttemptLaunch:
        spec = s.job.spec
        everyone = replicas(spec)
        cluster = Cluster(
            "127.0.0.1",
            free_port(),
            {r.name: free_port() for r in everyone} if spec.kind == JobSpec.TENSORFLOW else {},
        )
        run_dir = self.options.storage_root / "jobs" / s.job.uid / f"attempt-{attempt}"
        for uri in (spec.checkpoint_uri, spec.output_uri):
            local_path(uri).mkdir(parents=True, exist_ok=True)
        code = str(local_path(spec.code.uri)) if spec.code.uri else None
        return AttemptLaunch(
            job=s.name,
            uid=s.job.uid,
            attempt=attempt,
            run_dir=str(run_dir),
            replicas=tuple(
                ReplicaLaunch(
                    replica=r.name,
                    rank=r.rank,
                    command=(*r.spec.command, *r.spec.args, *hyperparameter_args(spec)),
                    env=replica_env(
                        job=s.name,
                        uid=s.job.uid,
                        spec=spec,
                        replica=r,
                        everyone=everyone,
                        cluster=cluster,
                        attempt=attempt,
                        restart_count=s.job.restart_count,
                    ),
                    cwd=code,
                )
                for r in everyone
            ),
        )

    async def _fail_launch(self, s: StoredJob, msg: str) -> None:
        async def fail(store: JobStore) -> None:
            await self._move(store, s, State.FAILED, "LAUNCH_FAILED", msg, warning=True)
            s.runtime["finish"] = int(WO.FAILED)

        await self._write(s, fail)
        await self._report_finish(s)

    async def _kill_unrecorded(self, s: StoredJob, attempt: int) -> None:
        """Kill the replicas of an attempt whose handles were never stored (the engine finds them)."""
        run_dir = self.options.storage_root / "jobs" / s.job.uid / f"attempt-{attempt}"
        found = await self._engine(s).unrecorded(str(run_dir), attempt)
        if found:
            log.warning(
                "%s: stopping %d replicas of attempt %d started before dlc stopped",
                s.name,
                len(found),
                attempt,
            )
            await self._engine(s).kill(found, self.options.kill_grace)

    async def _record_launch(self, s: StoredJob, attempt: int, handles: list[ReplicaHandle]) -> None:
        now = stamp(self.clock())
        s.runtime["handles"] = [dataclasses.asdict(h) for h in handles]
        s.runtime["logs"][str(attempt)] = {h.replica: h.log_path for h in handles}
        s.runtime["launched_ns"] = time.time_ns()
        s.runtime["exits"] = {}
        s.runtime.pop("launching", None)
        by_name = {h.replica: h for h in handles}
        for st in s.job.replica_statuses:
            h = by_name.get(st.replica)
            if h is None:
                continue
            st.state, st.attempt, st.pid, st.node, st.engine_ref = (
                RS.RUNNING,
                attempt,
                h.pid,
                h.node,
                h.engine_ref,
            )
            st.ClearField("exit_code")
            st.signal, st.message = 0, ""
            st.start_time.CopyFrom(now)
            st.ClearField("end_time")

        async def launched(store: JobStore) -> None:
            n = len(handles)
            await self._move(
                store,
                s,
                State.RUNNING,
                "RUNNING",
                f"{n} replica{'s' if n != 1 else ''} running (attempt {attempt})",
            )

        await self._write(s, launched)

    def _record_exits(self, s: StoredJob, exits: list[ReplicaExit]) -> dict[str, ReplicaExit]:
        stored: dict[str, Any] = s.runtime.setdefault("exits", {})
        for ex in exits:
            stored[ex.replica] = dataclasses.asdict(ex)
        by_name = {k: ReplicaExit(**v) for k, v in stored.items()}
        now = stamp(self.clock())
        for st in s.job.replica_statuses:
            end = by_name.get(st.replica)
            if end is None or st.state in (RS.SUCCEEDED, RS.FAILED):
                continue
            st.state = RS.SUCCEEDED if end.succeeded else RS.FAILED
            if end.exit_code is not None:
                st.exit_code = end.exit_code
            st.signal, st.message = end.signal, end.message
            st.end_time.CopyFrom(now)
        return by_name

    async def _step_running(self, s: StoredJob) -> None:
        if await self._preempt_if_asked(s):
            return
        engine = self._engine(s)
        handles = self._handles(s)
        exits = self._record_exits(s, engine.poll(handles))
        spec = s.job.spec
        everyone = replicas(spec)
        verdict = lifecycle.judge(spec, everyone, exits, s.job.restart_count)
        if verdict.action == "run":
            now = self.clock()
            if spec.HasField("active_deadline") and s.job.HasField("start_time"):
                limit = spec.active_deadline.ToTimedelta()
                if now - s.job.start_time.ToDatetime(dt.UTC) > limit:
                    verdict = lifecycle.Verdict(
                        "fail", "DEADLINE_EXCEEDED", f"the job ran longer than its active deadline ({limit})"
                    )
            # engines without local log files (kubernetes) have no hang detection here yet
            if (
                verdict.action == "run"
                and spec.HasField("log_silence_timeout")
                and any(h.log_path for h in handles)
            ):
                silence = spec.log_silence_timeout.ToTimedelta().total_seconds()
                last = max(
                    [
                        int(s.runtime.get("launched_ns", 0)),
                        *(_last_write_ns(h.log_path) for h in handles if h.log_path),
                    ]
                )
                quiet = (time.time_ns() - last) / 1e9
                if quiet > silence:
                    msg = f"no replica wrote a log line for {quiet:.0f} s (log silence timeout {silence:g} s)"
                    if s.job.restart_count >= spec.max_restarts:
                        verdict = lifecycle.Verdict("fail", "HANG_DETECTED", f"{msg}; no restart left")
                    else:
                        verdict = lifecycle.Verdict("restart", "HANG_DETECTED", f"{msg}; restarting the gang")
        if verdict.action == "run":
            if any(ex.replica not in s.runtime.get("seen_exits", []) for ex in exits.values()):
                s.runtime["seen_exits"] = sorted(exits)

                await self._write(s)
            return
        await engine.kill(handles, self.options.kill_grace)
        self._record_exits(s, engine.poll(handles))
        if verdict.culprit is not None:
            c = verdict.culprit
            r = next(r for r in everyone if r.name == c.replica)
            failure = job_pb2.JobFailure(
                role=r.role,  # type: ignore[arg-type]
                index=r.index,
                replica=r.name,
                rank=r.rank,
                attempt=int(s.runtime.get("attempt", 0)),
                signal=c.signal,
                message=c.message,
                details=c.details[-8000:],
                time=stamp(self.clock()),
            )
            if c.exit_code is not None:
                failure.exit_code = c.exit_code
            s.job.failure.CopyFrom(failure)
        if verdict.action == "succeed":
            # read off the loop: the logs of a long job are large, and only a model registration needs them
            final = await asyncio.to_thread(final_metrics, s) if spec.output_model else {}

            async def succeed(store: JobStore) -> None:
                await self._move(store, s, State.SUCCEEDED, verdict.reason, verdict.message)
                await store.publish(
                    "pai.dlc.job.succeeded",
                    events_pb2.JobSucceeded(
                        job=s.job,
                        model_artifact_uri=spec.output_uri,
                        model=spec.output_model,
                        final_metrics=final,
                    ),
                )
                s.runtime["finish"] = int(WO.SUCCEEDED)
                s.runtime["handles"] = []

            await self._write(s, succeed)
            await self._report_finish(s)
        elif verdict.action == "fail":

            async def fail(store: JobStore) -> None:
                await self._move(store, s, State.FAILED, verdict.reason, verdict.message, warning=True)
                s.runtime["finish"] = int(WO.FAILED)
                s.runtime["handles"] = []

            await self._write(s, fail)
            await self._report_finish(s)
        else:

            async def restart(store: JobStore) -> None:
                s.job.restart_count += 1
                await self._move(store, s, State.RESTARTING, verdict.reason, verdict.message, warning=True)
                s.runtime["handles"] = []

            await self._write(s, restart)

    async def _step_restarting(self, s: StoredJob) -> None:
        handles = self._handles(s)
        if handles:  # dlc stopped between deciding and killing
            await self._engine(s).kill(handles, self.options.kill_grace)
            s.runtime["handles"] = []
        if await self._preempt_if_asked(s):
            return

        async def starting(store: JobStore) -> None:
            n = s.job.restart_count
            await self._move(
                store,
                s,
                State.STARTING,
                "RESTARTING",
                f"restart {n}: starting every replica from the newest checkpoint",
            )

        await self._write(s, starting)

    async def _preempt_if_asked(self, s: StoredJob) -> bool:
        """Stop a preempted gang gracefully and give the capacity back; True when it did."""
        notice = s.runtime.get("preempt")
        if not notice:
            return False
        deadline = dt.datetime.fromisoformat(notice["deadline"])
        grace = max(1.0, min(self.options.kill_grace, (deadline - self.clock()).total_seconds()))
        handles = self._handles(s)
        if handles:
            await self._engine(s).kill(handles, grace)
            self._record_exits(s, self._engine(s).poll(handles))

        async def preempted(store: JobStore) -> None:
            s.job.preemption_count += 1
            msg = f"{notice['message']}; the job resumes from its newest checkpoint when admitted again"
            await self._move(store, s, State.PREEMPTED, "PREEMPTED", msg, warning=True)
            s.runtime["handles"] = []
            s.runtime.pop("preempt", None)
            s.runtime.pop("admitted", None)

        await self._write(s, preempted)
        await self._step_preempted(s)
        return True

    async def _step_preempted(self, s: StoredJob) -> None:
        try:
            w = await self.scheduler.requeue(s.job.workload, "preempted; the job waits to resume")
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:  # already pending again, or finished
                try:
                    w = await self.scheduler.get(s.job.workload)
                except grpc.aio.AioRpcError as e2:
                    if e2.code() == grpc.StatusCode.NOT_FOUND:
                        s.runtime["lost_workload"] = f"the scheduler's workload {s.job.workload} is gone"
                        await self._lose_workload(s)
                    return  # unreachable: retried next step
                if w.state == workload_pb2.Workload.FINISHED:
                    s.runtime["lost_workload"] = f"the scheduler's workload {w.name} was finished outside dlc"
                    await self._lose_workload(s)
                    return
                if w.state != workload_pb2.Workload.PENDING:
                    return  # the scheduler has not let it go yet: asked again next step
            elif e.code() in PERMANENT:
                msg = f"could not requeue the job's workload: {describe(e)}"

                async def fail(store: JobStore) -> None:
                    await self._move(store, s, State.FAILED, "REQUEUE_FAILED", msg, warning=True)

                await self._write(s, fail)
                return
            else:
                return  # retried next step

        async def queued(store: JobStore) -> None:
            why = (
                f"waiting for admission: {w.pending_reason}" if w.pending_reason else "waiting for admission"
            )
            await self._move(store, s, State.QUEUED, "WAITING_FOR_ADMISSION", why)
            s.runtime["queued_at"] = self.clock().isoformat()

        await self._write(s, queued)

    async def _step_stopping(self, s: StoredJob) -> None:
        handles = self._handles(s)
        if handles:
            grace = float(s.runtime.get("stop_grace", self.options.kill_grace))
            await self._engine(s).kill(handles, grace)
            self._record_exits(s, self._engine(s).poll(handles))

        async def stopped(store: JobStore) -> None:
            await self._move(
                store, s, State.STOPPED, "STOP_REQUESTED", "stopped by a user; every replica is gone"
            )
            s.runtime["handles"] = []
            s.runtime["finish"] = int(WO.CANCELLED)

        await self._write(s, stopped)
        await self._report_finish(s)


def _remove_attempts(job_dir: pathlib.Path) -> None:
    for attempt in job_dir.glob("attempt-*"):
        shutil.rmtree(attempt, ignore_errors=True)


def _last_write_ns(path: str) -> int:
    try:
        return pathlib.Path(path).stat().st_mtime_ns
    except FileNotFoundError:
        return 0
