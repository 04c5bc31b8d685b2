"""Sweep use cases: create, read, list, update, stop, delete, and a sweep's trials.

Each trial is a job created through the job use cases (same admission, restarts, logs), with the
trial's assignment merged into the template's hyperparameters; `app/sweep_steps.py` runs them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence

from pai_common.clock import utcnow
from pai_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pai_dlc.app.common import CreateOnce, Locks
from pai_dlc.app.jobs import JobUseCases
from pai_dlc.app.ports import UnitOfWorkFactory
from pai_dlc.domain import search
from pai_dlc.domain.spec import normalize
from pai_dlc.domain.sweep import ACTIVE_SWEEP, DONE, Sweep, SweepState, Trial, TrialCounts
from pai_dlc.mapping import sweeps as mapping

SEED_RANGE = 1 << 62


@dataclasses.dataclass(frozen=True)
class NewSweep:
    spec: search.SweepSpec
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


class SweepUseCases:
    def __init__(
        self, uows: UnitOfWorkFactory, jobs: JobUseCases, locks: Locks, wake: Callable[[], None]
    ) -> None:
        self.uows, self.jobs, self.locks, self.wake = uows, jobs, locks, wake
        self.once = CreateOnce(uows, lambda uow: uow.sweeps, _taken)

    async def create(
        self, parent: str, sweep_id: str, new: NewSweep, *, request_id: str = "", creator: str = "",
        validate_only: bool = False,
    ) -> Sweep:  # fmt: skip
        name = f"{parent}/sweeps/{sweep_id}"
        earlier = await self.once.earlier(name, request_id)
        if earlier is not None:
            return earlier
        spec = await self._checked_spec(name, parent, new.spec)
        now = utcnow()
        planned = len(search.assignments(spec))
        sweep = Sweep(
            name, str(uuid.uuid4()), spec, creator=creator, display_name=new.display_name,
            description=new.description, labels=dict(new.labels), state=SweepState.RUNNING, reason="RUNNING",
            message="starting trials", state_time=now, create_time=now, update_time=now,
            trial_counts=TrialCounts(total=planned, pending=planned), request_id=request_id or None,
        )  # fmt: skip
        if validate_only:
            return sweep
        try:
            async with self.uows() as uow:
                await uow.sweeps.insert(sweep)
                await uow.outbox.add(mapping.sweep_created(sweep))
                await uow.commit()
        except AlreadyExists:  # a concurrent create of the same name or request id won
            return await self.once.raced(name, request_id)
        self.wake()
        return sweep

    async def _checked_spec(self, name: str, parent: str, given: search.SweepSpec) -> search.SweepSpec:
        """The spec as stored: defaults filled, dataset versions resolved once for every trial (so
        `@latest` is pinned to one version, and a bad reference fails here), every problem refused."""
        spec = given
        if spec.algorithm == search.Algorithm.TYPE_UNSPECIFIED:
            spec = dataclasses.replace(spec, algorithm=search.Algorithm.GRID)
        if spec.algorithm == search.Algorithm.RANDOM and not spec.seed:
            spec = dataclasses.replace(spec, seed=uuid.uuid4().int % SEED_RANGE)
        problems = search.validate(spec)
        where = "sweep.spec.job_template"
        template = await self.jobs.resolve_data(name, spec.job_template, where)
        spec = dataclasses.replace(spec, job_template=template)
        normalized = normalize(
            template, default_engine=self.jobs.options.default_engine,
            storage_root=self.jobs.options.storage_root, uid="template",
        )  # fmt: skip
        try:
            self.jobs.check(normalized, parent, where, "INVALID_SWEEP_SPEC")
        except InvalidArgument as e:
            problems += e.violations
        if problems:
            raise InvalidArgument("INVALID_SWEEP_SPEC", problems[0].description, violations=problems)
        return spec

    async def get(self, name: str) -> Sweep:
        async with self.uows() as uow:
            s = await uow.sweeps.get(name)
        if s is None:
            raise NotFound("SWEEP_NOT_FOUND", f"{name} does not exist", sweep=name)
        return s

    async def page(
        self, workspace: str, after: str | None, limit: int, states: Sequence[SweepState]
    ) -> list[Sweep]:
        async with self.uows() as uow:
            return await uow.sweeps.page(workspace, after=after, limit=limit, states=states)

    async def trials(self, name: str) -> list[Trial]:
        s = await self.get(name)
        async with self.uows() as uow:
            return await uow.sweeps.trials(s)

    async def trial(self, name: str) -> Trial:
        for t in await self.trials(name.rsplit("/trials/", 1)[0]):
            if t.name == name:
                return t
        raise NotFound("TRIAL_NOT_FOUND", f"{name} does not exist", trial=name)

    async def stop(self, name: str) -> Sweep:
        async with self.locks(name):
            s = await self.get(name)
            if s.state != SweepState.RUNNING:
                return s
            s.transition_to(SweepState.STOPPING, "STOP_REQUESTED", "stopping every running trial", utcnow())
            await self.save(s)
        self.wake()
        return s

    async def update(self, name: str, etag: str, change: Callable[[Sweep], None]) -> Sweep:
        async with self.locks(name):
            s = await self.get(name)
            s.check_etag(etag)
            change(s)
            async with self.uows() as uow:
                await uow.outbox.add(mapping.sweep_updated(s))
                await uow.sweeps.save(s)
                await uow.commit()
        return s

    async def delete(self, name: str) -> None:
        async with self.locks(name):
            s = await self.get(name)
            if s.state in ACTIVE_SWEEP:
                raise FailedPrecondition(
                    "SWEEP_NOT_TERMINAL", f"{name} is running; stop it first", sweep=name
                )
            async with self.uows() as uow:
                await uow.sweeps.delete(s)
                await uow.outbox.add(mapping.sweep_deleted(s))
                await uow.commit()

    async def save(self, s: Sweep, trials: Sequence[tuple[int, Trial, bool]] = ()) -> None:
        """Write the sweep (its state changes as events) and the given (seq, trial, new) trials."""
        async with self.uows() as uow:
            for seq, t, new in trials:
                await uow.sweeps.put_trial(s, seq, t, new=new)
                if new:
                    await uow.outbox.add(mapping.trial_created(t))
                elif t.state in DONE:
                    await uow.outbox.add(mapping.trial_completed(t, s.name))
            for change in s.take_changes():
                await uow.outbox.add(mapping.sweep_state_changed(change))
            await uow.sweeps.save(s)
            await uow.commit()


def _taken(name: str) -> AlreadyExists:
    return AlreadyExists("SWEEP_ALREADY_EXISTS", f"{name} already exists", sweep=name)
