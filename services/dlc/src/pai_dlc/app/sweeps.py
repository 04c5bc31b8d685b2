"""Sweeps: fan a search space out into ordinary jobs and report the best trial.

Each trial is a job created through the job controller (same admission, restarts, logs), with the
trial's assignment merged into the template's hyperparameters. The sweep's step reads its trials'
jobs and reported metrics, stops unpromising ones (median rule), starts new ones up to the
parallelism, and ends the sweep when the trials are done, the target is reached, or too many failed.
Job creation is idempotent per trial (request id = sweep uid + trial number), so a crash between
creating a job and recording it creates nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable

from sqlalchemy import exc as sa_exc

from pai.dlc.v1 import events_pb2, job_pb2, sweep_pb2
from pai_common.clock import utcnow
from pai_common.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from pai_common.etags import check_etag
from pai_dlc.app import metrics
from pai_dlc.app.controller import Controller
from pai_dlc.db.store import JobStore, StoredSweep, SweepStore, stamp
from pai_dlc.model import sweep as search
from pai_dlc.model.spec import normalize, validate

log = logging.getLogger(__name__)

Sweep = sweep_pb2.Sweep
Trial = sweep_pb2.Trial
Job = job_pb2.Job
ACTIVE = ("RUNNING", "STOPPING")
TRIAL_OF_JOB = {
    Job.SUCCEEDED: Trial.SUCCEEDED,
    Job.FAILED: Trial.FAILED,
    Job.STOPPED: Trial.STOPPED,
}
# what a STOPPING sweep becomes once its trials have ended, by the reason it is stopping
FINAL = {
    "STOP_REQUESTED": (Sweep.STOPPED, "STOPPED", "stopped by a user"),
    "MAX_FAILED_TRIALS_REACHED": (Sweep.FAILED, "MAX_FAILED_TRIALS_REACHED", ""),
    "GOAL_REACHED": (Sweep.SUCCEEDED, "GOAL_REACHED", ""),
}
DONE = (Trial.SUCCEEDED, Trial.FAILED, Trial.EARLY_STOPPED, Trial.STOPPED)


class SweepController:
    def __init__(self, jobs: Controller, on_commit: Callable[[], None] = lambda: None) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.on_commit = on_commit
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[SweepStore]:
        async with self.db.begin() as conn:
            store = SweepStore(conn)
            yield store
        if store.outbox.added:
            self.on_commit()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dlc-sweeps")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                async with self.db.connect() as conn:
                    names = await SweepStore(conn).names_in_states(ACTIVE)
                for name in names:
                    if self._stopping:
                        break
                    try:
                        await self.step(name)
                    except Exception:
                        log.exception("step of %s failed", name)
            except Exception:
                log.exception("sweep pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.5, self.jobs.options.poll_interval * 2))
            self._wake.clear()

    # ---- API -----------------------------------------------------------------------------------

    async def create(
        self,
        parent: str,
        sweep_id: str,
        sweep: sweep_pb2.Sweep,
        request_id: str,
        creator: str,
        validate_only: bool,
    ) -> sweep_pb2.Sweep:
        name = f"{parent}/sweeps/{sweep_id}"
        async with self.db.connect() as conn:
            store = SweepStore(conn)
            if request_id and (earlier := await store.by_request_id(request_id)) is not None:
                if earlier.name != name:
                    raise FailedPrecondition(
                        "REQUEST_ID_REUSED", f"request_id was used to create {earlier.name}"
                    )
                return earlier.sweep
            if await store.get(name) is not None:
                raise AlreadyExists("SWEEP_ALREADY_EXISTS", f"{name} already exists", sweep=name)
        spec = sweep_pb2.SweepSpec()
        spec.CopyFrom(sweep.spec)
        if spec.algorithm.type == sweep_pb2.Algorithm.TYPE_UNSPECIFIED:
            spec.algorithm.type = sweep_pb2.Algorithm.GRID
        if spec.algorithm.type == sweep_pb2.Algorithm.RANDOM and not spec.algorithm.seed:
            spec.algorithm.seed = uuid.uuid4().int % (1 << 62)
        violations = search.validate(spec)
        # once for every trial: `@latest` is pinned to one version, and a bad reference fails here
        await self.jobs.resolve_data(name, spec.job_template, "sweep.spec.job_template")
        template = normalize(
            spec.job_template, default_engine=self.jobs.options.default_engine,
            storage_root=self.jobs.options.storage_root, uid="template",
        )  # fmt: skip
        violations += [
            type(v)(v.field.replace("job.spec", "sweep.spec.job_template"), v.description)
            for v in validate(template, engines=frozenset(self.jobs.engines), workspace=parent)
        ]
        if violations:
            raise InvalidArgument(
                "INVALID_SWEEP_SPEC",
                violations[0].description,
                violations=[FieldViolation(v.field, v.description) for v in violations],
            )
        new = Sweep()
        new.CopyFrom(sweep)
        new.spec.CopyFrom(spec)
        new.name, new.uid, new.creator = name, str(uuid.uuid4()), creator
        new.state = Sweep.RUNNING
        new.reason, new.message = "RUNNING", "starting trials"
        now = stamp(utcnow())
        for f in ("create_time", "update_time", "state_time"):
            getattr(new, f).CopyFrom(now)
        new.trial_counts.total = len(search.assignments(spec))
        new.trial_counts.pending = new.trial_counts.total
        if validate_only:
            return new
        s = StoredSweep(new, 0, request_id or None)
        try:
            async with self.tx() as store:
                await store.insert(s)
                await store.publish("pai.dlc.sweep.created", events_pb2.SweepCreated(sweep=s.sweep))
        except sa_exc.IntegrityError:  # a concurrent create of the same name or request id won
            async with self.db.connect() as conn:
                earlier = await SweepStore(conn).by_request_id(request_id) if request_id else None
            if earlier is not None and earlier.name == name:
                return earlier.sweep
            raise AlreadyExists("SWEEP_ALREADY_EXISTS", f"{name} already exists", sweep=name) from None
        self._wake.set()
        return s.sweep

    async def get(self, name: str) -> StoredSweep:
        async with self.db.connect() as conn:
            s = await SweepStore(conn).get(name)
        if s is None:
            raise NotFound("SWEEP_NOT_FOUND", f"{name} does not exist", sweep=name)
        return s

    async def trials(self, s: StoredSweep) -> list[sweep_pb2.Trial]:
        async with self.db.connect() as conn:
            return await SweepStore(conn).trials(s)

    async def stop_sweep(self, name: str) -> sweep_pb2.Sweep:
        async with self.lock(name):
            s = await self.get(name)
            if s.sweep.state != Sweep.RUNNING:
                return s.sweep
            async with self.tx() as store:
                await self._move(store, s, Sweep.STOPPING, "STOP_REQUESTED", "stopping every running trial")
                await store.save(s)
        self._wake.set()
        return s.sweep

    async def update(self, name: str, etag: str, apply: Callable[[sweep_pb2.Sweep], None]) -> sweep_pb2.Sweep:
        async with self.lock(name):
            s = await self.get(name)
            check_etag(etag, s.sweep.etag, resource=name)
            apply(s.sweep)
            async with self.tx() as store:
                await store.publish("pai.dlc.sweep.updated", events_pb2.SweepUpdated(sweep=s.sweep))
                await store.save(s)
        return s.sweep

    async def delete(self, name: str) -> None:
        async with self.lock(name):
            s = await self.get(name)
            if s.sweep.state in (Sweep.RUNNING, Sweep.STOPPING):
                raise FailedPrecondition(
                    "SWEEP_NOT_TERMINAL", f"{name} is running; stop it first", sweep=name
                )
            async with self.tx() as store:
                await store.delete(s)
                await store.publish("pai.dlc.sweep.deleted", events_pb2.SweepDeleted(sweep=s.sweep))

    # ---- the step ------------------------------------------------------------------------------

    async def _move(self, store: SweepStore, s: StoredSweep, state: int, reason: str, message: str) -> None:
        prev = s.sweep.state
        s.sweep.state = state  # type: ignore[assignment]
        s.sweep.reason, s.sweep.message = reason, message
        now = stamp(utcnow())
        s.sweep.state_time.CopyFrom(now)
        if state in (Sweep.SUCCEEDED, Sweep.FAILED, Sweep.STOPPED):
            s.sweep.end_time.CopyFrom(now)
        await store.publish(
            "pai.dlc.sweep.state_changed", events_pb2.SweepStateChanged(sweep=s.sweep, previous_state=prev)
        )
        log.info("%s: %s (%s) %s", s.name, Sweep.State.Name(state), reason, message)  # type: ignore[arg-type]

    async def step(self, name: str) -> None:
        async with self.lock(name):
            s = await self.get(name)
            spec = s.sweep.spec
            plan = search.assignments(spec)
            async with self.db.connect() as conn:
                trials = await SweepStore(conn).trials(s)
                jobs = {t.job: await JobStore(conn).get(t.job) for t in trials if t.job}
            changed: list[tuple[int, Trial, bool]] = []  # (seq, trial, new)
            completed: list[list[tuple[int, float]]] = []
            series: dict[str, list[tuple[int, float]]] = {}
            for seq, t in enumerate(trials):
                stored = jobs.get(t.job) if t.job else None
                done_before = t.state in DONE
                pts: list[tuple[int, float]] = []
                if stored is not None and (not done_before or spec.HasField("early_stopping")):
                    pts = await asyncio.to_thread(metrics.series_of, stored, spec.objective.metric_key)
                series[t.name] = pts
                before = Trial()
                before.CopyFrom(t)
                value = search.objective(pts, spec.objective) if not done_before else None
                if value is not None:
                    t.objective_value = value
                for key in spec.objective.additional_metric_keys if not done_before else ():
                    extra = await asyncio.to_thread(metrics.series_of, stored, key) if stored else []
                    if extra:
                        t.metrics[key] = extra[-1][1]
                if stored is None and t.state not in DONE:
                    t.state, t.reason, t.message = Trial.FAILED, "JOB_DELETED", f"{t.job} was deleted"
                elif stored is not None and t.state not in DONE:
                    job = stored.job
                    if job.state in TRIAL_OF_JOB:
                        t.state = TRIAL_OF_JOB[job.state]
                        t.reason, t.message = job.reason, job.message
                        t.end_time.CopyFrom(job.end_time)
                    elif job.state in (Job.RUNNING, Job.STARTING, Job.RESTARTING):
                        t.state = Trial.RUNNING
                        if job.HasField("start_time"):
                            t.start_time.CopyFrom(job.start_time)
                if t.state == Trial.SUCCEEDED and pts:
                    completed.append(pts)
                if t != before:
                    t.update_time.CopyFrom(stamp(utcnow()))
                    changed.append((seq, t, False))
            best: Trial | None = None
            for t in trials:
                if (
                    t.state == Trial.SUCCEEDED
                    and t.HasField("objective_value")
                    and (
                        best is None
                        or search.better(t.objective_value, best.objective_value, spec.objective.goal)
                    )
                ):
                    best = t
            failed = sum(1 for t in trials if t.state == Trial.FAILED)
            # why the sweep ends (when it does): a user's stop, too many failures, the target
            end: tuple[int, str, str] | None = None
            if s.sweep.state == Sweep.STOPPING:
                end = FINAL.get(s.sweep.reason, (Sweep.STOPPED, "STOPPED", "stopped by a user"))
                end = (end[0], end[1], s.sweep.message if end[1] != "STOPPED" else end[2])
            elif spec.HasField("max_failed_trials") and failed > spec.max_failed_trials:
                end = (Sweep.FAILED, "MAX_FAILED_TRIALS_REACHED", f"{failed} trials failed")
            elif best is not None and search.reached(best.objective_value, spec.objective):
                end = (Sweep.SUCCEEDED, "GOAL_REACHED", f"{best.name} reached the target")
            if spec.HasField("early_stopping") and end is None:
                rule = spec.early_stopping
                for seq, t in enumerate(trials):
                    if t.state != Trial.RUNNING:
                        continue
                    if search.median_stop(
                        series.get(t.name, []), completed, spec.objective.goal, rule.min_trials_required,
                        rule.start_step,
                    ):  # fmt: skip
                        await self._stop_trial_job(t.job)
                        t.state, t.reason = Trial.EARLY_STOPPED, "EARLY_STOPPED"
                        t.message = "worse than the median of the completed trials (median stopping rule)"
                        changed.append((seq, t, False))
            active = [t for t in trials if t.state in (Trial.PENDING, Trial.RUNNING)]
            if end is None:  # start new trials up to the parallelism
                while len(active) < max(1, spec.parallelism) and len(trials) < len(plan):
                    seq = len(trials)
                    trial = await self._start_trial(s, seq, plan[seq])
                    trials.append(trial)
                    active.append(trial)
                    changed.append((seq, trial, True))
                if len(trials) == len(plan) and not active:
                    if best is not None:
                        end = (Sweep.SUCCEEDED, "SUCCEEDED", f"every trial ended; the best is {best.name}")
                    else:
                        end = (Sweep.FAILED, "NO_SUCCESSFUL_TRIAL", "every trial ended and none succeeded")
            elif active:  # ending: stop what still runs, and end once it has
                for t in active:
                    await self._stop_trial_job(t.job)
            move: tuple[int, str, str] | None = None
            if end is not None:
                if active and s.sweep.state == Sweep.RUNNING:
                    move = (Sweep.STOPPING, end[1], end[2])
                elif not active:
                    move = end
            counts = sweep_pb2.TrialCounts(total=len(plan))
            for t in trials:
                field = Trial.State.Name(t.state).lower()
                setattr(counts, field, getattr(counts, field) + 1)
            counts.pending += len(plan) - len(trials)
            if not changed and move is None and counts == s.sweep.trial_counts:
                return
            async with self.tx() as store:
                for seq, t, new in changed:
                    await store.put_trial(s, seq, t, new=new)
                    if new:
                        await store.publish("pai.dlc.trial.created", events_pb2.TrialCreated(trial=t))
                    elif t.state in DONE:
                        await store.publish(
                            "pai.dlc.trial.completed", events_pb2.TrialCompleted(trial=t, sweep=s.name)
                        )
                s.sweep.trial_counts.CopyFrom(counts)
                if best is not None:
                    s.sweep.best_trial.CopyFrom(best)
                if move is not None and s.sweep.state != move[0]:
                    await self._move(store, s, *move)
                await store.save(s)

    async def _stop_trial_job(self, job: str) -> None:
        with contextlib.suppress(FailedPrecondition, NotFound):  # it ended (or went) meanwhile
            await self.jobs.stop_job(job, "")

    async def _start_trial(self, s: StoredSweep, seq: int, assignment: dict[str, str]) -> sweep_pb2.Trial:
        spec = s.sweep.spec
        workspace, sweep_id = s.name.split("/")[1], s.name.split("/")[3]
        trial_id = f"trial-{seq}"
        trial_name = f"{s.name}/trials/{trial_id}"
        job = Job(display_name=f"{sweep_id} {trial_id}", labels={"pai.dev/sweep": sweep_id})
        job.spec.CopyFrom(spec.job_template)
        job.spec.hyperparameters.update(assignment)
        # trials never share checkpoints or outputs: each gets its own directory under the template's
        for field in ("checkpoint_uri", "output_uri"):
            if getattr(spec.job_template, field):
                setattr(job.spec, field, getattr(spec.job_template, field).rstrip("/") + f"/{trial_id}")
        # the job id carries the sweep's uid: a sweep created again under the same id, or a user's
        # own job, never collides with a trial's job
        job_id = f"{sweep_id[:40].rstrip('-')}-{s.sweep.uid[:8]}-{seq}"
        now = stamp(utcnow())
        assignments = [sweep_pb2.ParameterAssignment(name=k, value=v) for k, v in assignment.items()]
        try:
            created = await self.jobs.create(
                f"workspaces/{workspace}", job_id, job, f"{s.sweep.uid}-{seq}", s.sweep.creator, False,
                trial=trial_name,
            )  # fmt: skip
        except DomainError as e:  # the trial fails with the reason; the sweep goes on
            return Trial(
                name=trial_name,
                parameter_assignments=assignments,
                state=Trial.FAILED,
                reason="JOB_NOT_CREATED",
                message=f"its job could not be created: {e.message}",
                create_time=now,
                update_time=now,
                end_time=now,
            )
        return Trial(
            name=trial_name,
            parameter_assignments=assignments,
            job=created.name,
            state=Trial.PENDING,
            reason="CREATED",
            message=f"job {created.name} created",
            create_time=now,
            update_time=now,
        )
