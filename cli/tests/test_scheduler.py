"""`pai quota|node|queue` against the real scheduler (and the real auth behind it), and amount parsing."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from pai.scheduler.v1 import (
    node_pb2,
    node_pb2_grpc,
    resource_group_pb2,
    resource_group_pb2_grpc,
    types_pb2,
    workload_pb2,
    workload_pb2_grpc,
)
from pai_cli.commands.scheduler import age
from pai_cli.quantities import AmountError, limits_text, memory_text, milli_text, parse_limits

from .conftest import AuthProcess, Pai, SchedulerProcess

GiB = 2**30
W = workload_pb2.Workload


class Scheduler:
    """The scheduler's gRPC API as the admin, for what the CLI does not do (groups, nodes, workloads)."""

    def __init__(self, address: str, key: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.groups = resource_group_pb2_grpc.ResourceGroupServiceStub(self.channel)
        self.nodes = node_pb2_grpc.NodeServiceStub(self.channel)
        self.workloads = workload_pb2_grpc.WorkloadServiceStub(self.channel)

    def group(self, gid: str) -> None:
        self.groups.CreateResourceGroup(
            resource_group_pb2.CreateResourceGroupRequest(
                resource_group_id=gid, resource_group=resource_group_pb2.ResourceGroup()
            ),
            metadata=self.metadata,
        )

    def node(self, gid: str, nid: str, gpus: int, model: str = "A100", cpu_cores: int = 32) -> None:
        self.nodes.RegisterNode(
            node_pb2.RegisterNodeRequest(
                parent=f"resourceGroups/{gid}",
                node_id=nid,
                node=node_pb2.Node(
                    source=node_pb2.Node.SIMULATED,
                    cpu_milli=cpu_cores * 1000,
                    memory_bytes=256 * GiB,
                    gpus=[node_pb2.Gpu(index=i, model=model) for i in range(gpus)],
                ),
            ),
            metadata=self.metadata,
        )

    def cordon(self, gid: str, nid: str) -> None:
        self.nodes.CordonNode(
            node_pb2.CordonNodeRequest(name=f"resourceGroups/{gid}/nodes/{nid}", reason="maintenance"),
            metadata=self.metadata,
        )

    def submit(
        self, ws: str, wid: str, gid: str, gpus: int, *, spot: bool = False, priority: int = 0
    ) -> None:
        pod_set = workload_pb2.PodSet(
            name="worker", count=1, cpu_milli=1000, memory_bytes=GiB, gpu_count=gpus
        )
        self.workloads.CreateWorkload(
            workload_pb2.CreateWorkloadRequest(
                parent=f"workspaces/{ws}",
                workload_id=wid,
                workload=W(
                    resource_group=f"resourceGroups/{gid}",
                    preemptible=spot,
                    priority=priority,
                    pod_sets=[pod_set],
                ),
            ),
            metadata=self.metadata,
        )

    def wait(
        self, ws: str, wid: str, check: Callable[[workload_pb2.Workload], bool]
    ) -> workload_pb2.Workload:
        deadline = time.monotonic() + 15
        while True:
            w: workload_pb2.Workload = self.workloads.GetWorkload(
                workload_pb2.GetWorkloadRequest(name=f"workspaces/{ws}/workloads/{wid}"),
                metadata=self.metadata,
            )
            if check(w):
                return w
            assert time.monotonic() < deadline, f"workload {wid} did not get there: {w}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def api(scheduler: SchedulerProcess, auth: AuthProcess) -> Iterator[Scheduler]:
    client = Scheduler(scheduler.address, auth.admin_key)
    try:
        yield client
    finally:
        client.channel.close()


@pytest.fixture
def admin(pai: Pai, scheduler: SchedulerProcess, auth: AuthProcess, monkeypatch: pytest.MonkeyPatch) -> Pai:
    """The CLI as the platform admin, calling the scheduler directly (the gateway would route there)."""
    monkeypatch.setenv("PAI_ENDPOINT", scheduler.address)
    monkeypatch.setenv("PAI_API_KEY", auth.admin_key)
    return pai


def table(out: str) -> tuple[list[str], list[dict[str, str]]]:
    """A table's rows as dicts by header; headers are found by their column offsets."""
    lines = out.splitlines()
    header = lines[0]
    names: list[str] = []
    starts: list[int] = []
    i = 0
    while i < len(header):
        if header[i] != " " and (i == 0 or header[i - 2 : i] == "  "):
            starts.append(i)
            end = header.find("  ", i)
            names.append(header[i : end if end >= 0 else len(header)])
            i = end if end >= 0 else len(header)
        else:
            i += 1
    bounds = [*starts[1:], None]
    rows = [
        {n: line[s:e].strip() for n, s, e in zip(names, starts, bounds, strict=True)} for line in lines[1:]
    ]
    return names, rows


def test_quota_node_and_queue_against_the_real_scheduler(admin: Pai, api: Scheduler, cli_home: Path) -> None:
    api.group("train")
    api.node("train", "big", gpus=8)
    api.node("train", "cpu-only", gpus=0, cpu_cores=16)
    api.cordon("train", "cpu-only")

    created = admin.ok(
        "quota", "create", "train/research", "--workspace", "research",
        "--min", "gpu=4,cpu=16,memory=64Gi,gpu/A100=2", "--max", "gpu=16,gpu/A100=12", "--weight", "2",
    )  # fmt: skip
    assert "resourceGroups/train/quotas/research" in created.out
    assert "gpu=4, cpu=16, memory=64Gi, gpu/A100=2" in created.out

    headers, rows = table(admin.ok("quota", "list").out)
    assert headers == ["NAME", "WORKSPACE", "MIN GPU", "MAX GPU", "USED GPU", "PENDING", "ADMITTED", "STATE"]
    assert rows == [
        {
            "NAME": "train/research", "WORKSPACE": "research", "MIN GPU": "4 (A100=2)",
            "MAX GPU": "16 (A100=12)", "USED GPU": "0", "PENDING": "0", "ADMITTED": "0", "STATE": "ACTIVE",
        }
    ]  # fmt: skip

    api.submit("research", "fits", "train", gpus=6, priority=10)
    api.wait("research", "fits", lambda w: w.state == W.ADMITTED)
    api.submit("research", "too-big", "train", gpus=4, spot=True, priority=3)
    waiting = api.wait("research", "too-big", lambda w: w.pending_reason_code == W.NO_PLACEMENT)
    assert waiting.pending_reason == "not enough free gpu: 4 gpu requested, 2 gpu free"

    # the queue: the workspace from the credentials' default (`default`) has nothing waiting
    assert admin.ok("queue", "list").out == "no pending workloads in workspaces/default\n"
    headers, rows = table(admin.ok("queue", "list", "--workspace", "research").out)
    assert headers == ["POS", "WORKLOAD", "QUOTA", "PRIORITY", "SPOT", "GPUS", "AGE", "REASON"]
    assert len(rows) == 1
    row = rows[0]
    assert row | {"AGE": ""} == {
        "POS": "1", "WORKLOAD": "too-big", "QUOTA": "train/research", "PRIORITY": "3", "SPOT": "yes",
        "GPUS": "4", "AGE": "", "REASON": "not enough free gpu: 4 gpu requested, 2 gpu free",
    }  # fmt: skip
    assert row["AGE"].endswith("s")
    every = json.loads(admin.ok("queue", "list", "--all", "-o", "json").out)
    assert [(w["name"], w["state"], w["pendingReasonCode"]) for w in every] == [
        ("workspaces/research/workloads/too-big", "PENDING", "NO_PLACEMENT")
    ]
    assert every[0]["pendingReason"] == "not enough free gpu: 4 gpu requested, 2 gpu free"
    assert table(admin.ok("queue", "list", "--all").out)[1][0]["WORKLOAD"] == "research/too-big"

    # the workspace saved in the credentials is the default
    (cli_home).mkdir(exist_ok=True)
    (cli_home / "credentials").write_text('workspace = "research"\n')
    assert table(admin.ok("queue", "list").out)[1][0]["WORKLOAD"] == "too-big"

    headers, rows = table(admin.ok("node", "list").out)
    assert headers == ["NAME", "SOURCE", "CPU", "MEMORY", "GPUS", "GPU USED", "STATE"]
    assert rows == [
        {
            "NAME": "train/big", "SOURCE": "SIMULATED", "CPU": "1/32", "MEMORY": "1Gi/256Gi",
            "GPUS": "A100 x8", "GPU USED": "6", "STATE": "ready",
        },
        {
            "NAME": "train/cpu-only", "SOURCE": "SIMULATED", "CPU": "0/16", "MEMORY": "0/256Gi",
            "GPUS": "-", "GPU USED": "-", "STATE": "cordoned",
        },
    ]  # fmt: skip
    nodes = json.loads(admin.ok("node", "list", "train", "-o", "json").out)
    assert [n["allocated"]["gpuMilli"] for n in nodes] == ["6000", "0"]  # int64 is a string in JSON

    usage = admin.ok("quota", "usage", "train/research").out
    assert usage.startswith("QUOTA:      train/research\nWORKSPACE:  research\nSTATE:      ACTIVE\n")
    usage_table = usage.split("\n\n")[1]
    headers, rows = table(usage_table)
    assert headers == ["RESOURCE", "ADMITTED", "BORROWED", "LENT", "PENDING", "AVAILABLE", "MIN", "MAX"]
    by_resource = {r["RESOURCE"]: r for r in rows}
    assert list(by_resource) == ["cpu", "memory", "gpu", "gpu/A100"]
    assert by_resource["gpu"] | {"AVAILABLE": ""} == {
        "RESOURCE": "gpu", "ADMITTED": "6", "BORROWED": "2", "LENT": "0", "PENDING": "4", "AVAILABLE": "",
        "MIN": "4", "MAX": "16",
    }  # fmt: skip
    assert by_resource["gpu/A100"]["ADMITTED"] == "6"
    assert by_resource["gpu/A100"]["MIN"] == "2"
    assert by_resource["memory"]["ADMITTED"] == "1Gi"
    assert by_resource["memory"]["MIN"] == "64Gi"
    assert by_resource["memory"]["MAX"] == "-"
    assert by_resource["cpu"]["LENT"] == "0"  # no sibling borrows its idle guarantee
    assert "WORKLOADS:       1 admitted, 1 pending, 0 preempting" in usage
    assert "DOMINANT SHARE:" in usage

    as_json = json.loads(admin.ok("quota", "usage", "train/research", "-o", "json").out)
    assert as_json["name"] == "resourceGroups/train/quotas/research"
    assert as_json["usage"]["admitted"]["gpuMilli"] == "6000"
    assert as_json["usage"]["pendingWorkloadCount"] == 1

    listed = json.loads(admin.ok("quota", "list", "train", "-o", "json").out)
    assert [(q["name"], q["usage"]["admittedWorkloadCount"]) for q in listed] == [
        ("resourceGroups/train/quotas/research", 1)
    ]
    assert table(admin.ok("quota", "list").out)[1][0]["USED GPU"] == "6"


def test_quota_tree_and_fractional_amounts(admin: Pai, api: Scheduler) -> None:
    api.group("share")
    api.node("share", "t4", gpus=2, model="T4")
    dept = json.loads(admin.ok("quota", "create", "share/dept", "--max", "gpu=2", "-o", "json").out)
    assert dept["workspace"] == ""
    team = json.loads(
        admin.ok(
            "quota", "create", "share/team", "-w", "team", "--parent", "dept", "--max", "gpu=0.5,cpu=500m",
            "-o", "json",
        ).out
    )  # fmt: skip
    assert team["parent"] == "resourceGroups/share/quotas/dept"
    assert team["max"] == {"cpuMilli": "500", "gpuMilli": "500", "gpuModels": []}
    rows = table(admin.ok("quota", "list", "share").out)[1]
    assert [(r["NAME"], r["WORKSPACE"], r["MAX GPU"]) for r in rows] == [
        ("share/dept", "-", "2"),
        ("share/team", "team", "0.5"),
    ]


def test_scheduler_errors_are_one_clear_message(admin: Pai, api: Scheduler) -> None:
    api.group("errs")
    api.node("errs", "n", gpus=2)
    refused = admin("quota", "create", "errs/q", "-w", "errs", "--min", "gpu=2", "--max", "gpu=1")
    assert refused.code == 1
    assert refused.err.startswith("error: ")
    assert "QUOTA_MIN_EXCEEDS_MAX" in refused.err

    missing = admin("quota", "usage", "errs/nope")
    assert missing.code == 1
    assert missing.err.startswith("error: NOT_FOUND: ")

    assert admin("node", "list", "no-such-group").code == 1


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("gpu=lots", "gpu is not a number: 'lots'"),
        ("memory=64GB", "memory is bytes or a number with Ki, Mi, Gi, Ti or Pi"),
        ("gpu=0.0005", "thousandths of a card"),
        ("gpu=-1", "at least 0"),
        ("disk=1", "unknown resource 'disk'"),
        ("gpu=1,gpu=2", "gpu is given twice"),
        ("gpu", "amounts are KEY=VALUE"),
    ],
)
def test_bad_amounts_exit_2_with_a_clear_message(pai: Pai, amount: str, message: str) -> None:
    result = pai("quota", "create", "gpu/q", "--workspace", "ws", "--min", amount)
    assert result.code == 2
    assert "argument --min: " in result.err
    assert message in result.err
    assert result.out == ""


def test_bad_names_exit_2(pai: Pai) -> None:
    result = pai("quota", "usage", "research", "--endpoint", "127.0.0.1:1", "--api-key", "k")
    assert result.code == 2
    assert result.err == "error: a quota is GROUP/ID, e.g. gpu/research: 'research'\n"
    assert pai("node", "list", "a/b", "--endpoint", "127.0.0.1:1", "--api-key", "k").code == 2
    assert pai("queue", "list", "--all", "--workspace", "x").code == 2


def test_parse_limits() -> None:
    limits = parse_limits("gpu=4, cpu=16,memory=64Gi,gpu/A100=2,gpu/T4=0.25")
    assert limits == types_pb2.ResourceLimits(
        gpu_milli=4000,
        cpu_milli=16000,
        memory_bytes=64 * GiB,
        gpu_models=[
            types_pb2.GpuModelAmount(model="A100", gpu_milli=2000),
            types_pb2.GpuModelAmount(model="T4", gpu_milli=250),
        ],
    )
    assert limits_text(limits) == "gpu=4, cpu=16, memory=64Gi, gpu/A100=2, gpu/T4=0.25"
    only_gpu = parse_limits("gpu=0")
    assert only_gpu.HasField("gpu_milli") and only_gpu.gpu_milli == 0  # a real limit of zero
    assert not only_gpu.HasField("cpu_milli")  # not given: no limit
    assert parse_limits("cpu=250m,mem=1.5Ti").cpu_milli == 250
    assert parse_limits("memory=512").memory_bytes == 512
    assert parse_limits("memory=1.5Gi").memory_bytes == 3 * GiB // 2


@pytest.mark.parametrize("text", ["memory=0.3Ki", "cpu=1.5m", "gpu/=1", "gpu/A100=1,GPU/A100=2", "gpu=nan"])
def test_parse_limits_refuses(text: str) -> None:
    with pytest.raises(AmountError):
        parse_limits(text)


def test_formatting() -> None:
    assert [milli_text(m) for m in (0, 500, 1000, 1250, 4000, 333)] == ["0", "0.5", "1", "1.25", "4", "0.333"]
    assert milli_text(1 << 62) == "unlimited"
    assert [memory_text(b) for b in (0, 512, GiB, 64 * GiB, 3 * GiB // 2, 2**40)] == [
        "0", "512", "1Gi", "64Gi", "1.5Gi", "1Ti",
    ]  # fmt: skip
    now = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    assert [age(now - dt.timedelta(seconds=s), now) for s in (5, 300, 7200, 200000, -3)] == [
        "5s", "5m", "2h", "2d", "0s",
    ]  # fmt: skip
