"""dlc's engines: the backends of `pai_runtime` behind the interface the current controller speaks.

The backends (local processes, Ray, Kubernetes) live in `libs/pai-runtime` (`pai_runtime.types` is
their contract); dlc keeps only what is training-specific: the Ray rendezvous rewrite
(`pai_dlc.engine.rendezvous`) and the PyTorchJob manifest (`pai_dlc.engine.pytorchjob`), both handed
to the backends at construction or in the launch.

TRANSITIONAL (goes with the current controller): the controller builds an `AttemptLaunch` (a job and
its replicas) and calls an `Engine`; `BackendEngine` turns the one into a `GangLaunch` for a
`pai_runtime` backend and passes everything else straight through. A controller that builds
`GangLaunch`es itself (manifest included) uses the backends directly, and this module goes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pai_runtime.local import LocalBackend
from pai_runtime.types import Backend, GangLaunch, ReplicaExit, ReplicaHandle, ReplicaLaunch
from pai_runtime.types import BackendError as EngineError
from pai_runtime.types import BackendInfo as EngineInfo

__all__ = [
    "AttemptLaunch",
    "BackendEngine",
    "Engine",
    "EngineError",
    "EngineInfo",
    "LocalEngine",
    "ReplicaExit",
    "ReplicaHandle",
    "ReplicaLaunch",
]


@dataclass(frozen=True, slots=True)
class AttemptLaunch:
    """Every replica of one attempt of a job, as the current controller builds it."""

    job: str  # the job's resource name, for messages
    uid: str  # the job's uid: stable across attempts
    attempt: int
    run_dir: str  # a directory the engine owns for this attempt: logs, exit records, error files
    replicas: tuple[ReplicaLaunch, ...]

    def gang(self, manifest: dict[str, object] | None = None) -> GangLaunch:
        """The attempt as `pai_runtime` launches it."""
        return GangLaunch(self.job, self.uid, self.attempt, self.run_dir, self.replicas, manifest or {})


class Engine(Protocol):
    """What the current controller asks of every engine."""

    info: EngineInfo

    async def launch(self, attempt: AttemptLaunch) -> list[ReplicaHandle]: ...

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]: ...

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]: ...

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None: ...


class BackendEngine:
    """An `Engine` over a `pai_runtime` backend; `manifest`, if given, makes the object a Kubernetes
    backend creates for an attempt (see `pai_dlc.engine.kubernetes`)."""

    def __init__(
        self,
        backend: Backend,
        manifest: Callable[[AttemptLaunch], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.backend = backend
        self.manifests = manifest
        self.info = backend.info

    async def launch(self, attempt: AttemptLaunch) -> list[ReplicaHandle]:
        manifest = await self.manifests(attempt) if self.manifests is not None else None
        return await self.backend.launch(attempt.gang(manifest))

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        return self.backend.poll(handles)

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        return await self.backend.unrecorded(run_dir, attempt)

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        await self.backend.kill(handles, grace)


class LocalEngine(BackendEngine):
    """dlc's LOCAL engine: `pai_runtime.local.LocalBackend`."""

    def __init__(self) -> None:
        super().__init__(LocalBackend())
