"""Inventory sources: openb node lists (the real trace files too) and the local machine."""

from __future__ import annotations

import csv
import os
import pathlib
import re
import socket
import subprocess
from typing import Any

import pytest

from pai_scheduler.inventory import (
    GIB,
    MIB,
    GpuSpec,
    InventoryError,
    NodeSpec,
    detect_local,
    load_openb_nodes,
    parse_openb_nodes,
    short_gpu_model,
    to_node_id,
)


def _traces() -> pathlib.Path:
    """The shared traces: $PAI_TRACES, else `shared/traces` beside the checkout or the workplace's."""
    candidates = [
        pathlib.Path(os.environ.get("PAI_TRACES", "/nonexistent")),
        pathlib.Path(__file__).resolve().parents[5] / "shared/traces",
        pathlib.Path("/work/shared/traces"),
    ]
    return next((c for c in candidates if c.is_dir()), candidates[1])


OPENB_CSV = _traces() / "cluster-trace-gpu-v2023/csv"
LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"


def trace(name: str) -> pathlib.Path:
    path = OPENB_CSV / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return path


@pytest.mark.parametrize(
    ("name", "expected_nodes", "expected_gpus"),
    [("openb_node_list_gpu_node.csv", 1213, 6212), ("openb_node_list_all_node.csv", 1523, 6212)],
)
def test_real_openb_node_list(name: str, expected_nodes: int, expected_gpus: int) -> None:
    path = trace(name)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    nodes = load_openb_nodes(path)

    assert len(nodes) == len(rows) == expected_nodes  # the README's numbers
    assert sum(len(n.gpus) for n in nodes) == sum(int(r["gpu"]) for r in rows) == expected_gpus
    for node, row in zip(nodes, rows, strict=True):
        assert node.provider_id == row["sn"]
        assert LABEL.match(node.node_id)
        assert node.cpu_milli == int(row["cpu_milli"])
        assert node.memory_bytes == int(row["memory_mib"]) * MIB
        assert [g.model for g in node.gpus] == [row["model"]] * int(row["gpu"])
        assert [g.index for g in node.gpus] == list(range(int(row["gpu"])))
        assert node.labels == {"pai.dev/source": "simulated"}
    p100 = next(n for n in nodes if n.gpus and n.gpus[0].model == "P100")
    assert p100.gpus[0].memory_bytes == 16 * GIB
    g2 = next(n for n in nodes if n.gpus and n.gpus[0].model == "G2")
    assert g2.gpus[0].memory_bytes == 0  # anonymised model: unknown memory


def test_real_openb_times_eight() -> None:
    path = trace("openb_node_list_gpu_node.csv")
    single = load_openb_nodes(path)
    nodes = load_openb_nodes(path, replicas=8, labels={"pool": "sim"})

    assert len(nodes) == 8 * len(single)
    assert sum(len(n.gpus) for n in nodes) == 8 * sum(len(n.gpus) for n in single)
    ids = [n.node_id for n in nodes]
    assert len(set(ids)) == len(ids)
    assert all(LABEL.match(i) for i in ids)
    assert ids[: len(single)] == [n.node_id for n in single]  # the first copy keeps the plain ids
    assert nodes[len(single)].node_id == single[0].node_id + "-r1"
    assert nodes[-1].node_id == single[-1].node_id + "-r7"
    assert nodes[-1].provider_id == single[-1].provider_id
    assert nodes[0].labels == {"pool": "sim", "pai.dev/source": "simulated"}
    assert nodes[0].labels is not nodes[1].labels


def test_parse_any_column_order_extra_columns_whitespace_blank_lines() -> None:
    text = "\n model , gpu,zone, memory_mib ,sn,cpu_milli\n\n T4 , 2 ,z1, 1024 , Node_A.1 , 8000 \n   \n,0,z2,512,7b,4000\n"
    nodes = parse_openb_nodes(text, gpu_memory_bytes={"T4": 15 * GIB})

    assert [n.node_id for n in nodes] == ["node-a-1", "n-7b"]
    assert [n.provider_id for n in nodes] == ["Node_A.1", "7b"]
    assert nodes[0].gpus == (GpuSpec(0, "T4", 15 * GIB), GpuSpec(1, "T4", 15 * GIB))
    assert nodes[0].cpu_milli == 8000 and nodes[0].memory_bytes == 1024 * MIB
    assert nodes[1].gpus == ()


def test_built_in_and_given_gpu_memory() -> None:
    text = HEADER + "a,1,1,1,V100M32\nb,1,1,1,A10\nc,1,1,1,X9\n"
    assert [n.gpus[0].memory_bytes for n in parse_openb_nodes(text)] == [32 * GIB, 24 * GIB, 0]
    given = parse_openb_nodes(text, gpu_memory_bytes={"X9": 7})
    assert [n.gpus[0].memory_bytes for n in given] == [32 * GIB, 24 * GIB, 7]


def test_node_ids_are_valid_labels() -> None:
    assert to_node_id("openb-node-0001") == "openb-node-0001"
    assert to_node_id("Host.Example.COM") == "host-example-com"
    assert to_node_id("0abc") == "n-0abc"
    assert to_node_id("x" * 80 + "-") == "x" * 63
    assert to_node_id("a" * 62 + "_b") == "a" * 62  # truncated, and no trailing '-'
    long_sn = "s" * 70
    nodes = parse_openb_nodes(HEADER + f"{long_sn},1,1,0,\n", replicas=12)
    assert all(LABEL.match(n.node_id) for n in nodes)
    assert nodes[11].node_id == "s" * 59 + "-r11"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: empty file"),
        ("\n  \n", "line 1: empty file"),
        (HEADER, "line 1: no node rows"),
        ("sn,cpu_milli,gpu,model\na,1,0,\n", "line 1: header lacks column(s) ['memory_mib']"),
        ("\n" + HEADER.strip() + ",sn\na,1,1,0,,b\n", "line 2: header lacks column(s) [] or repeats one"),
        (HEADER + 'a,1,1,0,"T4"x\n', "line 2: ',' expected after '\"'"),
        (HEADER + "a,1,1,0\n", "line 2: 4 fields, the header has 5"),
        (HEADER + "\na,1,1,0,\nb,x,1,0,\n", "line 4: cpu_milli 'x' is not an integer"),
        (HEADER + "a,1,1.5,0,\n", "line 2: memory_mib '1.5' is not an integer"),
        (HEADER + "a,1,1,-2,T4\n", "line 2: gpu -2 is negative"),
        (HEADER + "a,-1,1,0,\n", "line 2: cpu_milli -1 is negative"),
        (HEADER + "a,1,1,0,\nb,1,1,0,\na,1,1,0,\n", "line 4: duplicate sn 'a' (first on line 2)"),
        (HEADER + " ,1,1,0,\n", "line 2: empty sn"),
        (HEADER + "a,1,1,65,T4\n", "line 2: gpu 65 exceeds 64"),
        (HEADER + "a,1,1,1,\n", "line 2: bad model name '' for 1 gpu(s)"),
        (HEADER + "a,1,1,1,Tesla T4\n", "line 2: bad model name 'Tesla T4'"),
        (HEADER + "Node_1,1,1,0,\nnode-1,1,1,0,\n", "line 3: node id 'node-1' is also made from line 2"),
    ],
)
def test_invalid_input_names_the_line(text: str, message: str) -> None:
    with pytest.raises(InventoryError) as raised:
        parse_openb_nodes(text)
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_replica_ids_that_collide_with_rows_are_refused() -> None:
    with pytest.raises(InventoryError, match=r"line 2: node id 'a-r1' is also made from line 3"):
        parse_openb_nodes(HEADER + "a,1,1,0,\na-r1,1,1,0,\n", replicas=2)
    with pytest.raises(InventoryError, match="replicas must be at least 1"):
        parse_openb_nodes(HEADER + "a,1,1,0,\n", replicas=0)


def test_load_reads_a_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nodes.csv"
    path.write_text(HEADER + "a,2000,4,1,T4\n", encoding="utf-8-sig")  # with a byte-order mark
    assert load_openb_nodes(path, replicas=2, labels={"k": "v"}) == [
        NodeSpec(
            "a", "a", 2000, 4 * MIB, (GpuSpec(0, "T4", 16 * GIB),), {"k": "v", "pai.dev/source": "simulated"}
        ),
        NodeSpec(
            "a-r1",
            "a",
            2000,
            4 * MIB,
            (GpuSpec(0, "T4", 16 * GIB),),
            {"k": "v", "pai.dev/source": "simulated"},
        ),
    ]


def test_specs_validate_themselves() -> None:
    with pytest.raises(InventoryError, match="RFC-1034"):
        NodeSpec("Bad_Id", "p", 1, 1)
    with pytest.raises(InventoryError, match="negative"):
        NodeSpec("ok", "p", -1, 1)
    with pytest.raises(InventoryError, match="bad model name"):
        GpuSpec(0, "A 100", 1)
    assert hash(NodeSpec("ok", "p", 1, 1, labels={"a": "b"})) == hash(NodeSpec("ok", "p", 1, 1))


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla V100-SXM2-32GB", "V100"),
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("Tesla T4", "T4"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A10", "A10"),
        ("Quadro RTX 8000", "RTX8000"),
        ("NVIDIA", "unknown"),
        ("", "unknown"),
    ],
)
def test_short_gpu_model(name: str, model: str) -> None:
    assert short_gpu_model(name) == model
    assert MODEL.match(model)


def _proc_meminfo_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def test_detect_local_on_this_machine() -> None:
    node = detect_local()
    hostname = socket.gethostname()

    assert node.cpu_milli > 0 and node.memory_bytes > 0
    assert node.cpu_milli == len(os.sched_getaffinity(0)) * 1000
    assert node.memory_bytes == _proc_meminfo_bytes()
    assert LABEL.match(node.node_id)
    assert node.node_id == to_node_id(hostname)
    assert node.provider_id == hostname
    assert node.labels == {"pai.dev/source": "local", "pai.dev/hostname": hostname}
    assert all(MODEL.match(g.model) for g in node.gpus)
    assert detect_local("edge-1").node_id == "edge-1"
    with pytest.raises(InventoryError):
        detect_local("Not A Label")


def test_detect_local_without_nvidia_smi_has_no_gpus() -> None:
    def never(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError("nvidia-smi is not on PATH, it must not be run")

    assert detect_local(nvidia_smi="pai-no-such-nvidia-smi", run=never).gpus == ()


CANNED = (
    "0, NVIDIA A100-SXM4-80GB, 81920, GPU-1111aaaa-0000-0000-0000-000000000000\n"
    "1, NVIDIA GeForce RTX 4090, 24564, GPU-2222bbbb-0000-0000-0000-000000000000\n"
)


@pytest.fixture
def fake_nvidia_smi(tmp_path: pathlib.Path) -> str:
    """An executable that prints `CANNED` the way nvidia-smi would."""
    path = tmp_path / "nvidia-smi"
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{CANNED}EOF\n", encoding="ascii")
    path.chmod(0o755)
    return str(path)


def test_detect_local_with_injected_nvidia_smi_output(fake_nvidia_smi: str) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0, stdout=CANNED, stderr="")

    gpus = detect_local(nvidia_smi=fake_nvidia_smi, run=run).gpus

    assert gpus == (
        GpuSpec(0, "A100", 81920 * MIB, "GPU-1111aaaa-0000-0000-0000-000000000000"),
        GpuSpec(1, "RTX4090", 24564 * MIB, "GPU-2222bbbb-0000-0000-0000-000000000000"),
    )
    [(args, kwargs)] = calls
    assert args == [
        fake_nvidia_smi,
        "--query-gpu=index,name,memory.total,uuid",
        "--format=csv,noheader,nounits",
    ]
    assert kwargs["timeout"] == 10


def test_detect_local_runs_a_real_nvidia_smi_binary(fake_nvidia_smi: str) -> None:
    gpus = detect_local(nvidia_smi=fake_nvidia_smi).gpus
    assert [(g.index, g.model, g.memory_bytes) for g in gpus] == [
        (0, "A100", 80 * GIB),
        (1, "RTX4090", 24564 * MIB),
    ]


@pytest.mark.parametrize(
    "outcome",
    [
        subprocess.TimeoutExpired("nvidia-smi", 10),
        FileNotFoundError("nvidia-smi"),
        PermissionError("nvidia-smi"),
        subprocess.CompletedProcess([], 9, stdout=CANNED, stderr="NVIDIA-SMI has failed"),
        subprocess.CompletedProcess([], 0, stdout="No devices were found\n", stderr=""),
    ],
)
def test_failing_nvidia_smi_gives_no_gpus(fake_nvidia_smi: str, outcome: object) -> None:
    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, subprocess.CompletedProcess)
        return outcome

    node = detect_local(nvidia_smi=fake_nvidia_smi, run=run)
    assert node.gpus == ()
    assert node.cpu_milli > 0


def test_unreadable_lines_and_unknown_memory_are_tolerated(fake_nvidia_smi: str) -> None:
    out = "WARNING: infoROM is corrupted\n0, Tesla T4, [N/A], GPU-x\nnot, a, gpu, line\n"

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    assert detect_local(nvidia_smi=fake_nvidia_smi, run=run).gpus == (GpuSpec(0, "T4", 0, "GPU-x"),)
