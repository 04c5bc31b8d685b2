"""Test support: the real supervisor as a subprocess with its own PAI_HOME, and what it left.

Used by deploy/local/tests, and by end-to-end tests that need the whole stack running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pai_local import banner

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll `check` until it returns something other than None/False."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def pids_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment has name=value (zombies have none)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def grpc_serving(address: str) -> bool:
    """The standard health check, from the test's side."""
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


class RunningStack:
    """`python -m pai_local <command>` in its own session; `close()` leaves nothing behind."""

    def __init__(
        self,
        home: Path,
        *,
        command: Sequence[str] = ("up",),
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[Path] = (),
    ) -> None:
        self.home = home
        self.output_path = home.parent / f"{home.name}-supervisor-{time.monotonic_ns()}.out"
        # A clean slate: PAI_* settings from the developer's shell must not leak into the stack.
        full_env = {key: value for key, value in os.environ.items() if not key.startswith("PAI_")}
        paths = [*map(str, pythonpath), full_env.get("PYTHONPATH", "")]
        full_env.update({"PAI_HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, paths))})
        full_env.update(env or {})
        self._output = self.output_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pai_local", *command],
            env=full_env,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    @property
    def stack_path(self) -> Path:
        return self.home / "run" / "stack.json"

    def stack(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.stack_path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def wait_ready(self, *services: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the banner is out and every service in `services` is ready."""

        def ready() -> dict[str, Any] | None:
            assert self.process.poll() is None, f"supervisor exited:\n{self.output}"
            stack = self.stack()
            if stack is None or banner.LAST_LINE not in self.output:
                return None
            states = [stack["services"].get(name, {}).get("state") for name in services]
            return stack if all(state == "ready" for state in states) else None

        return wait_for(f"{services} ready", ready, timeout)

    def family(self) -> list[int]:
        """Every live process started for this PAI_HOME, the supervisor included."""
        return pids_with_env("PAI_HOME", str(self.home))

    def terminate(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 25.0) -> int:
        """Signal the supervisor and wait for it to exit."""
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def close(self) -> None:
        """Kill whatever is left of this stack, by pid (a failed test must not leak processes)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pid in self.family():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._output.close()


async def _publish(url: str, stream: str) -> int:
    connection = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
        ack = await jetstream.publish(f"{stream.lower()}.hello", b"hi")
        return ack.seq
    finally:
        await connection.close()


async def _count(url: str, stream: str) -> int:
    connection = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        info = await connection.jetstream().stream_info(stream)
        return info.state.messages
    finally:
        await connection.close()


def jetstream_publish(url: str, stream: str) -> int:
    """Create a file-backed stream on the NATS at `url`, publish one message; its sequence."""
    return asyncio.run(_publish(url, stream))


def jetstream_count(url: str, stream: str) -> int:
    """How many messages `stream` holds."""
    return asyncio.run(_count(url, stream))


def http_status(url: str) -> int:
    """GET `url` past any proxy in the environment; the status code."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as response:
        status: int = response.status
    return status
