"""The real services as subprocesses (real NATS, real SQLite), and the CLI run in-process against them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pai_cli.main import main
from pai_common.testing import AuthProcess, DlcProcess, LineageProcess, NatsServer, SchedulerProcess

__all__ = [
    "AuthProcess",
    "DlcProcess",
    "LineageProcess",
    "SchedulerProcess",
]  # the tests import them from here


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
def lineage(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, auth: AuthProcess
) -> Iterator[LineageProcess]:
    """One lineage shared by the module's tests."""
    process = LineageProcess(tmp_path_factory.mktemp("lineage-home"), nats_url, auth)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def dlc_lineage() -> LineageProcess | None:
    """The lineage dlc resolves datasets with and registers models in: none, unless a module says."""
    return None


@pytest.fixture(scope="module")
def dlc(
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    auth: AuthProcess,
    scheduler: SchedulerProcess,
    dlc_lineage: LineageProcess | None,
) -> Iterator[DlcProcess]:
    """One dlc shared by the module's tests."""
    process = DlcProcess(tmp_path_factory.mktemp("dlc-home"), nats_url, auth, scheduler, lineage=dlc_lineage)
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
