"""Child processes that cannot outlive the supervisor, and their output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# Runs in the child before the real program (it exec()s into it, keeping the pid): asks the
# kernel to SIGKILL it when the supervisor dies, even by kill -9. Done here and not in a
# preexec_fn because preexec_fn can deadlock in a process that has threads (gRPC's), and with
# `-I -S` it costs a few milliseconds. The getppid() check closes the race where the
# supervisor died before prctl ran.
_GUARD = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    os._exit(70)
os.execvp(sys.argv[2], sys.argv[2:])
"""

# A service may log one very long line (a stack trace as JSON); asyncio's default is 64 KiB.
_LINE_LIMIT = 1 << 20


def guarded(argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` under the parent-death guard (Linux only)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), *argv]


async def spawn(argv: Sequence[str], env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start `argv` in its own process group, stdout and stderr merged into one pipe."""
    return await asyncio.create_subprocess_exec(
        *guarded(argv),
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Own session: Ctrl-C reaches only the supervisor, which then stops the children in
        # order; and killpg() reaches whatever a service starts itself.
        start_new_session=True,
        limit=_LINE_LIMIT,
    )


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group led by `pid`, if anything in it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop_process(process: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; return the exit code."""
    if process.returncode is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            signal_group(process.pid, signal.SIGKILL)
    code = await process.wait()
    # Anything the service started and left behind in its group goes with it.
    await kill_group(process.pid)
    return code


async def kill_group(pid: int, patience: float = 2.0) -> None:
    """SIGKILL what is left of the group led by `pid`, and give it a moment to be gone."""
    signal_group(pid, signal.SIGKILL)
    deadline = asyncio.get_running_loop().time() + patience
    # Bounded: a member that is already a zombie counts as present until its new parent reaps it.
    while asyncio.get_running_loop().time() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        await asyncio.sleep(0.02)


def describe_exit(code: int) -> str:
    """`exit code 3` or `killed by SIGKILL`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class OutputSink:
    """Where a child's output goes: appended to its log file, optionally echoed."""

    def __init__(self, log_path: Path, echo: Callable[[str], None] | None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._echo = echo

    @property
    def echoes(self) -> bool:
        """Whether output also goes to the terminal."""
        return self._echo is not None

    def write(self, data: bytes) -> None:
        with self.log_path.open("ab") as log:
            log.write(data if data.endswith(b"\n") else data + b"\n")
        if self._echo is not None:
            self._echo(data.decode("utf-8", errors="replace").rstrip("\r\n"))

    def mark(self, text: str) -> None:
        """Write a line of our own into the log, to tell one run from the next."""
        with self.log_path.open("ab") as log:
            log.write(f"----- pai-local: {text} -----\n".encode())

    def tail(self, lines: int = 10) -> list[str]:
        """The last lines of the log (for a child whose output is not echoed)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16384))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]


async def pump(stream: asyncio.StreamReader, sink: OutputSink) -> None:
    """Copy lines from `stream` to `sink` until the pipe closes."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # asyncio drops a line longer than the limit; say so rather than stop reading.
            sink.write(b"[pai-local: a line over 1 MiB was dropped]\n")
            continue
        if not line:
            return
        sink.write(line)
