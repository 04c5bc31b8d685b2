"""The reconciler: the only writer of running jobs, moving each one from its stored state.

Every job that is in progress, owes the scheduler its end, or has scheduler facts waiting is stepped
every `poll_interval`, and at once when the API or an event wakes the loop. A step holds the job's
lock, reads the job, applies the scheduler's facts, and runs the step of the job's state
(`app/steps.py`). Nothing lives only in memory: the backend handles of a running attempt are stored
with the job, so a restarted dlc picks every job up where it was (running replicas are watched
again, not started twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pai_common.clock import utcnow
from pai_common.logs import Streak
from pai_dlc.app.common import Locks, Options, persist
from pai_dlc.app.gangs import Finisher
from pai_dlc.app.ports import UnitOfWorkFactory
from pai_dlc.app.steps import Steps
from pai_dlc.domain.job import Job, JobState

log = logging.getLogger(__name__)
S = JobState
PARALLEL_STEPS = 16


class Reconciler:
    def __init__(
        self, uows: UnitOfWorkFactory, steps: Steps, finisher: Finisher, locks: Locks, options: Options
    ) -> None:
        self.uows, self.steps, self.finisher, self.locks, self.options = uows, steps, finisher, locks, options
        self._by_state: dict[JobState, Callable[[Job], Awaitable[None]]] = {
            S.CREATING: steps.creating,
            S.QUEUED: steps.queued,
            S.STARTING: steps.starting,
            S.RUNNING: steps.running,
            S.RESTARTING: steps.restarting,
            S.PREEMPTED: steps.preempted,
            S.STOPPING: steps.stopping,
        }
        self._parallel = asyncio.Semaphore(PARALLEL_STEPS)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._failing: dict[str, Streak] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def kick(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dlc-reconciler")

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
        failing = Streak(log, "reconciler pass")
        while not self._stopping:
            try:  # a broken job or a store outage must not stop every other job
                await self.step_all()
                failing.ended()
            except Exception as error:
                failing.failed(error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.poll_interval)
            self._wake.clear()

    async def step_all(self) -> None:
        async with self.uows() as uow:
            names = await uow.jobs.names_to_step()
        # each job steps in a task of its own (one at a time per job), so a gang being killed with a
        # grace period never delays another job's admission, preemption notice or deadline
        for name in names:
            if self._stopping:
                return
            if name not in self._running:
                self._running[name] = asyncio.create_task(self._one(name), name=f"dlc-step-{name}")

    async def _one(self, name: str) -> None:
        failing = self._failing.setdefault(name, Streak(log, f"step of {name}"))
        try:
            async with self._parallel:
                if not self._stopping:
                    await self.step(name)
            failing.ended()
            self._failing.pop(name, None)
        except Exception as error:  # logged once per run of failures; the next pass tries again
            failing.failed(error)
        finally:
            self._running.pop(name, None)

    async def step(self, name: str) -> None:
        async with self.locks(name):
            job = await self._with_facts(name)
            if job is None:
                return
            if job.terminal:
                await self.finisher.report(job)
            elif job.runtime.lost_workload and job.state != S.STOPPING:
                await self.steps.lose_workload(job)
            elif (handler := self._by_state.get(job.state)) is not None:
                await handler(job)

    async def _with_facts(self, name: str) -> Job | None:
        """The job with the scheduler's facts about it applied (and dropped) in one transaction."""
        async with self.uows() as uow:
            job = await uow.jobs.get(name)
            facts = await uow.facts.of(name)
            if not facts:
                return job
            if job is not None:
                for _, fact in facts:
                    job.apply(fact, utcnow())
                await persist(uow, job)
            await uow.facts.drop(name, facts[-1][0])
            await uow.commit()
        return job
