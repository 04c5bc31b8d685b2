"""What dlc's use cases need from the outside, as protocols: the store (a unit of work with its
repositories), the scheduler, lineage, and the backends that run replicas. `db/`, `adapters/` and
`engine/` implement them; `bootstrap` wires them in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from pai_common.errors import Code
from pai_common.events import OutboxEvent
from pai_dlc.domain.job import Change, Job, JobState
from pai_dlc.domain.runtime import FactKind, Outcome, WorkloadFact
from pai_dlc.domain.spec import JobSpec
from pai_dlc.domain.sweep import Sweep, SweepState, Trial
from pai_runtime.types import Backend, GangLaunch


class Jobs(Protocol):
    async def get(self, name: str) -> Job | None: ...
    async def by_request_id(self, request_id: str) -> Job | None: ...
    async def names_to_step(self) -> list[str]: ...
    async def page(
        self,
        workspace: str,
        *,
        after: tuple[dt.datetime, str] | None,
        limit: int,
        states: Sequence[JobState] = (),
    ) -> list[Job]: ...
    async def insert(self, job: Job) -> None: ...
    async def save(self, job: Job) -> None: ...
    async def delete(self, job: Job) -> None: ...
    async def record(self, job: Job, change: Change) -> None: ...
    async def history(self, job: Job, *, after: int, limit: int) -> list[tuple[int, Change]]: ...


class Facts(Protocol):
    async def add(self, job: str, kind: FactKind, workload: bytes) -> None: ...
    async def of(self, job: str) -> list[tuple[int, WorkloadFact]]: ...
    async def drop(self, job: str, upto: int) -> None: ...


class Sweeps(Protocol):
    async def get(self, name: str) -> Sweep | None: ...
    async def by_request_id(self, request_id: str) -> Sweep | None: ...
    async def names_in_states(self, states: Sequence[SweepState]) -> list[str]: ...
    async def page(
        self, workspace: str, *, after: str | None, limit: int, states: Sequence[SweepState] = ()
    ) -> list[Sweep]: ...
    async def insert(self, s: Sweep) -> None: ...
    async def save(self, s: Sweep) -> None: ...
    async def delete(self, s: Sweep) -> None: ...
    async def trials(self, s: Sweep) -> list[Trial]: ...
    async def put_trial(self, s: Sweep, seq: int, trial: Trial, *, new: bool) -> None: ...


class Outbox(Protocol):
    async def add(self, event: OutboxEvent) -> None: ...


class UnitOfWork(Protocol):
    """One transaction: leaving without `commit()` rolls it back."""

    @property
    def jobs(self) -> Jobs: ...
    @property
    def facts(self) -> Facts: ...
    @property
    def sweeps(self) -> Sweeps: ...
    @property
    def outbox(self) -> Outbox: ...

    async def commit(self) -> None: ...
    async def __aenter__(self) -> UnitOfWork: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]

# the other side answered, and asking again will not change its mind
PERMANENT = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.PERMISSION_DENIED,
        Code.UNAUTHENTICATED,
        Code.OUT_OF_RANGE,
    }
)


class RemoteError(Exception):
    """A call to another service failed: `code` says how, `detail` is what it said."""

    def __init__(self, code: Code, detail: str) -> None:
        super().__init__(f"{code.name}: {detail}".strip())
        self.code, self.detail = code, detail

    @property
    def permanent(self) -> bool:
        return self.code in PERMANENT


@dataclass(frozen=True)
class WorkloadView:
    """The scheduler's workload of a job, as much as dlc reads of it."""

    name: str
    pending: bool
    finished: bool
    pending_reason: str = ""


class Scheduler(Protocol):
    """The calls dlc makes as the owner of its jobs' workloads (they raise `RemoteError`)."""

    async def create(self, job: Job) -> WorkloadView: ...
    async def get(self, name: str) -> WorkloadView: ...
    async def finish(self, name: str, outcome: Outcome, message: str) -> None: ...
    async def requeue(self, name: str, reason: str) -> WorkloadView: ...


class Datasets(Protocol):
    """Dataset versions by name, resolved to (concrete name, URI); errors name the request `field`."""

    async def resolve(self, field: str, name: str) -> tuple[str, str]: ...


@dataclass(frozen=True)
class Runner:
    """One engine: the backend that runs its replicas and, for backends that create cluster objects,
    the function that makes an attempt's object from the launch and the job's spec."""

    backend: Backend
    manifest: Callable[[GangLaunch, JobSpec], dict[str, Any]] | None = None
