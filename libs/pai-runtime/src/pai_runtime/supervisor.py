"""The supervisor of one replica: runs its command, logs its output, and records how it ended.

    python -I -S .../pai_runtime/supervisor.py --log PATH --exit PATH [--cwd DIR] -- COMMAND [ARG...]

    --log PATH   the replica's log, appended to in the `pai_runtime.logfile` format
    --exit PATH  the exit record, written once, atomically, when the command has ended
    --cwd DIR    change to DIR before starting the command (default: stay)

The local backend starts one supervisor per replica, in a new session, and then forgets it: the
supervisor writes only to files, so replicas outlive a restart of their owner (dlc, eas, dsw), and a
new owner finds them from the paths above. The command runs as the supervisor's child in the
supervisor's process group (the supervisor leads it), with the environment the supervisor got, so
signalling the group reaches both.

Exit record: JSON `{"exit_code": int | null, "signal": int, "time_ns": int}`; `exit_code` is null and
`signal` non-zero when a signal killed the command. When the command could not be started at all,
`exit_code` is 127 and `message` says why. The supervisor then exits with the command's code (128 +
signal when killed).

Signals: SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 sent to the supervisor are passed on to its whole
process group (the command and what it started), once each, and the supervisor keeps logging until
the command ends. To stop a replica gracefully, signal the supervisor, not the group: a signal sent to
the group would reach the command twice, once directly and once passed on.

This runs once per replica and must start fast: standard library only (the backend starts it by path
with `python -I -S`, so no other package can be imported, nor shadow one, and it never imports
`pai_runtime` itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
from types import FrameType

# The log format, as in `pai_runtime.logfile` (which this module cannot import).
MAX_TEXT_BYTES = 64 * 1024
STDOUT, STDERR, SYSTEM = "O", "E", "S"

STARTED = "started pid "  # the first line a supervisor logs, once the command runs
START_FAILED = "failed to start: "  # ... or instead, when it could not run (then exit code 127)
EXEC_FAILED_CODE = 127

RELAYED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
DRAIN_SECONDS = 0.5  # after the command ended, how long to wait for output held by what it started


def describe_status(exit_code: int | None, sig: int) -> str:
    """How a command ended, for people: "exit code 3", "killed by signal SIGKILL (9)"."""
    if exit_code is not None:
        return f"exit code {exit_code}"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = "signal"
    return f"killed by signal {name} ({sig})"


class _Log:
    """Appends records to the log, one write per batch of whole lines, so followers see them at once."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.failed = False

    def write(self, tag: str, texts: list[str]) -> None:
        if not texts:
            return
        now = time.time_ns()
        data = "".join(f"{now} {tag} {text}\n" for text in texts).encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as e:  # a full disk must not stop the pumping, or the command blocks on its pipes
            if not self.failed:
                self.failed = True
                print(f"supervisor: cannot write the log: {e}", file=sys.stderr, flush=True)

    def system(self, text: str) -> None:
        # A command line may hold newlines (python -c "..."): a record cannot.
        self.write(SYSTEM, [text.replace("\r", "\\r").replace("\n", "\\n")[: MAX_TEXT_BYTES // 4]])


class _Stream:
    """Cuts one of the command's pipes into lines."""

    def __init__(self, fd: int, tag: str) -> None:
        self.fd = fd
        self.tag = tag
        self.buffer = b""

    def feed(self, data: bytes) -> list[str]:
        """The whole lines now in the buffer (a final unterminated line too, when `data` is EOF)."""
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        if not data and self.buffer:
            lines.append(self.buffer)
            self.buffer = b""
        out: list[bytes] = []
        for line in lines:
            pieces, rest = _cut(line)
            out += [*pieces, rest]
        if len(self.buffer) > MAX_TEXT_BYTES:  # a long line still without its newline: do not hold it
            pieces, self.buffer = _cut(self.buffer)
            out += pieces
        return [text.decode("utf-8", "replace") for text in out]


def _cut(line: bytes) -> tuple[list[bytes], bytes]:
    """`line` cut into pieces of MAX_TEXT_BYTES (never inside a UTF-8 character) and the rest."""
    pieces: list[bytes] = []
    while len(line) > MAX_TEXT_BYTES:
        cut = MAX_TEXT_BYTES
        while cut > MAX_TEXT_BYTES - 3 and (line[cut] & 0xC0) == 0x80:
            cut -= 1
        pieces.append(line[:cut])
        line = line[cut:]
    return pieces, line


class _Relay:
    """Passes the signals the supervisor gets on to its process group, once the command runs.

    Only when it leads the group, as the local backend starts it: run by hand from a script, its group is
    the script's, and then only the command gets them.
    """

    def __init__(self) -> None:
        self.child: int | None = None
        self.early: list[int] = []  # signals that came before the command existed

    def install(self) -> None:
        for signum in RELAYED_SIGNALS:
            signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.child is None:
            self.early.append(signum)
        else:
            self.send(signum)

    def command_started(self, pid: int) -> None:
        self.child = pid
        for signum in self.early:
            self.send(signum)

    def send(self, signum: int) -> None:
        if self.child is None:
            return
        if os.getpgrp() != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signum)
            return
        # The supervisor is in the group too: ignore the signal for the moment it is sent (an
        # ignored signal is discarded when sent, not left pending).
        signal.signal(signum, signal.SIG_IGN)
        try:
            os.killpg(0, signum)
        finally:
            signal.signal(signum, self.handle)


def _write_exit(path: str, record: dict[str, object]) -> None:
    """Writes the exit record all at once: a reader sees no file or the whole record."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pump(child: subprocess.Popen[bytes], log: _Log) -> None:
    """Logs the command's output until it has ended (and its pipes are drained)."""
    assert child.stdout is not None and child.stderr is not None
    streams = [_Stream(child.stdout.fileno(), STDOUT), _Stream(child.stderr.fileno(), STDERR)]
    selector = selectors.DefaultSelector()
    for stream in streams:
        os.set_blocking(stream.fd, False)
        selector.register(stream.fd, selectors.EVENT_READ, stream)
    try:
        pidfd: int | None = os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # before Linux 5.3: look every 0.1 s instead
        pidfd = None
    if pidfd is not None:
        selector.register(pidfd, selectors.EVENT_READ, None)
    deadline: float | None = None  # set once the command has ended
    try:
        while streams:
            if deadline is None:
                timeout = None if pidfd is not None else 0.1
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break  # something the command started holds its pipes: stop waiting for it
            for key, _ in selector.select(timeout):
                stream = key.data
                if stream is None:  # the pidfd: the command has ended
                    selector.unregister(key.fd)
                    deadline = time.monotonic() + DRAIN_SECONDS
                    continue
                try:
                    data = os.read(stream.fd, 65536)
                except BlockingIOError:
                    continue
                log.write(stream.tag, stream.feed(data))
                if not data:
                    selector.unregister(stream.fd)
                    streams.remove(stream)
            if deadline is None and pidfd is None and child.poll() is not None:
                deadline = time.monotonic() + DRAIN_SECONDS
        for stream in streams:  # what was still unterminated when we stopped waiting
            log.write(stream.tag, stream.feed(b""))
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)


def run(log_path: str, exit_path: str, cwd: str | None, argv: list[str]) -> int:
    """Runs `argv` to its end; returns the supervisor's exit code."""
    log = _Log(log_path)
    relay = _Relay()
    relay.install()
    try:
        if cwd is not None:
            os.chdir(cwd)
    except OSError as e:
        return _start_failed(log, exit_path, f"cannot change to directory {cwd}: {e.strerror or e}")
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    except OSError as e:
        return _start_failed(log, exit_path, f"cannot run {shlex.quote(argv[0])}: {e.strerror or e}")
    log.system(f"{STARTED}{child.pid} (supervisor pid {os.getpid()}): {shlex.join(argv)}")
    relay.command_started(child.pid)
    with child:
        _pump(child, log)
        status = child.wait()  # the waitpid status: negative when a signal killed it
    exit_code, sig = (None, -status) if status < 0 else (status, 0)
    log.system(f"exited with code {exit_code}" if exit_code is not None else describe_status(None, sig))
    _write_exit(exit_path, {"exit_code": exit_code, "signal": sig, "time_ns": time.time_ns()})
    return 128 + sig if exit_code is None else exit_code


def _start_failed(log: _Log, exit_path: str, message: str) -> int:
    log.system(START_FAILED + message)
    record = {"exit_code": EXEC_FAILED_CODE, "signal": 0, "time_ns": time.time_ns(), "message": message}
    _write_exit(exit_path, record)
    return EXEC_FAILED_CODE


def _usage(error: str) -> int:
    print(f"supervisor: {error}", file=sys.stderr)
    print("usage: supervisor --log PATH --exit PATH [--cwd DIR] -- COMMAND [ARG...]", file=sys.stderr)
    return 2


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    options: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i] != "--":
        if args[i] not in ("--log", "--exit", "--cwd") or i + 1 >= len(args):
            return _usage(f"unexpected argument {args[i]!r}")
        options[args[i]] = args[i + 1]
        i += 2
    command = args[i + 1 :]
    if "--log" not in options or "--exit" not in options or not command:
        return _usage("--log, --exit and a command after -- are required")
    # Make the paths absolute before changing directory.
    log_path, exit_path = os.path.abspath(options["--log"]), os.path.abspath(options["--exit"])
    return run(log_path, exit_path, options.get("--cwd"), command)


if __name__ == "__main__":
    sys.exit(main())
