"""The real supervisor as a subprocess: real nats-server, a real gRPC service, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from pai_local.credentials import API_KEY_PATTERN
from pai_local.ports import free_port
from pai_local.testing import (
    RunningStack,
    grpc_serving,
    http_status,
    jetstream_count,
    jetstream_publish,
    pid_alive,
    wait_for,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

# The fake services live next to this file; the supervisor's children import them by PYTHONPATH.
HERE = Path(__file__).resolve().parent
FAKE_AUTH = {"PAI_LOCAL_EXTRA_SERVICES": "auth=pai_local_fake_service:0", "PAI_SERVICES": "auth"}


class Launch(Protocol):
    def __call__(
        self, home: Path | None = None, env: dict[str, str] | None = None, command: str = "up"
    ) -> RunningStack: ...


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start supervisors with the fake auth; every one of them is killed at the end."""
    started: list[RunningStack] = []

    def start(
        home: Path | None = None, env: dict[str, str] | None = None, command: str = "up"
    ) -> RunningStack:
        stack = RunningStack(
            home or tmp_path / "home", command=[command], env={**FAKE_AUTH, **(env or {})}, pythonpath=[HERE]
        )
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.close()


def fake_record(home: Path, name: str = "auth") -> dict[str, Any]:
    """What the fake service recorded about its last start."""
    record: dict[str, Any] = json.loads((home / "fake" / f"{name}.json").read_text())
    return record


def stop_and_check_nothing_left(stack: RunningStack) -> None:
    assert stack.terminate(signal.SIGTERM) == 0, stack.output
    assert not stack.stack_path.exists()
    assert stack.family() == [], f"processes left behind: {stack.family()}"


def test_up_starts_nats_and_the_service_and_sigterm_stops_everything(launch: Launch) -> None:
    stack = launch()
    info = stack.wait_ready("auth")
    auth = info["services"]["auth"]
    assert info["supervisor_pid"] == stack.process.pid
    assert auth["restarts"] == 0
    assert grpc_serving(auth["address"])

    # Embedded NATS: JetStream works, monitoring answers, data lives under PAI_HOME.
    assert re.fullmatch(r"nats://127\.0\.0\.1:\d+", info["nats_url"])
    assert jetstream_publish(info["nats_url"], "SMOKE") == 1
    assert http_status(f"{info['nats_monitor_url']}/healthz") == 200
    assert (stack.home / "nats" / "jetstream").is_dir()

    # The service got what it needs from the supervisor.
    record = fake_record(stack.home)
    assert record["pid"] == auth["pid"]
    assert record["address"] == auth["address"]
    assert record["env"]["PAI_NATS_URL"] == info["nats_url"]
    assert record["env"]["PAI_AUTH_ENDPOINT"] == auth["address"]
    assert record["env"]["PAI_HOME"] == str(stack.home)

    # Credentials: private, TOML, the new key in auth's format, handed to auth, printed once.
    credentials_path = stack.home / "credentials"
    assert stat.S_IMODE(credentials_path.stat().st_mode) == 0o600
    credentials = tomllib.loads(credentials_path.read_text())
    assert credentials["endpoint"] == auth["address"]
    assert API_KEY_PATTERN.fullmatch(credentials["api_key"])
    assert record["env"]["PAI_BOOTSTRAP_ADMIN_KEY"] == credentials["api_key"]
    assert stack.output.count(credentials["api_key"]) == 1
    assert "pai status" in stack.output

    # Output: prefixed on the supervisor's stdout (stderr too), and in the service's log.
    assert re.search(r"^auth\s+\| fake auth serving on ", stack.output, re.MULTILINE)
    assert re.search(r"^auth\s+\| fake auth says hello on stderr", stack.output, re.MULTILINE)
    assert "fake auth says hello on stderr" in Path(auth["log"]).read_text()

    children = set(stack.family()) - {stack.process.pid}
    assert children == {auth["pid"], info["nats_pid"]}
    stop_and_check_nothing_left(stack)
    assert "fake auth stopped" in stack.output  # it got SIGTERM and shut down by itself


def test_a_service_killed_with_sigkill_is_restarted(launch: Launch) -> None:
    stack = launch()
    before = stack.wait_ready("auth")["services"]["auth"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        auth = (stack.stack() or {}).get("services", {}).get("auth", {})
        return auth if auth.get("state") == "ready" and auth.get("pid") != before["pid"] else None

    after = wait_for("auth restarted", restarted)
    assert after["restarts"] == 1
    assert after["address"] == before["address"]
    assert grpc_serving(after["address"])
    assert not pid_alive(before["pid"])
    assert "auth exited (killed by SIGKILL); restart #1 in 0.5s" in stack.output
    stop_and_check_nothing_left(stack)


def test_nats_killed_with_sigkill_comes_back_on_its_port_with_its_data(launch: Launch) -> None:
    stack = launch()
    info = stack.wait_ready("auth")
    assert jetstream_publish(info["nats_url"], "KEEP") == 1
    os.kill(info["nats_pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = stack.stack() or {}
        return now if now.get("nats_restarts") == 1 and now.get("nats_state") == "ready" else None

    now = wait_for("nats restarted", restarted)
    assert now["nats_url"] == info["nats_url"]
    assert now["nats_pid"] != info["nats_pid"]
    assert http_status(f"{now['nats_monitor_url']}/healthz") == 200
    assert jetstream_count(now["nats_url"], "KEEP") == 1
    assert "nats exited (killed by SIGKILL)" in stack.output
    stop_and_check_nothing_left(stack)


def test_children_die_with_a_supervisor_killed_with_sigkill(launch: Launch) -> None:
    stack = launch()
    info = stack.wait_ready("auth")
    assert len(stack.family()) == 3  # supervisor, nats-server, auth
    stack.process.kill()
    stack.process.wait(5)
    # The kernel kills them (PR_SET_PDEATHSIG); an exiting process may still look alive briefly.
    children = (info["services"]["auth"]["pid"], info["nats_pid"])
    wait_for("children gone", lambda: not any(pid_alive(pid) for pid in children), timeout=5)
    wait_for("no orphans", lambda: stack.family() == [], timeout=5)


def test_stop_kills_a_child_that_ignores_sigterm_and_what_it_started(launch: Launch) -> None:
    env = {"PAI_FAKE_IGNORE_SIGTERM": "1", "PAI_FAKE_GRANDCHILD": "1", "PAI_LOCAL_STOP_TIMEOUT": "1"}
    stack = launch(env=env)
    stack.wait_ready("auth")
    grandchild = fake_record(stack.home)["grandchild"]
    assert pid_alive(grandchild)
    stop_and_check_nothing_left(stack)
    assert "fake: ignoring SIGTERM" in stack.output
    assert not pid_alive(grandchild)


def test_a_service_that_keeps_crashing_is_restarted_with_growing_delays(launch: Launch) -> None:
    env = {
        "PAI_LOCAL_EXTRA_SERVICES": "auth=pai_local_fake_service:0,crashy=pai_local_fake_crash:0",
        "PAI_SERVICES": "crashy,auth",
    }
    stack = launch(env=env)
    stack.wait_ready("auth")
    wait_for("third restart", lambda: "restart #3 in 2s" in stack.output, timeout=20)
    assert "crashy exited (exit code 3); restart #1 in 0.5s" in stack.output
    assert "restart #2 in 1s" in stack.output
    assert re.search(r"^crashy\s+\| fake crash: giving up", stack.output, re.MULTILINE)
    assert re.search(r"crashy\s+\S+\s+\(log .*\)\s+NOT READY", stack.output)
    stop_and_check_nothing_left(stack)


def test_a_service_whose_port_is_taken_is_retried_until_the_port_is_free(launch: Launch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        address = f"127.0.0.1:{squatter.getsockname()[1]}"
        stack = launch(env={"PAI_AUTH_LISTEN": address})
        wait_for("a failed start", lambda: "auth exited (exit code 1); restart #1" in stack.output)
        assert f"warning: {address} is in use by another process" in stack.output
    info = stack.wait_ready("auth")
    assert info["services"]["auth"]["address"] == address
    assert info["services"]["auth"]["restarts"] >= 1
    stop_and_check_nothing_left(stack)


def test_a_second_start_keeps_the_key_and_follows_auth_to_a_new_address(launch: Launch) -> None:
    first = launch()
    first.wait_ready("auth")
    key = tomllib.loads((first.home / "credentials").read_text())["api_key"]

    # The same PAI_HOME cannot be run twice at once.
    second_at_once = launch(first.home)
    assert second_at_once.process.wait(20) == 1
    assert "another pai-local already runs" in second_at_once.output
    assert first.stack_path.exists()
    assert first.process.poll() is None
    stop_and_check_nothing_left(first)

    address = f"127.0.0.1:{free_port()}"
    again = launch(first.home, {"PAI_AUTH_LISTEN": address})
    assert again.wait_ready("auth")["services"]["auth"]["address"] == address
    credentials = tomllib.loads((first.home / "credentials").read_text())
    assert credentials == {"endpoint": address, "api_key": key}
    assert key not in again.output  # shown once, the first time only
    assert fake_record(first.home)["env"]["PAI_BOOTSTRAP_ADMIN_KEY"] == key
    stop_and_check_nothing_left(again)


def test_an_external_nats_is_used_and_no_key_is_made_up_for_an_initialised_auth(
    launch: Launch, tmp_path: Path
) -> None:
    nats_only = launch(tmp_path / "nats-home", command="nats")

    def nats_ready() -> dict[str, Any] | None:
        info = nats_only.stack()
        return info if info and info["nats_state"] == "ready" else None

    nats_info = wait_for("nats only", nats_ready)
    assert nats_info["services"] == {}

    home = tmp_path / "home"
    (home / "auth").mkdir(parents=True)
    stack = launch(home, {"PAI_NATS_URL": nats_info["nats_url"]})
    info = stack.wait_ready("auth")
    assert info["nats_url"] == nats_info["nats_url"]
    assert info["nats_monitor_url"] is None
    assert info["nats_pid"] is None
    assert set(stack.family()) == {stack.process.pid, info["services"]["auth"]["pid"]}
    assert fake_record(home)["env"]["PAI_NATS_URL"] == nats_info["nats_url"]
    assert fake_record(home)["env"]["PAI_BOOTSTRAP_ADMIN_KEY"] is None
    assert not (home / "credentials").exists()
    assert "use `pai login`" in stack.output
    stop_and_check_nothing_left(stack)
    stop_and_check_nothing_left(nats_only)


def test_up_help_describes_the_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pai_local", "up", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    for setting in ("PAI_HOME", "PAI_NATS_URL", "PAI_SERVICES", "PAI_<SVC>_LISTEN"):
        assert setting in result.stdout
