"""The local backend: each replica is a process on this machine, watched by its own supervisor.

`launch` starts one `pai_runtime.supervisor` per replica (`pai_runtime.spawn`), each in a new session
(so it leads a process group of its own, with the command and whatever the command starts), and
returns as soon as every command runs. The supervisors write everything to files in the run directory
(the replica's log, its exit record: `pai_runtime.records`), never to pipes to the owner, so replicas
keep running while their owner restarts, and a new `LocalBackend` finds them again from their
`ReplicaHandle`s: a supervisor is recognised by its pid and the start time of that process
(`engine_ref` is "pid <pid> start <clock ticks after boot>"), so a reused pid is not taken for a
replica (`pai_runtime.processes`).

Server replicas: `ready` probes each replica that has a `Readiness` (`pai_runtime.probe`) and whose
supervisor still runs; `replace` kills one replica as `kill` does and starts it again from its launch,
in the same files (its log goes on; its exit record and error file start afresh), leaving the others
alone. The replaced replica's old handle is dead: the owner keeps the new one.

Files in the run directory, per replica: `<replica>.log`, `<replica>.exit.json`,
`<replica>.error.json` (TORCHELASTIC_ERROR_FILE, unless the replica sets its own) and
`<replica>.supervisor.log` (the supervisor's own output: empty unless the supervisor itself failed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import signal
import socket
import sys
import time
from collections.abc import Sequence

from pai_runtime import supervisor
from pai_runtime.logfile import read_records
from pai_runtime.probe import PROBE_TIMEOUT, ready_replicas
from pai_runtime.processes import Supervisors, read_text
from pai_runtime.records import LOST_MESSAGE, ExitRecords, lost, supervisors_in
from pai_runtime.spawn import (
    ERROR_FILE_VAR,
    PRIVATE_PREFIXES,
    Sandbox,
    prepare_run_dir,
    replica_base_env,
    spawn_supervisor,
)
from pai_runtime.types import BackendError, BackendInfo, GangLaunch, ReplicaExit, ReplicaHandle, ReplicaLaunch

__all__ = [
    "ERROR_FILE_VAR",
    "KILL_TIMEOUT",
    "LOST_MESSAGE",
    "PRIVATE_PREFIXES",
    "START_TIMEOUT",
    "LocalBackend",
    "Sandbox",
    "replica_base_env",
]

START_TIMEOUT = 30.0  # seconds for a supervisor to start its command (it takes a few ms)
KILL_TIMEOUT = 30.0  # seconds for SIGKILLed processes to go (only uninterruptible sleep delays it)
_TICK = 0.02  # seconds between looks while starting or killing


class LocalBackend:
    """Runs the replicas of a gang as processes on this machine (see the module's docstring).

    `python` runs the supervisors (it needs nothing but its standard library); `sandbox`, if given,
    confines each replica's command (`pai_runtime.spawn.Sandbox`); `probe_timeout` bounds one
    readiness probe.
    """

    def __init__(
        self,
        python: str = sys.executable,
        node: str | None = None,
        *,
        sandbox: Sandbox | None = None,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.python = python
        self.sandbox = sandbox
        self.probe_timeout = probe_timeout
        self.info = BackendInfo("local", node if node is not None else socket.gethostname())
        self._supervisors = Supervisors()
        self._exits = ExitRecords()

    async def launch(self, gang: GangLaunch) -> list[ReplicaHandle]:
        """Starts every replica and waits until each command runs; all or none.

        A command that cannot be started (no such executable, a missing working directory) fails
        the launch with `BackendError`, after the replicas already started have been killed.
        """
        run_dir = prepare_run_dir(gang)  # local file system calls: quick enough for the event loop
        started: list[tuple[ReplicaHandle, int]] = []  # with the log offset where its supervisor begins
        try:
            for replica in gang.replicas:
                started.append(self._start(gang, run_dir, replica))
            await self._wait_started(gang, started)
        except BaseException:
            await self.kill([handle for handle, _ in started], grace=0)
            raise
        return [handle for handle, _ in started]

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas that ended: from their exit record, or lost when the supervisor is gone without one."""
        self._supervisors.reap()
        ended: list[ReplicaExit] = []
        for handle in handles:
            result = self._exits.get(handle)
            if result is None and not self._supervisors.alive(handle):
                # It may have written its record just before it ended.
                result = self._exits.get(handle) or lost(handle)
            if result is not None:
                ended.append(result)
        return ended

    async def ready(self, handles: Sequence[ReplicaHandle]) -> set[str]:
        """The server replicas among `handles` that still run and whose readiness probe passes now."""
        self._supervisors.reap()
        running = [
            h
            for h in handles
            if h.readiness is not None and self._exits.get(h) is None and self._supervisors.alive(h)
        ]
        return await ready_replicas(running, timeout=self.probe_timeout)

    async def replace(self, gang: GangLaunch, handle: ReplicaHandle, grace: float) -> ReplicaHandle:
        """Kills the replica of `handle` as `kill` does, then starts it again from its launch in
        `gang` and waits until its command runs; the other replicas are left alone.

        Raises `BackendError` when `gang` has no launch of that name (nothing is killed then), or
        when the new command cannot start (the replica is left stopped).
        """
        replica = next((r for r in gang.replicas if r.replica == handle.replica), None)
        if replica is None:
            raise BackendError(f"{gang.owner} attempt {gang.attempt}: no replica {handle.replica} to replace")
        run_dir = prepare_run_dir(dataclasses.replace(gang, replicas=(replica,)))
        await self.kill([handle], grace)
        started = self._start(gang, run_dir, replica)
        try:
            await self._wait_started(gang, [started])
        except BaseException:
            await self.kill([started[0]], grace=0)
            raise
        return started[0]

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """The supervisors an attempt's logs name (`started pid N (supervisor pid M)`: the first
        line, and the latest one of a replaced replica); `kill` checks each still is one of ours
        before signalling it."""
        return await asyncio.to_thread(supervisors_in, pathlib.Path(run_dir), attempt)

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """SIGTERM each replica, SIGKILL its process group after `grace` seconds, wait until all are gone.

        SIGTERM goes to the supervisor, which passes it on to its group (the command and what it
        started): sent to the group directly, it would reach the command twice. If the supervisor is
        gone, the group gets it directly. Raises `BackendError` if processes outlive SIGKILL for
        KILL_TIMEOUT seconds (uninterruptible sleep), rather than wait forever.
        """
        handles = list(handles)
        loop = asyncio.get_running_loop()
        for handle in handles:
            self._supervisors.signal(handle, signal.SIGTERM)
        deadline = loop.time() + max(grace, 0.0)
        alive = [handle for handle in handles if self._supervisors.gang_alive(handle)]
        while alive and loop.time() < deadline:
            await asyncio.sleep(min(_TICK, max(deadline - loop.time(), 0.0)))
            alive = [handle for handle in alive if self._supervisors.gang_alive(handle)]
        deadline = loop.time() + KILL_TIMEOUT
        while alive:
            for handle in alive:
                self._supervisors.signal_group(handle, signal.SIGKILL)
            await asyncio.sleep(_TICK)
            alive = [handle for handle in alive if self._supervisors.gang_alive(handle)]
            if alive and loop.time() > deadline:
                names = ", ".join(f"{h.replica} (process group {h.pgid})" for h in alive)
                raise BackendError(f"processes of {names} are still there {KILL_TIMEOUT:.0f} s after SIGKILL")

    # Starting.

    def _start(self, gang: GangLaunch, run_dir: str, replica: ReplicaLaunch) -> tuple[ReplicaHandle, int]:
        handle, offset = spawn_supervisor(
            self.python, gang, run_dir, replica, node=self.info.node, sandbox=self.sandbox
        )
        self._supervisors.started(handle.pid)
        return handle, offset

    async def _wait_started(self, gang: GangLaunch, started: list[tuple[ReplicaHandle, int]]) -> None:
        """Returns once every supervisor has logged that its command runs; raises if one could not."""
        what = f"{gang.owner} attempt {gang.attempt}"
        waiting = list(started)
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            for item in list(waiting):
                handle, offset = item
                problem = self._start_problem(handle, offset)
                if problem == "":
                    waiting.remove(item)
                elif problem is not None:
                    raise BackendError(f"{what}: {handle.replica} did not start: {problem}")
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(handle.replica for handle, _ in waiting)
                raise BackendError(f"{what}: {names} did not start in {START_TIMEOUT:.0f} s")
            await asyncio.sleep(_TICK / 2)

    def _start_problem(self, handle: ReplicaHandle, offset: int) -> str | None:
        """ "" once the command runs, why it could not start, or None while the supervisor is starting."""
        self._supervisors.reap()
        alive = self._supervisors.alive(handle)
        for record in read_records(handle.log_path, offset, max_records=1):
            if record.stream == "system" and record.text.startswith(supervisor.STARTED):
                return ""
            if record.stream == "system" and record.text.startswith(supervisor.START_FAILED) and not alive:
                # Reported once its supervisor has ended, so that its exit record is there too.
                return f"{record.text.removeprefix(supervisor.START_FAILED)} (exit code {supervisor.EXEC_FAILED_CODE})"
        if alive:
            return None
        supervisor_log = handle.log_path.removesuffix(".log") + ".supervisor.log"
        lines = [line for line in read_text(supervisor_log).splitlines() if line.strip()]
        return "its supervisor ended without starting it" + (f": {lines[-1]}" if lines else "")
