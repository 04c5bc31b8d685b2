"""The default `make up` stack (auth, the gateway control plane, Envoy), driven as a user would:
the CLI through Envoy, HTTP/JSON through Envoy, and a kill -9 of the control plane."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_local.ports import free_port
from pai_local.testing import RunningStack, wait_for


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(
        tmp_path / "home",
        env={
            "PAI_AUTH_LISTEN": f"127.0.0.1:{free_port()}",
            "PAI_GATEWAY_LISTEN": f"127.0.0.1:{free_port()}",
            "PAI_ENVOY_LISTEN": f"127.0.0.1:{free_port()}",
            "PAI_ENVOY_ADMIN_PORT": str(free_port()),
            "PAI_LOG_LEVEL": "WARNING",
        },
    )
    yield running
    running.close()


MNIST = Path(__file__).resolve().parents[2] / "examples" / "train_mnist_ddp"


def pai(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAI_")}
    env["PAI_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "pai_cli", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def get(url: str, key: str | None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"} if key else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def train_on_a_dataset_and_register_the_model(stack: RunningStack, envoy: str, key: str) -> None:
    """The journey of the README: register data, train the example on it over 2 workers, get a model."""
    home = stack.home
    data = home.parent / "digits"
    made = subprocess.run([sys.executable, str(MNIST / "train.py"), "--write-data", str(data)], timeout=120)
    assert made.returncode == 0
    created = pai(home, "dataset", "create", "digits", "--uri", str(data))
    assert created.returncode == 0, created.stdout + created.stderr
    job = pai(
        home, "job", "submit", "mnist", "--workers", "2", "--code", str(MNIST),
        "--command", "python train.py --epochs 1 --steps-per-epoch 3", "--resources", "cpu=0.5",
        "--dataset", "digits", "--output-model", "mnist", "--wait",
    )  # fmt: skip
    assert job.returncode == 0 and "SUCCEEDED" in job.stdout, job.stdout + job.stderr
    logs = pai(home, "job", "logs", "mnist").stdout
    assert f"data from {data}: 8192 train" in logs, logs
    wait_for(
        "the model version registered",
        lambda: "versions/1" in pai(home, "job", "get", "mnist", "--output", "json").stdout,
        timeout=30,
    )
    versions = json.loads(pai(home, "model", "versions", "mnist", "--output", "json").stdout)
    assert [v["sourceJob"] for v in versions] == ["workspaces/default/jobs/mnist"]
    assert set(versions[0]["metrics"]) >= {"loss", "accuracy"}
    assert versions[0]["trainingDatasets"] == ["workspaces/default/datasets/digits/versions/1"]
    shown = pai(home, "lineage", "show", "model", "mnist", "--direction", "up")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "PRODUCED" in shown.stdout and "CONSUMED_BY" in shown.stdout, shown.stdout
    dot = pai(home, "lineage", "show", "model", "mnist:1", "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.startswith("digraph"), dot.stdout + dot.stderr
    # and lineage answers HTTP/JSON through Envoy too
    code, body = get(f"http://{envoy}/api/v1/workspaces/default/models/mnist/versions/1", key)
    assert code == 200 and body["artifactUri"].endswith("/output"), body


def test_default_stack_serves_through_envoy_and_survives_the_control_plane(stack: RunningStack) -> None:
    info = stack.wait_ready("auth", "scheduler", "lineage", "dlc", "gateway", "envoy", timeout=90)
    home = stack.home
    credentials = tomllib.loads((home / "credentials").read_text())
    envoy = info["services"]["envoy"]["address"]
    assert credentials["endpoint"] == envoy  # the CLI goes through the gateway

    status = pai(home, "status", "--output", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert {c["name"]: c["status"] for c in json.loads(status.stdout)["components"]} == dict.fromkeys(
        ["auth", "scheduler", "lineage", "dlc", "gateway", "envoy", "nats"], "SERVING"
    )
    assert pai(home, "gateway", "status").returncode == 0
    assert "prefix /pai.auth.v1." in pai(home, "gateway", "routes").stdout

    url = f"http://{envoy}/api/v1/workspaces/default"
    assert get(url, credentials["api_key"])[0] == 200
    # the scheduler found this machine and serves it as the `local` group, through the gateway
    code, nodes = get(f"http://{envoy}/api/v1/resourceGroups/local/nodes", credentials["api_key"])
    assert code == 200 and nodes["nodes"][0]["source"] == "LOCAL"
    assert int(nodes["nodes"][0]["cpuMilli"]) >= 1000
    # a new user's first job needs no quota step: the default workspace may use the whole machine
    job = pai(home, "job", "submit", "hello", "--command", f"{sys.executable} -c 'print(6 * 7)'", "--wait")
    assert job.returncode == 0 and "SUCCEEDED" in job.stdout, job.stdout + job.stderr
    # ... through the quota the scheduler gave it on its first start, as the CLI shows through Envoy
    quotas = pai(home, "quota", "list", "--output", "json")
    assert quotas.returncode == 0, quotas.stdout + quotas.stderr
    (default,) = json.loads(quotas.stdout)
    assert default["workspace"] == "workspaces/default"
    assert not any(default.get("min", {}).values())  # nothing guaranteed, nothing held back from others
    assert int(default["max"]["cpuMilli"]) == int(nodes["nodes"][0]["cpuMilli"])
    listed = pai(home, "node", "list", "--output", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["source"] == "LOCAL"
    queue = pai(home, "queue", "list")
    assert queue.returncode == 0, queue.stdout + queue.stderr
    logs = pai(home, "job", "logs", "hello")
    assert logs.returncode == 0 and "[worker-0] 42" in logs.stdout, logs.stdout + logs.stderr
    code, body = get(url, None)
    assert code == 401 and body["code"] == 16
    train_on_a_dataset_and_register_the_model(stack, envoy, credentials["api_key"])

    old = info["services"]["gateway"]["pid"]
    os.kill(old, signal.SIGKILL)
    for _ in range(20):  # Envoy serves on while the control plane is gone and restarting
        assert get(url, credentials["api_key"])[0] == 200
    wait_for(
        "gateway restarted",
        lambda: (
            (s := stack.stack()) is not None
            and s["services"]["gateway"]["pid"] != old
            and s["services"]["gateway"]["state"] == "ready"
        ),
        timeout=60,
    )
    assert pai(home, "user", "create", "after-restart").returncode == 0
    wait_for("envoy resynced", lambda: pai(home, "gateway", "status").returncode == 0, timeout=30)
    assert stack.terminate() == 0
    assert stack.family() == []
