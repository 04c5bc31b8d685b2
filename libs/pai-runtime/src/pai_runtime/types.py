"""The contract between an owner of user processes (dlc, eas, dsw) and the backends that run them.

An owner decides what each replica runs (command, environment, working directory, the port a server
listens on) and what an exit means; a backend only starts processes somewhere, tells whether a server
replica is ready, reports how each replica ended, and kills one replica or the whole gang. Everything a
backend needs to find a replica again after its owner restarted is in the `ReplicaHandle`, which the
owner stores (these dataclasses are plain values: `dataclasses.asdict` and `ReplicaHandle.from_dict`
round-trip).

A gang is what one scheduler admission runs: every replica of one attempt of a training job, or the
replicas of a model-server revision, or one notebook server. Training replicas are launched and killed
together; server replicas can also be replaced one at a time (`Backend.replace`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Readiness:
    """How to tell that a server replica is ready: a TCP connect to `port`, or, with `path`, an HTTP
    GET of `http://<host>:<port><path>` that answers 2xx."""

    port: int
    path: str = ""  # "" → a TCP connect is enough
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ReplicaLaunch:
    """One replica: what to run and with what environment."""

    replica: str  # "master-0", "worker-1", "server-0": unique within the gang; names its files
    rank: int
    command: tuple[str, ...]  # argv (command + args), never a shell line
    env: dict[str, str]  # the owner's variables; added to the backend's base environment
    cwd: str | None = None  # working directory; None: the run directory
    readiness: Readiness | None = None  # a server replica: when it is ready; None: a batch process


@dataclass(frozen=True, slots=True)
class GangLaunch:
    """Every replica of one attempt of one owner (attempt 0 is the first run; each gang restart adds 1)."""

    owner: str  # the owner's resource name (a job, a service revision, a notebook), for messages
    uid: str  # the owner's uid: stable across attempts, names the backend's own objects
    attempt: int
    run_dir: str  # a directory the backend owns for this attempt: logs, exit records, error files
    replicas: tuple[ReplicaLaunch, ...]
    # Backends that create cluster objects (Kubernetes) take the object to create from the owner,
    # who alone knows its shape (a PyTorchJob, a Deployment); others ignore it.
    manifest: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplicaHandle:
    """Where a launched replica is, kept by its owner so that a restarted owner can watch it again."""

    replica: str
    rank: int
    attempt: int
    pid: int  # the replica's supervisor process, leader of the replica's process group (0: none here)
    pgid: int
    log_path: str  # the replica's log (`pai_runtime.logfile` format); "" when the backend keeps none
    exit_path: str  # written once, atomically, when the replica's command has ended
    error_path: str  # TORCHELASTIC_ERROR_FILE for the replica; may never be written
    node: str = ""  # the host it runs on
    engine_ref: str = ""  # the backend's own id for it, for people and for finding it again
    readiness: Readiness | None = None  # copied from the launch, so readiness survives a restart

    @staticmethod
    def from_dict(d: dict[str, object]) -> ReplicaHandle:
        """The handle `dataclasses.asdict(handle)` was made from (readiness included)."""
        known = {f.name for f in dataclasses.fields(ReplicaHandle)}
        values = {k: v for k, v in d.items() if k in known}  # a newer owner's fields are ignored
        ready = values.get("readiness")
        if isinstance(ready, dict):
            values["readiness"] = Readiness(**ready)
        return ReplicaHandle(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ReplicaExit:
    """How a replica ended."""

    replica: str
    exit_code: int | None  # None when it was killed by a signal or vanished
    signal: int = 0  # the signal that killed the command, 0 if none
    message: str = ""  # one line a person can act on ("exit code 1: ValueError: ...")
    details: str = ""  # more: the error file's traceback, or the last lines of stderr
    lost: bool = False  # the replica's supervisor is gone without recording an exit
    time_ns: int = 0  # when the command ended (0: unknown), to tell which replica failed first

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.lost


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    node: str = ""
    details: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """What every owner asks of every backend (local processes, Ray, Kubernetes)."""

    info: BackendInfo

    async def launch(self, gang: GangLaunch) -> list[ReplicaHandle]:
        """Start every replica of `gang`, returning once each command runs (not once it is ready);
        all or none: on failure, kill what started and raise `BackendError`."""
        ...

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas among `handles` that have ended, with how (cheap; called about once a second)."""
        ...

    async def ready(self, handles: Sequence[ReplicaHandle]) -> set[str]:
        """The names of the server replicas among `handles` whose readiness check passes now (one
        short probe each; a replica without `readiness` is never in the set)."""
        ...

    async def replace(self, gang: GangLaunch, handle: ReplicaHandle, grace: float) -> ReplicaHandle:
        """Kill one replica of a running gang (as `kill`) and start it again from its launch in
        `gang`, leaving every other replica alone; returns the new handle."""
        ...

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """Handles for replicas of `attempt` that may have started although `launch` never returned
        them (the owner stopped mid-launch), so that they can be killed; [] when the backend has none."""
        ...

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """SIGTERM every replica, SIGKILL after `grace` seconds, and return only when no process of
        any of them is left."""
        ...


class BackendError(Exception):
    """A backend could not do what was asked; the message says why, for a person."""
