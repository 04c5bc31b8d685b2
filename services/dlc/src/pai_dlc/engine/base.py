"""The engine interface: launch the replicas of an admitted job, watch them, kill them all.

One domain for every engine. dlc decides what each replica runs (command, environment, working
directory) and what an exit means; an engine only starts processes somewhere, reports how each one
ended, and kills the whole gang. Everything an engine needs to find a replica again after dlc itself
restarted is in its `ReplicaHandle`, which dlc stores with the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ReplicaLaunch:
    """One replica of one attempt: what to run and with what environment."""

    replica: str  # "master-0", "worker-1": unique within the job
    rank: int
    command: tuple[str, ...]  # argv (command + args), never a shell line
    env: dict[str, str]  # dlc's variables and the user's; added to the engine's base environment
    cwd: str | None = None  # working directory (the job's code directory); None: the run directory


@dataclass(frozen=True, slots=True)
class AttemptLaunch:
    """Every replica of one attempt of a job (attempt 0 is the first run; each gang restart adds 1)."""

    job: str  # the job's resource name, for messages
    uid: str  # the job's uid: stable across attempts
    attempt: int
    run_dir: str  # a directory the engine owns for this attempt: logs, exit records, error files
    replicas: tuple[ReplicaLaunch, ...]


@dataclass(frozen=True, slots=True)
class ReplicaHandle:
    """Where a launched replica is, kept with the job so that a restarted dlc can watch it again."""

    replica: str
    rank: int
    attempt: int
    pid: int  # the replica's supervisor process, leader of the replica's process group
    pgid: int
    log_path: str  # the replica's log (see `pai_dlc.engine.logfile` for the format)
    exit_path: str  # written once, atomically, when the replica's command has ended
    error_path: str  # TORCHELASTIC_ERROR_FILE for the replica; may never be written
    node: str = ""  # the host it runs on
    engine_ref: str = ""  # the engine's own id for it, for people


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
class EngineInfo:
    name: str
    node: str = ""
    details: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """What dlc asks of every engine."""

    info: EngineInfo

    async def launch(self, attempt: AttemptLaunch) -> list[ReplicaHandle]:
        """Start every replica of `attempt`; all or none (on failure, kill what started and raise
        `EngineError`)."""
        ...

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas among `handles` that have ended, with how (cheap; called about once a second)."""
        ...

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """Handles for replicas of `attempt` that may have started although `launch` never returned
        them (dlc stopped mid-launch), so that they can be killed; [] when the engine has none."""
        ...

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """SIGTERM every replica's process group, SIGKILL after `grace` seconds, and return only when
        no process of any of them is left."""
        ...


class EngineError(Exception):
    """An engine could not do what was asked; the message says why, for a person."""
