"""The supervisor with the real auth service: the key it writes works, and survives a kill -9."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pai_local.ports import free_port
from pai_local.testing import RunningStack, wait_for

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc"),
    pytest.mark.skipif(importlib.util.find_spec("pai_auth") is None, reason="pai_auth is not installed"),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    # A free port rather than 50051: a developer's own `make up` may be running.
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


def workspace_names(address: str, api_key: str) -> list[str]:
    """ListWorkspaces as the holder of `api_key`."""
    from pai.auth.v1 import workspace_pb2, workspace_pb2_grpc

    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        response = workspace_pb2_grpc.WorkspaceServiceStub(channel).ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(),
            metadata=[("authorization", f"Bearer {api_key}")],
            timeout=5,
        )
    return [workspace.name for workspace in response.workspaces]


def test_the_printed_admin_key_works_and_survives_auth_being_killed(stack: RunningStack) -> None:
    before = stack.wait_ready("auth", timeout=60)["services"]["auth"]
    credentials = tomllib.loads((stack.home / "credentials").read_text())
    assert credentials["endpoint"] == before["address"]
    assert credentials["api_key"] in stack.output
    workspaces = workspace_names(before["address"], credentials["api_key"])
    assert workspaces, "the bootstrap admin sees no workspace"

    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        auth: dict[str, Any] = (stack.stack() or {}).get("services", {}).get("auth", {})
        return auth if auth.get("state") == "ready" and auth.get("pid") != before["pid"] else None

    after = wait_for("auth restarted", restarted, timeout=60)
    assert after["restarts"] == 1
    assert workspace_names(after["address"], credentials["api_key"]) == workspaces
    assert stack.terminate(signal.SIGTERM) == 0, stack.output
    assert stack.family() == []
