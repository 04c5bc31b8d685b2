"""One step per job state: what the reconciler does for a job in that state, once.

Each step reads nothing itself (the reconciler hands it the job, facts applied), talks to the
scheduler or the job's engine, lets the domain decide, and saves the job with its history and
events in one transaction. A step that cannot finish (the scheduler is unreachable) leaves the job
as it was, and the next step tries again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from pai_common.clock import utcnow
from pai_common.errors import Code
from pai_common.events import OutboxEvent
from pai_dlc.app import metrics
from pai_dlc.app.common import Options, save
from pai_dlc.app.gangs import Finisher, Gangs
from pai_dlc.app.ports import RemoteError, Scheduler, UnitOfWorkFactory
from pai_dlc.domain import attempts, verdict
from pai_dlc.domain.job import Job, JobState
from pai_dlc.domain.runtime import Outcome
from pai_dlc.domain.verdict import Action, Verdict
from pai_dlc.mapping import jobs as mapping
from pai_runtime.types import BackendError

log = logging.getLogger(__name__)
S = JobState


class Steps:
    def __init__(
        self,
        uows: UnitOfWorkFactory,
        scheduler: Scheduler,
        gangs: Gangs,
        finisher: Finisher,
        options: Options,
    ) -> None:
        self.uows = uows
        self.scheduler = scheduler
        self.gangs = gangs
        self.finisher = finisher
        self.options = options

    async def creating(self, job: Job) -> None:
        """Ask the scheduler for the job's workload (a retry finds the one an earlier try made)."""
        try:
            w = await self.scheduler.create(job)
        except RemoteError as e:
            if e.permanent:
                job.end(
                    S.FAILED,
                    "SCHEDULING_REJECTED",
                    f"the scheduler refused the job's workload: {e}",
                    utcnow(),
                    None,
                )
                await save(self.uows, job)
            else:
                message = f"the scheduler is unreachable ({e}); retrying"
                if job.message != message:
                    job.message = message
                    await save(self.uows, job)
            return
        job.workload = w.name
        job.queued(w.pending_reason, utcnow())
        await save(self.uows, job)

    async def queued(self, job: Job) -> None:
        """Wait for admission (a fact); fail when the pending timeout passes first."""
        why = verdict.pending_too_long(job.spec, job.runtime.queued_at, utcnow())
        if why is None:
            return
        await self._end(job, S.FAILED, "PENDING_TIMEOUT", f"{why}; {job.message}", Outcome.CANCELLED)

    async def starting(self, job: Job) -> None:
        """Start the next attempt's replicas (after stopping any a crashed dlc left unrecorded)."""
        if await self.preempt_if_asked(job):
            return
        if job.runtime.handles:  # launched before a restart of dlc: watch it
            job.transition_to(S.RUNNING, "RUNNING", "replicas running", utcnow())
            await save(self.uows, job)
            return
        attempt = attempts.next_attempt(job)
        if job.runtime.launching is not None:
            # dlc stopped (or a write failed) after this attempt's processes may have started and
            # before their handles were stored: stop whatever runs of it, then start it again
            await self.gangs.kill_unrecorded(job, attempt)
        try:
            gang = self.gangs.plan(job, attempt)
        except BackendError as e:  # no such engine, or what it cannot run (a PyTorchJob's limits)
            await self._fail_launch(job, f"could not start the replicas: {e}")
            return
        except (OSError, ValueError) as e:
            await self._fail_launch(job, f"could not prepare the job's directories: {e}")
            return
        attempts.begin(job, attempt)  # stored before anything starts, so a crash mid-launch is seen
        await save(self.uows, job)
        backend = self.gangs.runner(job).backend
        try:
            handles = await backend.launch(gang)
        except BackendError as e:
            job.runtime.launching = None
            await self._fail_launch(job, f"could not start the replicas: {e}")
            return
        try:
            attempts.launched(job, attempt, handles, utcnow(), time.time_ns())
            await self.record_launch(job)
        except BaseException:
            # not recorded: nothing may run unwatched (the next step starts the attempt again)
            await asyncio.shield(backend.kill(handles, self.options.kill_grace))
            raise

    async def record_launch(self, job: Job) -> None:
        """Store the started attempt (a seam the crash tests cut)."""
        await save(self.uows, job)

    async def _fail_launch(self, job: Job, message: str) -> None:
        await self._end(job, S.FAILED, "LAUNCH_FAILED", message, Outcome.FAILED)

    async def _end(
        self,
        job: Job,
        state: JobState,
        reason: str,
        message: str,
        outcome: Outcome,
        announce: Callable[[Job], OutboxEvent] | None = None,
    ) -> None:
        """End the job (with the event `announce` makes of the ended job, in the same transaction)
        and tell the scheduler how."""
        job.end(state, reason, message, utcnow(), outcome)
        await save(self.uows, job, *([announce(job)] if announce else []))
        await self.finisher.report(job)

    async def running(self, job: Job) -> None:
        """Watch the replicas: keep running, or succeed, restart or fail the whole gang."""
        if await self.preempt_if_asked(job):
            return
        backend = self.gangs.runner(job).backend
        new_exits = attempts.ended(job, backend.poll(job.runtime.handles), utcnow())
        quiet = self.gangs.quiet_seconds(job) if job.spec.log_silence_timeout is not None else None
        v = job.judge(utcnow(), quiet)
        if v.action == Action.RUN:
            if new_exits:
                await save(self.uows, job)
            return
        await self.gangs.kill(job)
        if v.culprit is not None:
            attempts.blame(job, v.culprit, utcnow())
        await self._conclude(job, v)

    async def _conclude(self, job: Job, v: Verdict) -> None:
        if v.action == Action.SUCCEED:
            # read off the loop: the logs of a long job are large, and only a model registration needs them
            final = await asyncio.to_thread(metrics.final_metrics, job) if job.spec.output_model else {}
            announce = functools.partial(mapping.job_succeeded, final_metrics=final)
            await self._end(job, S.SUCCEEDED, v.reason, v.message, Outcome.SUCCEEDED, announce)
        elif v.action == Action.FAIL:
            await self._end(job, S.FAILED, v.reason, v.message, Outcome.FAILED)
        else:
            job.restart_gang(v, utcnow())
            await save(self.uows, job)

    async def restarting(self, job: Job) -> None:
        """Kill the gang (if dlc stopped between deciding and killing) and start it again."""
        if job.runtime.handles:
            await self.gangs.kill(job, record=False)
            job.runtime.handles = []
        if await self.preempt_if_asked(job):
            return
        message = f"restart {job.restart_count}: starting every replica from the newest checkpoint"
        job.transition_to(S.STARTING, "RESTARTING", message, utcnow())
        await save(self.uows, job)

    async def preempt_if_asked(self, job: Job) -> bool:
        """Stop a preempted gang within its notice and give the capacity back; True when it did."""
        if job.runtime.preempt is None:
            return False
        await self.gangs.kill(job, attempts.preemption_grace(job, utcnow(), self.options.kill_grace))
        attempts.preempted(job, utcnow())
        await save(self.uows, job)
        await self.preempted(job)
        return True

    async def preempted(self, job: Job) -> None:
        """Requeue the job's workload and wait for admission again."""
        try:
            w = await self.scheduler.requeue(job.workload, "preempted; the job waits to resume")
        except RemoteError as e:
            if e.code == Code.FAILED_PRECONDITION:  # already pending again, or finished
                await self._requeued_already(job)
            elif e.permanent:
                job.end(
                    S.FAILED, "REQUEUE_FAILED", f"could not requeue the job's workload: {e}", utcnow(), None
                )
                await save(self.uows, job)
            return  # anything else is retried next step
        job.queued(w.pending_reason, utcnow())
        await save(self.uows, job)

    async def _requeued_already(self, job: Job) -> None:
        try:
            w = await self.scheduler.get(job.workload)
        except RemoteError as e:
            if e.code == Code.NOT_FOUND:
                job.runtime.lost_workload = f"the scheduler's workload {job.workload} is gone"
                await self.lose_workload(job)
            return  # unreachable: retried next step
        if w.finished:
            job.runtime.lost_workload = f"the scheduler's workload {w.name} was finished outside dlc"
            await self.lose_workload(job)
        elif w.pending:
            job.queued(w.pending_reason, utcnow())
            await save(self.uows, job)
        # otherwise the scheduler has not let it go yet: asked again next step

    async def stopping(self, job: Job) -> None:
        await self.gangs.kill(job, job.runtime.stop_grace)
        attempts.stopped(job, utcnow())
        await save(self.uows, job)
        await self.finisher.report(job)

    async def lose_workload(self, job: Job) -> None:
        """The job's capacity is gone for good: stop the gang and fail the job, saying so."""
        await self.gangs.kill(job)
        attempts.lose_workload(job, utcnow())
        await save(self.uows, job)
