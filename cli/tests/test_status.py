"""`pai status` against a real auth service and a real nats-server: SERVING, then down."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pai_common.testing import free_port

from .conftest import AuthProcess, Pai


def write_stack(home: Path, services: dict[str, str], nats_url: str | None, restarts: int = 0) -> None:
    """A stack.json in the format `make up` writes."""
    run = home / "run"
    run.mkdir(parents=True, exist_ok=True)
    document = {
        "nats_url": nats_url,
        "nats_monitor_url": None,
        "supervisor_pid": os.getpid(),
        "services": {
            name: {"address": address, "pid": None, "restarts": restarts, "log": str(home / f"{name}.log")}
            for name, address in services.items()
        },
    }
    (run / "stack.json").write_text(json.dumps(document))


def rows(table: str) -> dict[str, list[str]]:
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATUS", "RESTARTS"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_status_reports_auth_and_nats_serving(
    pai: Pai, auth: AuthProcess, nats_url: str, cli_home: Path
) -> None:
    write_stack(cli_home, {"auth": auth.address}, nats_url, restarts=2)

    result = pai("status")

    assert result.code == 0, result.err
    assert rows(result.out) == {"auth": [auth.address, "SERVING", "2"], "nats": [nats_url, "SERVING", "-"]}
    report = json.loads(pai("status", "--output", "json").out)
    assert report["healthy"] is True
    assert [c["status"] for c in report["components"]] == ["SERVING", "SERVING"]


def test_status_exits_1_when_the_service_goes_down(
    pai: Pai, nats_url: str, cli_home: Path, tmp_path: Path
) -> None:
    service = AuthProcess(tmp_path / "own-auth", nats_url)
    service.start()
    try:
        write_stack(cli_home, {"auth": service.address}, nats_url)
        assert pai("status").code == 0
    finally:
        service.stop()

    result = pai("status")

    assert result.code == 1
    assert rows(result.out)["auth"] == [service.address, "UNREACHABLE", "0"]
    assert rows(result.out)["nats"][1] == "SERVING"
    assert "auth: UNREACHABLE" in result.err


def test_status_exits_1_when_nats_is_down(pai: Pai, auth: AuthProcess, cli_home: Path) -> None:
    write_stack(cli_home, {"auth": auth.address}, f"nats://127.0.0.1:{free_port()}")

    result = pai("status", "-o", "json")

    assert result.code == 1
    report = json.loads(result.out)
    assert report["healthy"] is False
    assert {c["name"]: c["status"] for c in report["components"]} == {
        "auth": "SERVING",
        "nats": "UNREACHABLE",
    }


def test_status_without_stack_file_checks_the_logged_in_endpoint(
    admin: Pai, auth: AuthProcess, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = admin("status")
    assert result.code == 0
    assert rows(result.out) == {"auth": [auth.address, "SERVING", "-"]}
    assert "no " in result.err and "stack.json" in result.err

    monkeypatch.setenv("PAI_NATS_URL", nats_url)
    assert rows(admin.ok("status").out)["nats"] == [nats_url, "SERVING", "-"]


def test_status_with_nothing_to_check_says_so(pai: Pai) -> None:
    result = pai("status")
    assert result.code == 1
    assert "nothing to check" in result.err
