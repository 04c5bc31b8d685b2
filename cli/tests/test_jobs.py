"""`pai job ...` against real auth, scheduler and dlc processes, training the DDP example for real."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc
import pytest

from pai.scheduler.v1 import (
    node_pb2,
    node_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    resource_group_pb2,
    resource_group_pb2_grpc,
)

from .conftest import AuthProcess, DlcProcess, Pai, SchedulerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_mnist_ddp"
GiB = 2**30


def make_room(scheduler: SchedulerProcess, key: str, workspace: str) -> None:
    """A resource group with one node and a quota for `workspace` (what an admin sets up once)."""
    md = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(scheduler.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
        resource_group_pb2_grpc.ResourceGroupServiceStub(ch).CreateResourceGroup(
            resource_group_pb2.CreateResourceGroupRequest(
                resource_group_id="train", resource_group=resource_group_pb2.ResourceGroup()
            ),
            metadata=md,
        )
        node_pb2_grpc.NodeServiceStub(ch).RegisterNode(
            node_pb2.RegisterNodeRequest(
                parent="resourceGroups/train",
                node_id="box",
                node=node_pb2.Node(source=node_pb2.Node.SIMULATED, cpu_milli=8000, memory_bytes=32 * GiB),
            ),
            metadata=md,
        )
        quota_pb2_grpc.QuotaServiceStub(ch).CreateQuota(
            quota_pb2.CreateQuotaRequest(
                parent="resourceGroups/train",
                quota_id=workspace,
                quota=quota_pb2.Quota(workspace=f"workspaces/{workspace}"),
            ),
            metadata=md,
        )


@pytest.fixture(scope="module")
def room(auth: AuthProcess, scheduler: SchedulerProcess) -> None:
    """Capacity for workspace `ml`, once for the module."""
    make_room(scheduler, auth.admin_key, "ml")


def test_submit_wait_logs_metrics_and_delete(admin: Pai, room: None, dlc: DlcProcess, tmp_path: Path) -> None:
    at = ("--endpoint", dlc.address, "-w", "ml")
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text((EXAMPLE / "train.py").read_text())
    done = admin(
        "job", "submit", "mnist", *at, "--workers", "2", "--code", str(code),
        "--command", f"{sys.executable} train.py --epochs 2 --steps-per-epoch 4", "--wait",
    )  # fmt: skip
    assert done.code == 0, done.err
    assert "SUCCEEDED" in done.out and "RUNNING" in done.err  # progress on stderr, result on stdout
    (code / "train.py").write_text("raise SystemExit(3)\n")  # the job ran a copy: editing is harmless

    listed = json.loads(admin.ok("job", "list", *at, "--output", "json").out)
    assert [j["state"] for j in listed] == ["SUCCEEDED"]
    assert "/code/ml/mnist-" in listed[0]["spec"]["code"]["uri"]

    logs = admin.ok("job", "logs", "mnist", *at).out
    assert "[worker-0] rank=0 world_size=2" in logs and "[worker-1] rank=1 world_size=2" in logs
    tail = admin.ok("job", "logs", "mnist", *at, "--replica", "worker-0", "--tail", "1").out.splitlines()
    assert len(tail) == 1 and tail[0].startswith("[worker-0] ")

    png = tmp_path / "loss.png"
    metrics = admin.ok("job", "metrics", "mnist", *at, "--png", str(png)).out
    assert "loss" in metrics and "accuracy" in metrics
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 500
    series = json.loads(admin.ok("job", "metrics", "mnist", *at, "--key", "loss", "--output", "json").out)
    assert [s["key"] for s in series] == ["loss"] and series[0]["count"] == "8"

    failed = admin(
        "job", "submit", "broken", *at, "--code", str(code), "--command", f"{sys.executable} train.py", "--wait",
    )  # fmt: skip
    assert failed.code == 1 and "FAILED" in failed.out and "worker-0 (rank 0) exit code 3" in failed.out

    assert admin.ok("job", "delete", "mnist", *at).out.strip() == "deleted workspaces/ml/jobs/mnist"
    admin.ok(
        "job", "submit", "sleepy", *at, "--command", f"{sys.executable} -c 'import time; time.sleep(600)'"
    )
    refused = admin("job", "delete", "sleepy", *at)
    assert refused.code == 1 and "force" in refused.err
    assert (
        admin.ok("job", "delete", "sleepy", *at, "--force").out.strip() == "deleted workspaces/ml/jobs/sleepy"
    )
    missing = admin("job", "get", "mnist", *at)
    assert missing.code == 1 and "not" in missing.err.lower()


def test_bad_command_lines_are_usage_errors(admin: Pai, dlc: DlcProcess) -> None:
    at = ("--endpoint", dlc.address, "-w", "ml")
    assert admin("job", "submit", "x", *at).code == 2  # no --command
    assert admin("job", "submit", "x", *at, "--command", "true", "--env", "novalue").code == 2
    assert admin("job", "submit", "x", *at, "--command", "true", "--code", "/does/not/exist").code == 2
    refused = admin("job", "submit", "x", *at, "--command", "true", "--kind", "mpi", "--master")
    assert refused.code == 1 and "roles" in refused.err


TRIAL = (
    "import sys, json\n"
    "hp = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--'))\n"
    "loss = (float(hp['lr']) - 0.1) ** 2 + int(hp['bs']) / 1000\n"
    "print('@pai.metric ' + json.dumps({'step': 1, 'loss': loss}), flush=True)\n"
)


def test_sweep_create_wait_and_trials(admin: Pai, room: None, dlc: DlcProcess, tmp_path: Path) -> None:
    at = ("--endpoint", dlc.address, "-w", "ml")
    template = {"replicaSpecs": [{"role": "WORKER", "command": [sys.executable, "-c", TRIAL]}]}
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"spec": {"jobTemplate": template}}))
    done = admin(
        "sweep", "create", "grid", *at, "-f", str(spec), "--param", "lr=grid:0.05,0.1", "--param", "bs=choice:64,32",
        "--metric", "loss", "--goal", "minimize", "--parallelism", "2", "--wait",
    )  # fmt: skip
    assert done.code == 0, done.out + done.err
    assert "lr=0.1,bs=32" in done.out and "SUCCEEDED" in done.out
    trials = json.loads(admin.ok("sweep", "trials", "grid", *at, "--output", "json").out)
    assert len(trials) == 4 and {t["state"] for t in trials} == {"SUCCEEDED"}
    assert "grid" in admin.ok("sweep", "list", *at).out
    assert admin("sweep", "create", "x", *at, "--param", "lr=double:abc").code == 2
    assert admin("sweep", "create", "x", *at, "--param", "nonsense").code == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    assert admin("sweep", "create", "x", *at, "-f", str(broken)).code == 2


def test_submit_from_a_yaml_file(admin: Pai, room: None, dlc: DlcProcess, tmp_path: Path) -> None:
    at = ("--endpoint", dlc.address, "-w", "ml")
    job = tmp_path / "job.yaml"
    job.write_text(
        "displayName: from yaml\n"
        "spec:\n"
        "  replicaSpecs:\n"
        "    - role: WORKER\n"
        "      count: 1\n"
        f"      command: [{sys.executable!r}, -c, 'print(\"hello from yaml\")']\n"
    )
    done = admin("job", "submit", "yaml", *at, "-f", str(job), "--wait")
    assert done.code == 0, done.out + done.err
    assert "[worker-0] hello from yaml" in admin.ok("job", "logs", "yaml", *at).out


def test_wait_rides_out_an_unreachable_dlc(capsys: pytest.CaptureFixture[str]) -> None:
    # dlc restarting mid-job answers UNAVAILABLE for a moment: --wait keeps following
    from pai.dlc.v1 import job_pb2
    from pai_cli.commands import jobs
    from pai_cli.errors import ApiError
    from pai_cli.output import Output

    answers: list[object] = [
        ApiError(grpc.StatusCode.UNAVAILABLE, "connection refused", "127.0.0.1:1"),
        job_pb2.Job(name="workspaces/ml/jobs/j", state=job_pb2.Job.SUCCEEDED, reason="SUCCEEDED"),
    ]

    class Client:
        jobs = type("Stubs", (), {"GetJob": None})()

        def call(self, method: object, request: object) -> object:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    class Ctx:
        client = Client()
        output = Output("table")

    assert jobs._follow(Ctx(), "workspaces/ml/jobs/j") == 0  # type: ignore[arg-type]
    assert "dlc unreachable, retrying" in capsys.readouterr().err
    answers[:] = [ApiError(grpc.StatusCode.NOT_FOUND, "gone", "127.0.0.1:1")]
    with pytest.raises(ApiError):  # anything else still ends the wait
        jobs._follow(Ctx(), "workspaces/ml/jobs/j")  # type: ignore[arg-type]
