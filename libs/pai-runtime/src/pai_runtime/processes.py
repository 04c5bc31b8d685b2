"""What /proc says about replica supervisors and their process groups, for the local backend.

A supervisor is named for good by its pid and the start time of that process (clock ticks after
boot, field 22 of /proc/<pid>/stat): a pid alone may since belong to another process. A handle's
`engine_ref` carries both ("pid <pid> start <ticks>"); a handle without a start time is recognised
by the supervisor's command line, which names the replica's exit record.

A process that has ended but was not reaped yet (a zombie, state Z) no longer runs: it only waits for
its parent. The supervisors an owner started are its children until it reaps them, and a process that
is a subreaper (or pid 1) adopts orphans of a group; `Supervisors` reaps both, so none piles up.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

from pai_runtime.types import ReplicaHandle

_START_REF = re.compile(r"\bstart (\d+)\b")
_ENDED = ("Z", "X")  # a zombie, or a process being torn down


@dataclass(frozen=True, slots=True)
class ProcStat:
    """What /proc/<pid>/stat says about a process, as much as the backend needs."""

    state: str  # "R", "S", "D", "Z" (exited, not yet reaped), ...
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process for good


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice num_threads itrealvalue starttime ..."; comm may hold anything.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcStat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def process_ref(pid: int) -> str:
    """The `engine_ref` of a supervisor just started: "pid <pid> start <ticks>" (or "pid <pid>")."""
    stat = proc_stat(pid)  # a child exists (maybe as a zombie) until it is reaped
    return f"pid {pid}" if stat is None else f"pid {pid} start {stat.start}"


def group_members(pgid: int) -> list[tuple[int, ProcStat]]:
    members: list[tuple[int, ProcStat]] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat.pgid == pgid:
                members.append((int(entry), stat))
    return members


def read_text(path: str, limit: int = 64 * 1024) -> str:
    """At most `limit` bytes of a file as text; "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def reap_one(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


class Supervisors:
    """The supervisors one backend started (its children, to reap), and checks on any handle's."""

    def __init__(self) -> None:
        self._children: set[int] = set()  # started here and not reaped yet

    def started(self, pid: int) -> None:
        self._children.add(pid)

    def reap(self) -> None:
        """Collects the exit status of the supervisors started here, so none stays a zombie."""
        for pid in list(self._children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._children.discard(pid)

    def is_supervisor(self, handle: ReplicaHandle, stat: ProcStat) -> bool:
        """Whether the process at `handle.pid` is still the replica's supervisor, not a reused pid."""
        match = _START_REF.search(handle.engine_ref)
        if match is not None:
            return stat.start == int(match.group(1))
        # A handle without a start time: recognise the supervisor by its command line.
        return handle.exit_path in read_text(f"/proc/{handle.pid}/cmdline").split("\0")

    def alive(self, handle: ReplicaHandle) -> bool:
        """Whether the replica's supervisor runs."""
        if handle.pid <= 1:
            return False
        stat = proc_stat(handle.pid)
        if stat is None or not self.is_supervisor(handle, stat):
            return False
        if stat.state in _ENDED:
            # Ended: reap it if it is our child (started by an earlier backend in this process, or
            # adopted because this process is a subreaper); otherwise its parent will.
            reap_one(handle.pid)
            self._children.discard(handle.pid)
            return False
        return True

    def group_is_ours(self, handle: ReplicaHandle) -> bool:
        """Whether the group is still the replica's: led by its supervisor, or, once the supervisor is
        gone, for a handle that names it by start time (one from a launch) and not by a log line
        alone, since log files sit where the replica can write and could name anyone's group."""
        if handle.pgid <= 1 or handle.pid <= 1:  # 0 is the caller's own group, 1 init's
            return False
        if handle.pgid != handle.pid:
            return True
        stat = proc_stat(handle.pgid)
        if stat is None:
            return _START_REF.search(handle.engine_ref) is not None
        return self.is_supervisor(handle, stat)

    def signal_group(self, handle: ReplicaHandle, sig: int) -> None:
        if self.group_is_ours(handle):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pgid, sig)

    def signal(self, handle: ReplicaHandle, sig: int) -> None:
        """`sig` to the supervisor, which passes it on to its group once; to the group if it is gone."""
        if self.alive(handle):
            signal_pid(handle.pid, sig)
        else:
            self.signal_group(handle, sig)

    def gang_alive(self, handle: ReplicaHandle) -> bool:
        """Whether a process of the replica's group still runs (zombies do not: they only wait for a parent)."""
        self.reap()
        if self.alive(handle):
            return True
        if not self.group_is_ours(handle):
            return False
        try:
            os.killpg(handle.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a member we may not signal (setuid): report it rather than pretend
        alive = False
        for pid, stat in group_members(handle.pgid):
            if stat.state not in _ENDED:
                alive = True
            elif stat.ppid == os.getpid():  # orphans adopted by this process (a subreaper, or pid 1)
                reap_one(pid)
        return alive
