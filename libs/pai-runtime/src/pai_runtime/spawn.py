"""Starting one replica's supervisor: its run directory, its files, its environment, its sandbox.

The supervisor (`pai_runtime.supervisor`) runs as `python -I -S <path of supervisor.py>`: isolated
from the replica's PYTHON* variables, and quick to start. It is spawned in a session of its own, so it
leads a process group with the command and whatever the command starts, with stdin from /dev/null and
its own output in `<replica>.supervisor.log`, and with the signals an owner may ignore or block (a
server's SIGPIPE, say) back at their defaults.

Sandbox: a `Sandbox`, given to the local backend at construction, wraps the argv the supervisor runs
(the replica's command) in what confines it, for instance `bwrap ... -- <command>` run as another OS
user. The supervisor itself stays outside: it owns the log and the exit record, and it is the process
a restarted owner finds again by pid and start time. No sandbox is the default: the command runs as
the owner's user.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Protocol

from pai_runtime import supervisor
from pai_runtime.processes import process_ref
from pai_runtime.types import BackendError, GangLaunch, ReplicaHandle, ReplicaLaunch

ERROR_FILE_VAR = "TORCHELASTIC_ERROR_FILE"

# The owner's own settings and credentials (PAI_DLC_API_KEY, database URLs...) and telemetry exporters'
# settings are never a replica's business: user code could print them.
PRIVATE_PREFIXES = ("PAI_", "OTEL_")

# Signals a new supervisor must not inherit as ignored or blocked from its owner.
_DEFAULT_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPIPE,
    signal.SIGCHLD,
)


class Sandbox(Protocol):
    """What confines a replica's command (the next step: bubblewrap, as another OS user).

    The wrapped command must stay in the supervisor's process group (no `--new-session`, no setsid
    of its own): the supervisor relays signals to its group, and the backend kills by group. The run
    directory is writable by the replica, so nothing there may be trusted as the owner's own record
    beyond what `processes.Supervisors` verifies (pid and start time, or the command line)."""

    def wrap(self, gang: GangLaunch, replica: ReplicaLaunch, argv: Sequence[str]) -> list[str]:
        """The argv the supervisor runs instead of `argv` (the replica's command)."""
        ...


def replica_base_env() -> dict[str, str]:
    """The environment replicas start from: the owner's own, without its settings and secrets, with
    the owner's Python first on PATH (so `python train.py` runs in the platform's environment, torch
    included, whether or not the shell that started the owner had the virtualenv active)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        env["PATH"] = os.pathsep.join(p for p in (bindir, path) if p)
    return env


def check_replica(gang: GangLaunch, replica: ReplicaLaunch) -> None:
    """Refuses a replica whose name cannot name its files, or that has no command."""
    name = replica.replica
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        raise BackendError(f"{gang.owner}: {name!r} cannot name a replica's files")
    if not replica.command:
        raise BackendError(f"{gang.owner}: replica {name} has no command")


def prepare_run_dir(gang: GangLaunch) -> str:
    """Checks the replicas and makes the run directory; returns its absolute path."""
    for replica in gang.replicas:
        check_replica(gang, replica)
    run_dir = os.path.abspath(gang.run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise BackendError(f"{gang.owner}: cannot create the run directory {run_dir}: {e}") from e
    return run_dir


def _error_file(replica: ReplicaLaunch, cwd: str, run_dir: str, default: str) -> str:
    """The error file the owner reads when the replica fails: the replica's own TORCHELASTIC_ERROR_FILE
    when it lies in the replica's working or run directory, else `default` (the owner never reads a
    file the replica merely names elsewhere: it would publish another's file in the job's status)."""
    given = replica.env.get(ERROR_FILE_VAR)
    if given is None:
        return default
    chosen = os.path.realpath(os.path.join(cwd, given))
    inside = (os.path.realpath(d) + os.sep for d in (cwd, run_dir))
    return chosen if any(chosen.startswith(d) for d in inside) else default


def spawn_supervisor(
    python: str,
    gang: GangLaunch,
    run_dir: str,
    replica: ReplicaLaunch,
    *,
    node: str,
    sandbox: Sandbox | None = None,
) -> tuple[ReplicaHandle, int]:
    """Starts the replica's supervisor; its handle, and the log offset where the supervisor begins."""
    base = os.path.join(run_dir, replica.replica)
    log_path, exit_path, supervisor_log = f"{base}.log", f"{base}.exit.json", f"{base}.supervisor.log"
    cwd = os.path.abspath(replica.cwd or run_dir)
    env = replica_base_env()
    env.update(replica.env)
    error_path = _error_file(replica, cwd, run_dir, f"{base}.error.json")
    env.setdefault(ERROR_FILE_VAR, error_path)
    command = list(replica.command) if sandbox is None else sandbox.wrap(gang, replica, replica.command)
    try:
        # A run directory used before must not report the last run's ending for this one.
        for stale in (exit_path, f"{base}.error.json"):
            if os.path.exists(stale):
                os.unlink(stale)
        log_offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        argv = [python, "-I", "-S", supervisor.__file__, "--log", log_path, "--exit", exit_path]
        argv += ["--cwd", cwd, "--", *command]
        pid = os.posix_spawnp(
            python,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
            setsigmask=(),
            setsigdef=_DEFAULT_SIGNALS,
        )
    except OSError as e:
        raise BackendError(
            f"{gang.owner} attempt {gang.attempt}: cannot start the supervisor of {replica.replica}: {e}"
        ) from e
    handle = ReplicaHandle(
        replica=replica.replica,
        rank=replica.rank,
        attempt=gang.attempt,
        pid=pid,
        pgid=pid,
        log_path=log_path,
        exit_path=exit_path,
        error_path=error_path,
        node=node,
        engine_ref=process_ref(pid),
        readiness=replica.readiness,
    )
    return handle, log_offset
