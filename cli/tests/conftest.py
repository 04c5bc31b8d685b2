"""The real services as subprocesses (real NATS, real SQLite), and the CLI run in-process against them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pai_cli.main import main
from pai_common.testing import NatsServer, api_key, free_port

START_TIMEOUT_SECONDS = 30.0


class ServiceProcess:
    """`python -m <module>` with its own PAI_HOME and a free port, on a NATS of the test's."""

    service = ""

    def __init__(self, home: Path, nats_url: str) -> None:
        self.home = home
        self.nats_url = nats_url
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
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAI_", "OTEL_"))}
        env.update(PAI_HOME=str(self.home), PAI_NATS_URL=self.nats_url, **self.environment())
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"pai_{self.service}"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_serving()

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.service} exited with {self.proc.returncode}:\n{self.log.read_text()}"
                    )
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise AssertionError(
            f"{self.service} not serving after {START_TIMEOUT_SECONDS}s:\n{self.log.read_text()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class AuthProcess(ServiceProcess):
    """`python -m pai_auth` with a known platform-admin key."""

    service = "auth"

    def __init__(self, home: Path, nats_url: str) -> None:
        super().__init__(home, nats_url)
        self.admin_key = api_key()

    def environment(self) -> dict[str, str]:
        return {"PAI_AUTH_LISTEN": self.address, "PAI_BOOTSTRAP_ADMIN_KEY": self.admin_key}


class SchedulerProcess(ServiceProcess):
    """`python -m pai_scheduler` on SQLite, asking `auth` who callers are; no local-machine node."""

    service = "scheduler"

    def __init__(self, home: Path, nats_url: str, auth: AuthProcess) -> None:
        super().__init__(home, nats_url)
        self.auth = auth

    def environment(self) -> dict[str, str]:
        return {
            "PAI_SCHEDULER_LISTEN": self.address,
            "PAI_AUTH_ENDPOINT": self.auth.address,
            "PAI_SCHEDULER_LOCAL_NODE": "false",
        }


class DlcProcess(ServiceProcess):
    """`python -m pai_dlc` on SQLite, calling `scheduler` with the admin key as its own identity."""

    service = "dlc"

    def __init__(self, home: Path, nats_url: str, auth: AuthProcess, scheduler: SchedulerProcess) -> None:
        super().__init__(home, nats_url)
        self.auth, self.scheduler = auth, scheduler

    def environment(self) -> dict[str, str]:
        return {
            "PAI_DLC_LISTEN": self.address,
            "PAI_AUTH_ENDPOINT": self.auth.address,
            "PAI_DLC_SCHEDULER_ENDPOINT": self.scheduler.address,
            "PAI_DLC_API_KEY": self.auth.admin_key,
            "PAI_DLC_KILL_GRACE": "3",
            "PAI_DLC_POLL_INTERVAL": "0.1",
        }


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server with JetStream of our own on a free port (not the machine's)."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[AuthProcess]:
    """One auth service shared by the module's tests (each test uses ids of its own)."""
    process = AuthProcess(tmp_path_factory.mktemp("auth-home"), nats_url)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def scheduler(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, auth: AuthProcess
) -> Iterator[SchedulerProcess]:
    """One scheduler shared by the module's tests (each test uses resource groups of its own)."""
    process = SchedulerProcess(tmp_path_factory.mktemp("scheduler-home"), nats_url, auth)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def dlc(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, auth: AuthProcess, scheduler: SchedulerProcess
) -> Iterator[DlcProcess]:
    """One dlc shared by the module's tests."""
    process = DlcProcess(tmp_path_factory.mktemp("dlc-home"), nats_url, auth, scheduler)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PAI_HOME of the test's own for the CLI, and no PAI_* settings from outside."""
    for name in [k for k in os.environ if k.startswith("PAI_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "pai-home"
    monkeypatch.setenv("PAI_HOME", str(home))
    return home


@dataclass(frozen=True)
class Result:
    """What one `pai` run did."""

    code: int
    out: str
    err: str


class Pai:
    """Runs `pai` in-process, as `main(argv)`, capturing what it prints."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str) -> Result:
        self._capsys.readouterr()
        code = main(list(argv))
        captured = self._capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return Result(code, captured.out, captured.err)

    def ok(self, *argv: str) -> Result:
        """Run and insist it succeeded."""
        result = self(*argv)
        assert result.code == 0, f"pai {' '.join(argv)} exited {result.code}:\n{result.out}\n{result.err}"
        return result


@pytest.fixture
def pai(capsys: pytest.CaptureFixture[str], cli_home: Path) -> Pai:
    """The CLI, with an empty PAI_HOME of its own."""
    return Pai(capsys)


@pytest.fixture
def admin(pai: Pai, auth: AuthProcess) -> Pai:
    """The CLI logged in as the platform admin."""
    pai.ok("login", "--endpoint", auth.address, "--api-key", auth.admin_key)
    return pai
