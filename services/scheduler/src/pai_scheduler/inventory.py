"""Node inventory sources: the local machine, and simulated clusters from the openb node lists.

Units: CPU in milli-cores, memory and GPU memory in bytes (the placement engine converts to MiB).
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

GIB = 2**30
MIB = 2**20
MAX_GPUS_PER_NODE = 64
NVIDIA_SMI_TIMEOUT_S = 10.0
NVIDIA_SMI_QUERY = ("--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits")
OPENB_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")

NODE_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
GPU_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_INT = re.compile(r"-?[0-9]+")

# memory per card, for node lists that name the model but not its memory
GPU_MEMORY_BYTES: Mapping[str, int] = {
    # openb model names; G2 and G3 are anonymised in the trace, so their memory is unknown (0)
    "V100M16": 16 * GIB,
    "V100M32": 32 * GIB,
    "P100": 16 * GIB,
    "T4": 16 * GIB,
    "A10": 24 * GIB,
    # other common single-memory-size cards (names as `short_gpu_model` makes them)
    "A30": 24 * GIB,
    "A40": 48 * GIB,
    "L4": 24 * GIB,
    "L40": 48 * GIB,
    "L40S": 48 * GIB,
    "H800": 80 * GIB,
    "RTX4090": 24 * GIB,
}

Run = Callable[..., "subprocess.CompletedProcess[str]"]


class InventoryError(ValueError):
    """A node description is invalid (for a file: the message names the line)."""


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One GPU card: its index on the node, short model name, memory and (if known) UUID."""

    index: int
    model: str
    memory_bytes: int
    uuid: str = ""

    def __post_init__(self) -> None:
        if self.index < 0 or self.memory_bytes < 0:
            raise InventoryError(f"gpu {self.index}: negative index or memory")
        if not GPU_MODEL.fullmatch(self.model):
            raise InventoryError(f"gpu {self.index}: bad model name {self.model!r}")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node's identity and capacity as an inventory source reports it."""

    node_id: str
    provider_id: str
    cpu_milli: int
    memory_bytes: int
    gpus: tuple[GpuSpec, ...] = ()
    # excluded from the hash, which a dict cannot take; still compared
    labels: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not NODE_ID.fullmatch(self.node_id):
            raise InventoryError(f"node id {self.node_id!r} is not an RFC-1034 label")
        if self.cpu_milli < 0 or self.memory_bytes < 0:
            raise InventoryError(f"node {self.node_id}: negative cpu_milli or memory_bytes")


def to_node_id(raw: str) -> str:
    """`raw` as an RFC-1034 label: lowercase, other characters to '-', 'n-' before a non-letter, ≤ 63."""
    label = re.sub(r"[^a-z0-9-]", "-", raw.strip().lower())
    if not label[:1].isalpha():
        label = "n-" + label
    return label[:63].rstrip("-")


def short_gpu_model(name: str) -> str:
    """A short model name from an nvidia-smi name: "NVIDIA A100-SXM4-80GB" → "A100".

    The rule: drop the brand words (NVIDIA, Tesla, GeForce, Quadro); take the first remaining word up to
    its first '-' (the form factor and memory follow it); after a series word (RTX, GTX, TITAN) append
    the next word ("NVIDIA GeForce RTX 4090" → "RTX4090"); other characters than [A-Za-z0-9._-] are
    dropped; "unknown" if nothing is left.
    """
    brands = {"nvidia", "tesla", "geforce", "quadro"}
    words = [w for w in name.split() if w.lower() not in brands]
    if not words:
        return "unknown"
    model = words[0].split("-")[0]
    if model.upper() in {"RTX", "GTX", "TITAN"} and len(words) > 1:
        model += words[1].split("-")[0]
    model = re.sub(r"[^A-Za-z0-9._-]", "", model)[:64]
    return model if GPU_MODEL.fullmatch(model) else "unknown"


def detect_local(
    node_id: str | None = None, *, nvidia_smi: str = "nvidia-smi", run: Run = subprocess.run
) -> NodeSpec:
    """This machine: usable CPUs, physical memory and (through nvidia-smi, if present) its GPUs."""
    hostname = socket.gethostname()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return NodeSpec(
        node_id=node_id if node_id is not None else (to_node_id(hostname) if hostname else "local"),
        provider_id=hostname,
        cpu_milli=cpus * 1000,
        memory_bytes=_local_memory_bytes(),
        gpus=_local_gpus(nvidia_smi, run),
        labels={"pai.dev/source": "local", "pai.dev/hostname": hostname},
    )


def _local_memory_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "MemTotal":
                    return int(value.split()[0]) * 1024  # the unit is kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0


def _local_gpus(nvidia_smi: str, run: Run) -> tuple[GpuSpec, ...]:
    """GPUs nvidia-smi reports; none, never an error, when it is missing, fails or hangs."""
    binary = shutil.which(nvidia_smi)
    if binary is None:
        return ()
    try:
        done = run([binary, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return ()
    if done.returncode != 0 or not isinstance(done.stdout, str):
        return ()
    gpus = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue  # a warning line or an unexpected format
        memory_mib = parts[-2]  # "[N/A]" on some boards
        name = ",".join(parts[1:-2])
        mem = int(memory_mib) * MIB if memory_mib.isdigit() else 0
        gpus.append(GpuSpec(int(parts[0]), short_gpu_model(name), mem, parts[-1]))
    return tuple(gpus)


def parse_openb_nodes(
    text: str,
    *,
    replicas: int = 1,
    gpu_memory_bytes: Mapping[str, int] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[NodeSpec]:
    """Nodes from an openb node list (`sn,cpu_milli,memory_mib,gpu,model`; any order, extra columns ok).

    With `replicas` k > 1 the list is repeated k times: first every row with its plain id, then every row
    with suffix `-r1`, and so on. GPU memory comes from `gpu_memory_bytes`, then `GPU_MEMORY_BYTES`,
    else 0. An empty list is an error: a cluster without nodes is a mistake in the input.
    """
    if replicas < 1:
        raise InventoryError(f"replicas must be at least 1, got {replicas}")
    memory_of = {**GPU_MEMORY_BYTES, **(gpu_memory_bytes or {})}
    node_labels = {**(labels or {}), "pai.dev/source": "simulated"}
    rows = _openb_rows(text)
    return _replicated(rows, _openb_nodes(rows, memory_of, node_labels), replicas)


Row = tuple[int, dict[str, str]]
"""A data row of a node list: its line number and its cells by column."""


def _openb_rows(text: str) -> list[Row]:
    """The data rows of a node list, checked against its header (the first non-empty row)."""
    reader = csv.reader(io.StringIO(text), strict=True)  # bad quoting is an error, not data
    header: list[str] | None = None
    rows: list[Row] = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip().lower() for c in cells]
                missing = [c for c in OPENB_COLUMNS if c not in header]
                if missing or len(set(header)) != len(header):
                    raise InventoryError(f"line {line}: header lacks column(s) {missing} or repeats one")
                continue
            if len(cells) != len(header):
                raise InventoryError(f"line {line}: {len(cells)} fields, the header has {len(header)}")
            rows.append((line, dict(zip(header, (c.strip() for c in cells), strict=True))))
    except csv.Error as e:
        raise InventoryError(f"line {reader.line_num}: {e}") from e
    if header is None:
        raise InventoryError("line 1: empty file, no header")
    if not rows:
        raise InventoryError(f"line {reader.line_num}: no node rows after the header")
    return rows


def _openb_nodes(rows: list[Row], memory_of: Mapping[str, int], labels: dict[str, str]) -> list[NodeSpec]:
    """One node per row, its id made from its `sn` (which must be unique)."""
    base: list[NodeSpec] = []
    seen_sn: dict[str, int] = {}
    for line, row in rows:
        sn = row["sn"]
        if not sn:
            raise InventoryError(f"line {line}: empty sn")
        if sn in seen_sn:
            raise InventoryError(f"line {line}: duplicate sn {sn!r} (first on line {seen_sn[sn]})")
        seen_sn[sn] = line
        cpu, mem, gpu = (_non_negative(row, c, line) for c in ("cpu_milli", "memory_mib", "gpu"))
        if gpu > MAX_GPUS_PER_NODE:
            raise InventoryError(f"line {line}: gpu {gpu} exceeds {MAX_GPUS_PER_NODE}")
        model = row["model"]
        if gpu and not GPU_MODEL.fullmatch(model):
            raise InventoryError(f"line {line}: bad model name {model!r} for {gpu} gpu(s)")
        cards = tuple(GpuSpec(i, model, memory_of.get(model, 0)) for i in range(gpu))
        base.append(NodeSpec(to_node_id(sn), sn, cpu, mem * MIB, cards, dict(labels)))
    return base


def _replicated(rows: list[Row], base: list[NodeSpec], replicas: int) -> list[NodeSpec]:
    """`base` `replicas` times, the k-th copy's ids suffixed `-r<k>`; ids made twice are an error."""
    nodes: list[NodeSpec] = []
    line_of: dict[str, int] = {}
    for k in range(replicas):
        suffix = f"-r{k}" if k else ""
        for (line, _), node in zip(rows, base, strict=True):
            node_id = node.node_id[: 63 - len(suffix)].rstrip("-") + suffix
            if node_id in line_of:
                raise InventoryError(
                    f"line {line}: node id {node_id!r} is also made from line {line_of[node_id]}"
                )
            line_of[node_id] = line
            nodes.append(replace(node, node_id=node_id, labels=dict(node.labels)))
    return nodes


def _non_negative(row: Mapping[str, str], column: str, line: int) -> int:
    value = row[column]
    if not _INT.fullmatch(value):
        raise InventoryError(f"line {line}: {column} {value!r} is not an integer")
    if (number := int(value)) < 0:
        raise InventoryError(f"line {line}: {column} {number} is negative")
    return number


def load_openb_nodes(
    path: str | os.PathLike[str],
    *,
    replicas: int = 1,
    gpu_memory_bytes: Mapping[str, int] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[NodeSpec]:
    """`parse_openb_nodes` over a UTF-8 file (a leading byte-order mark is ignored)."""
    text = pathlib.Path(path).read_text(encoding="utf-8-sig")
    return parse_openb_nodes(text, replicas=replicas, gpu_memory_bytes=gpu_memory_bytes, labels=labels)
