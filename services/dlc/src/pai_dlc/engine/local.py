"""The local engine: each replica is a process on this machine, watched by its own supervisor.

`launch` starts one `pai_dlc.engine.supervisor` per replica, each in a new session (so it leads a
process group of its own, with the command and whatever the command starts), and returns as soon as
every command runs. The supervisors write everything to files in the run directory (the replica's
log, its exit record), never to pipes to dlc, so replicas keep running while dlc restarts, and a new
`LocalEngine` finds them again from their `ReplicaHandle`s: a supervisor is recognised by its pid and
the start time of that process (`engine_ref` is "pid <pid> start <clock ticks after boot>"), so a
reused pid is not taken for a replica. Supervisors run as `python -I -S <supervisor.py>`: isolated
from the replica's PYTHON* variables, and quick to start.

Files in the run directory, per replica: `<replica>.log`, `<replica>.exit.json`,
`<replica>.error.json` (TORCHELASTIC_ERROR_FILE, unless the replica sets its own) and
`<replica>.supervisor.log` (the supervisor's own output: empty unless the supervisor itself failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pai_dlc.engine import supervisor
from pai_dlc.engine.base import (
    AttemptLaunch,
    EngineError,
    EngineInfo,
    ReplicaExit,
    ReplicaHandle,
    ReplicaLaunch,
)
from pai_dlc.engine.logfile import read_records, tail_records

ERROR_FILE_VAR = "TORCHELASTIC_ERROR_FILE"
LOST_MESSAGE = "replica supervisor vanished without recording an exit"

START_TIMEOUT = 30.0  # seconds for a supervisor to start its command (it takes a few ms)
KILL_TIMEOUT = 30.0  # seconds for SIGKILLed processes to go (only uninterruptible sleep delays it)
STDERR_LINES = 20  # stderr lines in the details of a failure without an error file
_STDERR_SCAN_BYTES = 4 * 1024 * 1024  # how far back in the log to look for them
_MAX_ERROR_FILE_BYTES = 1024 * 1024
_TICK = 0.02  # seconds between looks while starting or killing
_CACHED_EXITS = 4096

# Signals a new supervisor must not inherit as ignored or blocked from dlc.
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
_START_REF = re.compile(r"\bstart (\d+)\b")


@dataclass(frozen=True, slots=True)
class _ProcStat:
    """What /proc/<pid>/stat says about a process, as much as the engine needs."""

    state: str  # "R", "S", "D", "Z" (exited, not yet reaped), ...
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process for good


# dlc's own settings and credentials (PAI_DLC_API_KEY, database URLs...) and telemetry exporters'
# settings are never a replica's business: user code could print them
PRIVATE_PREFIXES = ("PAI_", "OTEL_")


def replica_base_env() -> dict[str, str]:
    """The environment replicas start from: dlc's own, without its settings and secrets, with dlc's
    Python first on PATH (so `python train.py` runs in the platform's environment, torch included,
    whether or not the shell that ran `make up` had the virtualenv active)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        env["PATH"] = os.pathsep.join(p for p in (bindir, path) if p)
    return env


class LocalEngine:
    """Runs the replicas of an attempt as processes on this machine (see the module's docstring)."""

    def __init__(self, python: str = sys.executable, node: str = socket.gethostname()) -> None:
        self.python = python  # runs the supervisors; needs nothing but its standard library
        self.info = EngineInfo("local", node)
        self._children: set[int] = set()  # supervisors this engine started and has not reaped
        self._exits: dict[tuple[str, str], tuple[tuple[int, int], ReplicaExit]] = {}

    async def launch(self, attempt: AttemptLaunch) -> list[ReplicaHandle]:
        """Starts every replica and waits until each command runs; all or none.

        A command that cannot be started (no such executable, a missing working directory) fails
        the launch with `EngineError`, after the replicas already started have been killed.
        """
        run_dir = prepare_run_dir(attempt)  # local file system calls: quick enough for the event loop
        started: list[tuple[ReplicaHandle, int]] = []  # with the log offset where its supervisor begins
        try:
            for replica in attempt.replicas:
                started.append(self._start(attempt, run_dir, replica))
            await self._wait_started(attempt, started)
        except BaseException:
            await self.kill([handle for handle, _ in started], grace=0)
            raise
        return [handle for handle, _ in started]

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas that ended: from their exit record, or lost when the supervisor is gone without one."""
        self._reap()
        ended: list[ReplicaExit] = []
        for handle in handles:
            result = self._recorded_exit(handle)
            if result is None and not self._supervisor_alive(handle):
                # It may have written its record just before it ended.
                result = self._recorded_exit(handle) or ReplicaExit(
                    handle.replica, None, message=LOST_MESSAGE, details=stderr_tail(handle), lost=True
                )
            if result is not None:
                ended.append(result)
        return ended

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """The supervisors an attempt's logs name in their first line (`started pid N (supervisor
        pid M)`); `kill` checks each still is one of ours before signalling it."""
        return await asyncio.to_thread(_supervisors_in, pathlib.Path(run_dir), attempt)

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """SIGTERM each replica, SIGKILL its process group after `grace` seconds, wait until all are gone.

        SIGTERM goes to the supervisor, which passes it on to its group (the command and what it
        started): sent to the group directly, it would reach the command twice. If the supervisor is
        gone, the group gets it directly. Raises `EngineError` if processes outlive SIGKILL for
        KILL_TIMEOUT seconds (uninterruptible sleep), rather than wait forever.
        """
        handles = list(handles)
        loop = asyncio.get_running_loop()
        for handle in handles:
            if self._supervisor_alive(handle):
                _signal(handle.pid, signal.SIGTERM)
            else:
                self._signal_group(handle, signal.SIGTERM)
        deadline = loop.time() + max(grace, 0.0)
        alive = [handle for handle in handles if self._gang_alive(handle)]
        while alive and loop.time() < deadline:
            await asyncio.sleep(min(_TICK, max(deadline - loop.time(), 0.0)))
            alive = [handle for handle in alive if self._gang_alive(handle)]
        deadline = loop.time() + KILL_TIMEOUT
        while alive:
            for handle in alive:
                self._signal_group(handle, signal.SIGKILL)
            await asyncio.sleep(_TICK)
            alive = [handle for handle in alive if self._gang_alive(handle)]
            if alive and loop.time() > deadline:
                names = ", ".join(f"{h.replica} (process group {h.pgid})" for h in alive)
                raise EngineError(f"processes of {names} are still there {KILL_TIMEOUT:.0f} s after SIGKILL")

    # Starting.

    def _start(
        self, attempt: AttemptLaunch, run_dir: str, replica: ReplicaLaunch
    ) -> tuple[ReplicaHandle, int]:
        base = os.path.join(run_dir, replica.replica)
        log_path, exit_path, supervisor_log = f"{base}.log", f"{base}.exit.json", f"{base}.supervisor.log"
        cwd = os.path.abspath(replica.cwd or run_dir)
        env = replica_base_env()
        env.update(replica.env)
        if ERROR_FILE_VAR in replica.env:
            error_path = os.path.join(cwd, replica.env[ERROR_FILE_VAR])
        else:
            error_path = env[ERROR_FILE_VAR] = f"{base}.error.json"
        try:
            # A run directory used before must not report the last run's ending for this one.
            for stale in (exit_path, f"{base}.error.json"):
                if os.path.exists(stale):
                    os.unlink(stale)
            log_offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            argv = [self.python, "-I", "-S", supervisor.__file__, "--log", log_path, "--exit", exit_path]
            argv += ["--cwd", cwd, "--", *replica.command]
            pid = os.posix_spawnp(
                self.python,
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
            raise EngineError(
                f"{attempt.job} attempt {attempt.attempt}: cannot start the supervisor of {replica.replica}: {e}"
            ) from e
        self._children.add(pid)
        stat = _proc_stat(pid)  # the child exists (maybe as a zombie) until we reap it
        ref = f"pid {pid}" if stat is None else f"pid {pid} start {stat.start}"
        handle = ReplicaHandle(
            replica=replica.replica,
            rank=replica.rank,
            attempt=attempt.attempt,
            pid=pid,
            pgid=pid,
            log_path=log_path,
            exit_path=exit_path,
            error_path=error_path,
            node=self.info.node,
            engine_ref=ref,
        )
        return handle, log_offset

    async def _wait_started(self, attempt: AttemptLaunch, started: list[tuple[ReplicaHandle, int]]) -> None:
        """Returns once every supervisor has logged that its command runs; raises if one could not."""
        waiting = list(started)
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            for item in list(waiting):
                handle, offset = item
                problem = self._start_problem(handle, offset)
                if problem == "":
                    waiting.remove(item)
                elif problem is not None:
                    raise EngineError(
                        f"{attempt.job} attempt {attempt.attempt}: {handle.replica} did not start: {problem}"
                    )
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(handle.replica for handle, _ in waiting)
                raise EngineError(
                    f"{attempt.job} attempt {attempt.attempt}: {names} did not start in {START_TIMEOUT:.0f} s"
                )
            await asyncio.sleep(_TICK / 2)

    def _start_problem(self, handle: ReplicaHandle, offset: int) -> str | None:
        """ "" once the command runs, why it could not start, or None while the supervisor is starting."""
        self._reap()
        alive = self._supervisor_alive(handle)
        for record in read_records(handle.log_path, offset, max_records=1):
            if record.stream == "system" and record.text.startswith(supervisor.STARTED):
                return ""
            if record.stream == "system" and record.text.startswith(supervisor.START_FAILED) and not alive:
                # Reported once its supervisor has ended, so that its exit record is there too.
                return f"{record.text.removeprefix(supervisor.START_FAILED)} (exit code {supervisor.EXEC_FAILED_CODE})"
        if alive:
            return None
        lines = [line for line in _read_text(_supervisor_log(handle)).splitlines() if line.strip()]
        return "its supervisor ended without starting it" + (f": {lines[-1]}" if lines else "")

    # Watching.

    def _reap(self) -> None:
        """Collects the exit status of the supervisors this engine started, so none stays a zombie."""
        for pid in list(self._children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._children.discard(pid)

    def _is_supervisor(self, handle: ReplicaHandle, stat: _ProcStat) -> bool:
        """Whether the process at `handle.pid` is still the replica's supervisor, not a reused pid."""
        match = _START_REF.search(handle.engine_ref)
        if match is not None:
            return stat.start == int(match.group(1))
        # A handle without a start time: recognise the supervisor by its command line.
        return handle.exit_path in _read_text(f"/proc/{handle.pid}/cmdline").split("\0")

    def _supervisor_alive(self, handle: ReplicaHandle) -> bool:
        stat = _proc_stat(handle.pid)
        if stat is None or not self._is_supervisor(handle, stat):
            return False
        if stat.state in ("Z", "X"):
            # Ended: reap it if it is our child (started by an earlier engine in this process, or
            # adopted because this process is a subreaper); otherwise its parent will.
            _reap_one(handle.pid)
            self._children.discard(handle.pid)
            return False
        return True

    def _recorded_exit(self, handle: ReplicaHandle) -> ReplicaExit | None:
        """How the replica ended, from its exit record (cached: the record is written once)."""
        try:
            st = os.stat(handle.exit_path)
        except FileNotFoundError:
            return None
        key, version = (handle.exit_path, handle.replica), (st.st_ino, st.st_mtime_ns)
        cached = self._exits.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        result = exit_from_record(handle)
        if len(self._exits) >= _CACHED_EXITS:
            del self._exits[next(iter(self._exits))]
        self._exits[key] = (version, result)
        return result

    # Killing.

    def _group_is_ours(self, handle: ReplicaHandle) -> bool:
        """False when the group's id now belongs to someone else (possible only once it was empty)."""
        if handle.pgid != handle.pid:
            return True
        stat = _proc_stat(handle.pgid)
        return stat is None or self._is_supervisor(handle, stat)

    def _signal_group(self, handle: ReplicaHandle, sig: int) -> None:
        if self._group_is_ours(handle):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pgid, sig)

    def _gang_alive(self, handle: ReplicaHandle) -> bool:
        """Whether a process of the replica's group still runs (zombies do not: they only wait for a parent)."""
        self._reap()
        if self._supervisor_alive(handle):
            return True
        if not self._group_is_ours(handle):
            return False
        try:
            os.killpg(handle.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a member we may not signal (setuid): report it rather than pretend
        alive = False
        for pid, stat in _group_members(handle.pgid):
            if stat.state not in ("Z", "X"):
                alive = True
            elif stat.ppid == os.getpid():  # orphans adopted by this process (a subreaper, or pid 1)
                _reap_one(pid)
        return alive


def prepare_run_dir(attempt: AttemptLaunch) -> str:
    """Checks the replicas and makes the run directory; returns its absolute path."""
    for replica in attempt.replicas:
        name = replica.replica
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise EngineError(f"{attempt.job}: {name!r} cannot name a replica's files")
        if not replica.command:
            raise EngineError(f"{attempt.job}: replica {name} has no command")
    run_dir = os.path.abspath(attempt.run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise EngineError(f"{attempt.job}: cannot create the run directory {run_dir}: {e}") from e
    return run_dir


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap_one(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _proc_stat(pid: int) -> _ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice num_threads itrealvalue starttime ..."; comm may hold anything.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return _ProcStat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _group_members(pgid: int) -> list[tuple[int, _ProcStat]]:
    members: list[tuple[int, _ProcStat]] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat.pgid == pgid:
                members.append((int(entry), stat))
    return members


def _read_text(path: str, limit: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _supervisor_log(handle: ReplicaHandle) -> str:
    return handle.log_path.removesuffix(".log") + ".supervisor.log"


def stderr_tail(handle: ReplicaHandle) -> str:
    records = tail_records(handle.log_path, STDERR_LINES, stream="stderr", max_bytes=_STDERR_SCAN_BYTES)
    return "\n".join(record.text for record in records)


def exit_from_record(handle: ReplicaHandle) -> ReplicaExit:
    try:
        record = json.loads(_read_text(handle.exit_path))
        exit_code, sig = record["exit_code"], record.get("signal", 0)
        if not (exit_code is None or type(exit_code) is int) or type(sig) is not int:
            raise ValueError(f"unexpected values {exit_code!r}, {sig!r}")
    except (ValueError, TypeError, KeyError) as e:
        message = f"the exit record {handle.exit_path} is unreadable: {e}"
        return ReplicaExit(handle.replica, None, message=message, details=stderr_tail(handle), lost=True)
    message = supervisor.describe_status(exit_code, sig)
    when = record.get("time_ns", 0)
    when = when if type(when) is int else 0
    if exit_code == 0:
        return ReplicaExit(handle.replica, 0, message=message, time_ns=when)
    details = ""
    reason = record.get("message")  # the supervisor's, when the command could not start
    error = _read_error_file(handle.error_path)
    if error is not None:
        reason = reason or error[0]
        details = error[1]
    if isinstance(reason, str) and reason.strip():
        message += ": " + _first_line(reason)
    return ReplicaExit(handle.replica, exit_code, sig, message, details or stderr_tail(handle), time_ns=when)


def _read_error_file(path: str) -> tuple[str, str] | None:
    """(message, callstack) from a torchelastic error file, if there is one of that shape."""
    text = _read_text(path, _MAX_ERROR_FILE_BYTES)
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    message = doc.get("message") if isinstance(doc, dict) else None
    if isinstance(message, str):
        return message, ""
    if isinstance(message, dict) and isinstance(message.get("message"), str):
        extra = message.get("extraInfo")
        stack = extra.get("py_callstack") if isinstance(extra, dict) else None
        return message["message"], stack if isinstance(stack, str) else ""
    return None


def _first_line(text: str, limit: int = 500) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _supervisors_in(run_dir: pathlib.Path, attempt: int) -> list[ReplicaHandle]:
    """Handles for the replica supervisors an attempt's logs name (`started pid N (supervisor pid M)`)."""
    out = []
    for log_file in sorted(run_dir.glob("*.log")):
        if log_file.name.endswith(".supervisor.log"):
            continue
        first = read_records(str(log_file), 0, max_records=1)
        if (
            not first
            or not first[0].text.startswith(supervisor.STARTED)
            or "(supervisor pid " not in first[0].text
        ):
            continue
        try:
            pid = int(first[0].text.split("(supervisor pid ", 1)[1].split(")", 1)[0])
        except ValueError:
            continue
        base = str(log_file)[: -len(".log")]
        out.append(
            ReplicaHandle(
                replica=log_file.stem, rank=0, attempt=attempt, pid=pid, pgid=pid, log_path=str(log_file),
                exit_path=f"{base}.exit.json", error_path=f"{base}.error.json",
            )
        )  # fmt: skip
    return out
