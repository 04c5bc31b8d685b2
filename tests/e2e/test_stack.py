"""The stack as a user runs it: `python -m pai_local up` (what `make up` runs), driven by the `pai` CLI.

Checks the acceptance of the foundation: NATS and auth healthy within 60 s, `pai status` says so,
and a `kill -9` of auth loses no user, no key and no event.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from pai.auth.v1 import events_pb2
from pai_local.ports import free_port
from pai_local.testing import RunningStack, grpc_serving, pid_alive, wait_for


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(
        tmp_path / "home",
        env={
            "PAI_SERVICES": "auth",
            "PAI_AUTH_LISTEN": f"127.0.0.1:{free_port()}",
            "PAI_LOG_LEVEL": "WARNING",
        },
    )
    yield running
    running.close()


def pai(home: Path, *args: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAI_")}
    env["PAI_HOME"] = str(home)
    if api_key:
        env["PAI_API_KEY"] = api_key
    proc = subprocess.run(
        [sys.executable, "-m", "pai_cli", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


async def user_created_events(nats_url: str, user: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe("pai.auth.user.created", ordered_consumer=True)
        count = 0
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                return count
            if events_pb2.UserCreated.FromString(msg.data).user.name == user:
                count += 1
    finally:
        await nc.close()


def test_up_status_and_kill_minus_9_of_auth_loses_nothing(stack: RunningStack) -> None:
    started = time.monotonic()
    info = stack.wait_ready("auth", timeout=60)
    assert time.monotonic() - started < 60
    home = stack.home

    status = pai(home, "status", "--output", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    components = {c["name"]: c["status"] for c in json.loads(status.stdout)["components"]}
    assert components == {"auth": "SERVING", "nats": "SERVING"}

    assert pai(home, "user", "create", "carol").returncode == 0
    created = pai(home, "key", "create", "--user", "carol", "--output", "json")
    assert created.returncode == 0, created.stderr
    carol_key = json.loads(created.stdout)["secret"]

    old_pid = info["services"]["auth"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    restarted = wait_for(
        "auth restarted",
        lambda: (
            (s := stack.stack())
            and s["services"]["auth"]["pid"] != old_pid
            and s["services"]["auth"]["state"] == "ready"
            and s
        ),
        timeout=60,
    )
    assert not pid_alive(old_pid) and restarted["services"]["auth"]["restarts"] == 1
    assert grpc_serving(restarted["services"]["auth"]["address"])

    got = pai(home, "user", "get", "carol", "--output", "json")
    assert got.returncode == 0 and json.loads(got.stdout)["name"] == "users/carol"
    whoami = pai(home, "whoami", "--output", "json", api_key=carol_key)
    assert whoami.returncode == 0 and json.loads(whoami.stdout)["name"] == "users/carol"
    assert asyncio.run(user_created_events(restarted["nats_url"], "users/carol")) == 1

    assert stack.terminate() == 0
    assert stack.family() == []
    down = pai(home, "status")
    assert down.returncode == 1
