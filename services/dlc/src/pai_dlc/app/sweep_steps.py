"""The sweep runner: each step of a running sweep reads its trials' jobs and reported metrics, stops
unpromising trials (median rule), starts new ones up to the parallelism, and ends the sweep when the
trials are done, the target is reached, or too many failed.

Job creation is idempotent per trial (request id = sweep uid + trial number), so a crash between
creating a job and recording it creates nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging

from pai_common.clock import utcnow
from pai_common.errors import DomainError, FailedPrecondition, NotFound
from pai_common.logs import Streak
from pai_dlc.app import metrics
from pai_dlc.app.jobs import JobUseCases, NewJob
from pai_dlc.app.sweeps import SweepUseCases
from pai_dlc.domain import search
from pai_dlc.domain.job import Job
from pai_dlc.domain.spec import for_trial
from pai_dlc.domain.sweep import (
    ACTIVE_SWEEP,
    DONE,
    FINAL_SWEEP,
    LIVE,
    Sweep,
    Trial,
    TrialCounts,
    TrialState,
    all_ended,
    best_of,
)

log = logging.getLogger(__name__)
Changed = list[tuple[int, Trial, bool]]  # (seq, trial, new)


class SweepRunner:
    def __init__(
        self, sweeps: SweepUseCases, jobs: JobUseCases, interval: float, wake: asyncio.Event
    ) -> None:
        """`wake` is set by the use cases when a sweep changes, so the runner steps at once."""
        self.sweeps, self.jobs, self.interval = sweeps, jobs, interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = wake
        self._failing: dict[str, Streak] = {}
        self._finished: dict[str, search.Points] = {}  # finished trials' objective series, by trial

    def kick(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dlc-sweeps")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        failing = Streak(log, "sweep pass")
        while not self._stopping:
            try:
                async with self.sweeps.uows() as uow:
                    names = await uow.sweeps.names_in_states(tuple(ACTIVE_SWEEP))
                failing.ended()
            except Exception as error:  # the store is down: the next pass tries again
                failing.failed(error)
                names = []
            for name in names:
                if self._stopping:
                    break
                await self._one(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def _one(self, name: str) -> None:
        """Step one sweep; a sweep that fails is logged (once per run of failures) and the others go on."""
        failing = self._failing.setdefault(name, Streak(log, f"step of {name}"))
        try:
            await self.step(name)
        except Exception as error:
            failing.failed(error)
        else:
            failing.ended()
            self._failing.pop(name, None)

    async def step(self, name: str) -> None:
        async with self.sweeps.locks(name):
            s = await self.sweeps.get(name)
            trials = await self.sweeps.trials(name)
            plan = search.assignments(s.spec)
            changed, completed, series = await self._observe(s, trials)
            best = best_of(trials, s.spec)
            end = s.ending(trials, best)
            if end is None and s.spec.early_stopping is not None:
                changed += await self._stop_early(s, trials, completed, series)
            if end is None:
                started = await self._start_trials(s, trials, plan)
                changed += started
                end = None if started else all_ended(trials, len(plan), best)
            else:
                for t in trials:  # ending: stop what still runs, and end once it has
                    if t.state in LIVE:
                        await self._stop_job(t.job)
            move = s.move(end, sum(1 for t in trials if t.state in LIVE))
            counts = TrialCounts.of(trials, len(plan))
            if not changed and move is None and counts == s.trial_counts:
                return
            changed = list({seq: (seq, t, new) for seq, t, new in changed}.values())  # one write per trial
            s.trial_counts = counts
            if best is not None:
                s.best_trial = best
            if move is not None and s.state != move.state:
                s.transition_to(move.state, move.reason, move.message, utcnow())
                if s.state in FINAL_SWEEP:
                    self._forget(s.name)
            await self.sweeps.save(s, changed)

    async def _observe(
        self, s: Sweep, trials: list[Trial]
    ) -> tuple[Changed, list[search.Points], dict[str, search.Points]]:
        """Follow every trial's job and metrics; (changed trials, completed series, series by trial)."""
        jobs = await self.jobs.find([t.job for t in trials if t.job])
        changed: Changed = []
        completed: list[search.Points] = []
        series: dict[str, search.Points] = {}
        for seq, t in enumerate(trials):
            job = jobs.get(t.job) if t.job else None
            was_done = t.state in DONE
            points, extras = await self._reported(s.spec, t, job)
            series[t.name] = points
            before = copy.deepcopy(t)
            t.observe(job, [] if was_done else points, extras, s.spec)
            if t.state == TrialState.SUCCEEDED and points:
                completed.append(points)
            if t.state in DONE and s.spec.early_stopping is not None:
                self._finished[t.name] = points  # a finished job's logs do not change any more
            if t != before:
                t.update_time = utcnow()
                changed.append((seq, t, False))
        return changed, completed, series

    async def _reported(
        self, spec: search.SweepSpec, t: Trial, job: Job | None
    ) -> tuple[search.Points, dict[str, float]]:
        """A trial's objective series (a finished one's only for early stopping) and the last value
        of each additional metric, from one read of its job's logs."""
        done = t.state in DONE
        if done and t.name in self._finished:
            return self._finished[t.name], {}
        if job is None or (done and spec.early_stopping is None):
            return [], {}
        extra = () if done else spec.objective.additional_metric_keys
        found = await asyncio.to_thread(metrics.series, job, {spec.objective.metric_key, *extra})
        extras = {key: found[key][-1][1] for key in extra if found.get(key)}
        return found.get(spec.objective.metric_key, []), extras

    def _forget(self, sweep: str) -> None:
        """A sweep has ended: its trials' series are not needed again."""
        for trial in [t for t in self._finished if t.startswith(f"{sweep}/trials/")]:
            del self._finished[trial]

    async def _stop_early(
        self, s: Sweep, trials: list[Trial], completed: list[search.Points], series: dict[str, search.Points]
    ) -> Changed:
        rule = s.spec.early_stopping
        assert rule is not None
        changed: Changed = []
        for seq, t in enumerate(trials):
            if t.state == TrialState.RUNNING and search.median_stop(
                series.get(t.name, []), completed, s.spec.objective.goal, rule
            ):
                await self._stop_job(t.job)
                t.stop_early()
                changed.append((seq, t, False))
        return changed

    async def _start_trials(self, s: Sweep, trials: list[Trial], plan: list[dict[str, str]]) -> Changed:
        """Start trials up to the parallelism (appending them to `trials`); one whose job could not be
        created counts against the parallelism until the next step, like a running one."""
        changed: Changed = []
        live = sum(1 for t in trials if t.state in LIVE)
        while live < max(1, s.spec.parallelism) and len(trials) < len(plan):
            seq = len(trials)
            trial = await self._start_trial(s, seq, plan[seq])
            trials.append(trial)
            live += 1
            changed.append((seq, trial, True))
        return changed

    async def _start_trial(self, s: Sweep, seq: int, assignment: dict[str, str]) -> Trial:
        workspace, sweep_id = s.name.split("/")[1], s.name.split("/")[3]
        trial_id = f"trial-{seq}"
        now = utcnow()
        trial = Trial(f"{s.name}/trials/{trial_id}", dict(assignment), create_time=now, update_time=now)
        new = NewJob(
            for_trial(s.spec.job_template, trial_id, assignment), display_name=f"{sweep_id} {trial_id}",
            labels={"pai.dev/sweep": sweep_id},
        )  # fmt: skip
        # the job id carries the sweep's uid: a sweep created again under the same id, or a user's
        # own job, never collides with a trial's job
        job_id = f"{sweep_id[:40].rstrip('-')}-{s.uid[:8]}-{seq}"
        try:
            job = await self.jobs.create(
                f"workspaces/{workspace}", job_id, new, request_id=f"{s.uid}-{seq}", creator=s.creator,
                trial=trial.name,
            )  # fmt: skip
        except DomainError as e:  # the trial fails with the reason; the sweep goes on
            trial.state, trial.reason = TrialState.FAILED, "JOB_NOT_CREATED"
            trial.message, trial.end_time = f"its job could not be created: {e.message}", now
            return trial
        trial.job, trial.reason, trial.message = job.name, "CREATED", f"job {job.name} created"
        return trial

    async def _stop_job(self, name: str) -> None:
        with contextlib.suppress(FailedPrecondition, NotFound):  # it ended (or went) meanwhile
            await self.jobs.stop(name, "")
