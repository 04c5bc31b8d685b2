"""One child kept running: started, probed until ready, restarted with backoff when it exits."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pai_local.children import (
    OutputSink,
    describe_exit,
    kill_group,
    pump,
    signal_group,
    spawn,
    stop_process,
)
from pai_local.console import Console

_PROBE_INTERVAL = 0.2


class State(enum.StrEnum):
    """Where a supervised child is in its life; written to stack.json."""

    PENDING = "pending"  # waiting for something it depends on
    STARTING = "starting"  # running, not ready yet
    READY = "ready"
    BACKOFF = "backoff"  # exited; waiting before the next start
    STOPPED = "stopped"


@dataclass
class Backoff:
    """Exponential restart delay; forgiven once the child has stayed ready long enough."""

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 60.0
    _next: float = field(default=0.0, init=False)

    def next_delay(self, ready_for: float) -> float:
        """The delay before the next start, given how long the last run was ready."""
        if self._next == 0.0 or ready_for >= self.reset_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


@dataclass(frozen=True)
class ChildConfig:
    """What to run and how to tell that it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    sink: OutputSink
    probe: Callable[[], Awaitable[bool]]  # one readiness check; True when ready
    start_timeout: float
    stop_timeout: float
    describe_ready: str = ""  # appended to the "ready" line, e.g. where it listens
    preflight: Callable[[], str | None] | None = None  # a warning to print before each start


class SupervisedChild:
    """Keeps one child process running until `stop()`."""

    def __init__(
        self,
        config: ChildConfig,
        console: Console,
        on_change: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.state = State.PENDING
        self.pid: int | None = None
        self.restarts = 0
        # Set when the first start has either become ready or given up: dependents wait for it.
        self.first_attempt_done = asyncio.Event()
        self.ever_ready = False
        self._console = console
        self._on_change = on_change
        self._backoff = backoff or Backoff()
        self._stopping = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def name(self) -> str:
        return self.config.name

    async def run(self, after: asyncio.Event | None = None) -> None:
        """Start the child (once `after` is set) and restart it whenever it exits, until stopped."""
        try:
            if after is not None and not await self._wait_either(after, None):
                return
            while not self._stopping.is_set():
                code, ready_for = await self._run_once()
                if self._stopping.is_set():
                    break
                delay = self._backoff.next_delay(ready_for)
                self.restarts += 1
                self._set_state(State.BACKOFF, pid=None)
                self._console.say(
                    f"{self.name} exited ({describe_exit(code)}); restart #{self.restarts} in {delay:g}s"
                )
                if not self.config.sink.echoes:
                    for line in self.config.sink.tail():
                        self._console.line(self.name, line)
                await self._wait_either(self._stopping, delay)
        finally:
            self.first_attempt_done.set()
            self._set_state(State.STOPPED, pid=None)

    async def stop(self, grace: float | None = None) -> None:
        """Stop the child: SIGTERM its process group, SIGKILL after the grace period."""
        self._stopping.set()
        process = self._process
        if process is not None:
            await stop_process(process, self.config.stop_timeout if grace is None else grace)

    def kill_now(self) -> None:
        """SIGKILL the child's process group at once (a second Ctrl-C)."""
        self._stopping.set()
        if self._process is not None and self._process.returncode is None:
            signal_group(self._process.pid, signal.SIGKILL)

    async def _run_once(self) -> tuple[int, float]:
        """Run the child once; return its exit code and how long it was ready."""
        warning = self.config.preflight() if self.config.preflight else None
        if warning:
            self._console.say(f"warning: {warning}")
        try:
            process = await spawn(self.config.argv, self.config.env)
        except OSError as error:  # counts as a crash: retried with backoff
            self._console.say(f"{self.name} cannot start: {error}")
            self.first_attempt_done.set()
            return 127, 0.0
        self._process = process
        self.config.sink.mark(f"started pid {process.pid} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self._set_state(State.STARTING, pid=process.pid)
        assert process.stdout is not None  # spawn() always pipes stdout
        output = asyncio.create_task(pump(process.stdout, self.config.sink))
        exited = asyncio.create_task(process.wait())
        ready_since: float | None = None
        try:
            if await self._wait_ready(exited):
                ready_since = time.monotonic()
                self.ever_ready = True
                self._set_state(State.READY, pid=process.pid)
                self._console.say(f"{self.name} ready{self.config.describe_ready} (pid {process.pid})")
            elif not exited.done() and not self._stopping.is_set():
                self._console.say(f"{self.name} not ready after {self.config.start_timeout:g}s; stopping it")
                await stop_process(process, self.config.stop_timeout)
            self.first_attempt_done.set()
            code = await exited
        finally:
            if not exited.done():  # cancelled: never leave the child behind
                await stop_process(process, self.config.stop_timeout)
            await kill_group(process.pid)
            # A grandchild that left the group may hold the pipe open; do not wait for it forever.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(output, 2.0)
            self._process = None
        ready_for = time.monotonic() - ready_since if ready_since is not None else 0.0
        return code, ready_for

    async def _wait_ready(self, exited: asyncio.Task[int]) -> bool:
        """Probe until ready; False if the child exits, we stop, or the start timeout passes."""
        deadline = time.monotonic() + self.config.start_timeout
        while not exited.done() and not self._stopping.is_set():
            try:
                if await self.config.probe():
                    return not exited.done()
            except Exception as error:  # a probe bug must not take the supervisor down
                self._console.say(f"{self.name}: readiness check failed: {error!r}")
            if time.monotonic() >= deadline:
                return False
            await asyncio.wait({exited}, timeout=_PROBE_INTERVAL)
        return False

    async def _wait_either(self, event: asyncio.Event, seconds: float | None) -> bool:
        """Wait for `event` or until we stop (or `seconds` pass); True if `event` is set."""
        waits = {asyncio.create_task(event.wait()), asyncio.create_task(self._stopping.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return event.is_set() and not self._stopping.is_set()

    def _set_state(self, state: State, *, pid: int | None) -> None:
        self.state, self.pid = state, pid
        self._on_change()
