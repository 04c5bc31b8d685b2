"""Benchmark A: placement quality on the openb traces (the FGD evaluation protocol).

Runs the scheduler's real placement code (`pai_scheduler.domain.placement`) in-process, following
`shared/traces/README.md` exactly:

1. cluster: the node list (default `openb_node_list_gpu_node.csv`);
2. for each seed: pods sorted by name, then shuffled with `random.Random(seed)`;
3. tuned to 1.3x the cluster's GPUs: while the total GPU request is below 1.3x, clones are appended,
   drawn uniformly with replacement (`rng.choice`, the same `random.Random(seed)` instance) from the
   shuffled originals; if above, random pods (`rng.randrange`) are removed until at or below;
4. pods arrive one by one and never leave; a pod that cannot be placed is dropped;
5. filters: CPU, memory, GPU model, sharing pods need one card with room, k-GPU pods k free cards;
6. node ties go to the earliest node in `random.Random(seed).shuffle` of the name-sorted node list;
7. after every pod: allocated and arrived GPU milli; arrive% = round(arrived / GPUs / 10); the result is
   unallocated GPU % = 100 - mean allocated % of the events at arrive% = 100.

Typical pod shapes (for the fragmentation policies) come from the original pod list (not the tuned
one), CPU-only pods included, weights renormalised over the chosen shapes; best-fit is the simulator's
integer score over fixed constants (128 cores, 8 GPUs), as in the authors' simulator.

    .venv/bin/python benchmarks/scheduler/placement.py                  # default + every variant
    .venv/bin/python benchmarks/scheduler/placement.py --variants default,cpu050 --workers 2
    .venv/bin/python benchmarks/scheduler/placement.py --nodes N.csv --pods P.csv --seeds 42,43 --json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import pathlib
import random
import statistics
import sys
import time

try:
    from pai_scheduler.domain.placement import POLICIES, Placer, make_policy
    from pai_scheduler.domain.resources import Node, PodRequest
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "services/scheduler/src"))
    from pai_scheduler.domain.placement import POLICIES, Placer, make_policy
    from pai_scheduler.domain.resources import Node, PodRequest

TRACES = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "traces"
CSV_DIR = TRACES / "cluster-trace-gpu-v2023" / "csv"
EXPECTED = TRACES / "fgd-simulator-expected-results" / "analysis_allo_discrete.csv"
SEEDS = tuple(range(42, 52))
TUNE = 1.3
X = 100
OURS = "frag"
BASELINE = "bestfit"


def load_nodes(path: pathlib.Path) -> list[Node]:
    with path.open(newline="") as f:
        return [
            Node.uniform(r["sn"], int(r["cpu_milli"]), int(r["memory_mib"]), int(r["gpu"]), r["model"])
            for r in csv.DictReader(f)
        ]


def load_pods(path: pathlib.Path) -> list[PodRequest]:
    pods = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            num_gpu = int(r["num_gpu"])
            spec = (r.get("gpu_spec") or "").strip()
            pods.append(
                PodRequest(
                    r["name"],
                    int(r["cpu_milli"]),
                    int(r["memory_mib"]),
                    num_gpu,
                    int(r["gpu_milli"]) if num_gpu else 0,
                    frozenset(m for m in spec.split("|") if m),
                )
            )
    return pods


def workload(pods: list[PodRequest], seed: int, total_gpus: int) -> list[PodRequest]:
    """Steps 2-3: sort by name, shuffle with the seed, tune to 1.3x the GPUs."""
    rng = random.Random(seed)
    originals = sorted(pods, key=lambda p: p.name)
    rng.shuffle(originals)
    out = list(originals)
    target = TUNE * total_gpus * 1000
    total = sum(p.total_gpu_milli for p in out)
    if total == 0:
        return out
    clone = 0
    while total < target:
        p = rng.choice(originals)
        clone += 1
        out.append(PodRequest(f"{p.name}-clone-{clone}", *_shape(p)))
        total += p.total_gpu_milli
    while total > target:
        total -= out.pop(rng.randrange(len(out))).total_gpu_milli
    return out


def _shape(p: PodRequest) -> tuple[int, int, int, int, frozenset[str]]:
    return p.cpu_milli, p.memory_mib, p.num_gpu, p.gpu_milli, p.gpu_models


def simulate(nodes_path: str, pods_path: str, seed: int, policy: str) -> float:
    """One seed, one policy: unallocated GPU % at 100 % arrival (NaN if no event lands there)."""
    nodes = load_nodes(pathlib.Path(nodes_path))
    pods = load_pods(pathlib.Path(pods_path))
    gpus = sum(len(n.gpu_models) for n in nodes)
    placer = Placer(nodes, make_policy(policy, pods), seed)
    arrived = used = 0
    at_x: list[float] = []
    for pod in workload(pods, seed, gpus):
        arrived += pod.total_gpu_milli
        if placer.place(pod) is not None:
            used += pod.total_gpu_milli
        bucket = round(arrived / gpus / 10)
        if bucket == X:
            at_x.append(used / gpus / 10)
        elif bucket > X:
            break
    return 100.0 - statistics.fmean(at_x) if at_x else math.nan


def _task(args: tuple[str, str, int, str]) -> tuple[tuple[str, str, int, str], float, float]:
    start = time.perf_counter()
    value = simulate(*args)
    return args, value, time.perf_counter() - start


TIMES: dict[tuple[str, str, int, str], float] = {}
"""Seconds per task of the last `run_all` (in the worker, so not inflated by waiting)."""


def run_all(tasks: list[tuple[str, str, int, str]], workers: int) -> dict[tuple[str, str, int, str], float]:
    results: dict[tuple[str, str, int, str], float] = {}
    TIMES.clear()
    if workers <= 1:
        outs = map(_task, tasks)
        for key, value, seconds in outs:
            results[key], TIMES[key] = value, seconds
        return results
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for key, value, seconds in pool.imap_unordered(_task, tasks):
            results[key], TIMES[key] = value, seconds
    return results


def published() -> dict[tuple[str, str], tuple[float, float]]:
    """(variant, "FGD"|"BestFit") -> (mean, sd) of unallocated % at x=100 from the authors' results."""
    out: dict[tuple[str, str], list[float]] = {}
    if not EXPECTED.exists():
        return {}
    with EXPECTED.open(newline="") as f:
        for r in csv.DictReader(f):
            policy = r["sc_policy"].split("-", 1)[-1]
            if policy in ("FGD", "BestFit") and r["tune"] == "1.3":
                variant = r["workload"].removeprefix("openb_pod_list_")
                out.setdefault((variant, policy), []).append(100.0 - float(r[str(X)]))
    return {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in out.items()}


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default=str(CSV_DIR / "openb_node_list_gpu_node.csv"))
    ap.add_argument("--pods", help="one pod list (openb format); default: the shipped variants")
    ap.add_argument(
        "--variants", help="comma-separated shipped variants (default: all with a published value)"
    )
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--policy", default=OURS, choices=POLICIES, help="our policy (default: %(default)s)")
    ap.add_argument(
        "--json", action="store_true", help="one JSON line for --pods (default variant if absent)"
    )
    ap.add_argument("--workers", type=int, default=1, help="processes (one task = variant x seed x policy)")
    ap.add_argument("--ours-only", action="store_true", help="table: skip the best-fit simulations")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    if args.json or args.pods:
        pods = args.pods or str(CSV_DIR / "openb_pod_list_default.csv")
        tasks = [(args.nodes, pods, s, args.policy) for s in seeds]
        res = run_all(tasks, args.workers)
        per_seed = [res[t] for t in tasks]
        mean, sd = _stats(per_seed)
        if args.json:
            line = {"unallocated_mean": mean, "unallocated_sd": sd, "per_seed": dict(zip(seeds, per_seed, strict=True)),
                    "policy": args.policy}  # fmt: skip
            print(json.dumps(line))
        else:
            print(
                f"{args.policy}: unallocated GPU % at 100 % arrival {mean:.2f} ± {sd:.2f} ({len(seeds)} seeds)"
            )
        return 0

    pub = published()
    shipped = sorted({v for v, _ in pub}, key=lambda v: (v != "default", v))
    variants = args.variants.split(",") if args.variants else shipped
    ours = args.policy
    policies = [ours] if args.ours_only or ours == BASELINE else [ours, BASELINE]
    tasks = [
        (args.nodes, str(CSV_DIR / f"openb_pod_list_{v}.csv"), s, p)
        for v in variants
        for p in policies
        for s in seeds
    ]
    start = time.perf_counter()
    res = run_all(tasks, args.workers)
    elapsed = time.perf_counter() - start
    print(f"unallocated GPU % at 100 % arrival, mean ± sd over seeds {args.seeds} (lower is better)")
    header = (
        f"{'trace':<12} {'ours (' + ours + ')':>14} {'best-fit':>14} {'pub. FGD':>14} {'pub. BestFit':>14}"
        f" {'ours-FGD':>9}"
    )
    print(header)
    print("-" * len(header))
    for v in variants:
        cells = []
        means: dict[str, float] = {}
        for p in (ours, BASELINE):
            if p not in policies:
                cells.append("-")
                continue
            m, sd = _stats([res[(args.nodes, str(CSV_DIR / f"openb_pod_list_{v}.csv"), s, p)] for s in seeds])
            means[p] = m
            cells.append(f"{m:6.2f} ± {sd:4.2f}")
        for p in ("FGD", "BestFit"):
            m, sd = pub.get((v, p), (math.nan, math.nan))
            cells.append(f"{m:6.2f} ± {sd:4.2f}")
        diff = means.get(ours, math.nan) - pub.get((v, "FGD"), (math.nan, math.nan))[0]
        print(f"{v:<12} " + " ".join(f"{c:>14}" for c in cells) + f" {diff:+9.2f}")
    print(f"({len(tasks)} simulations in {elapsed:.0f} s with {args.workers} worker(s))")
    per_policy = ", ".join(
        f"{p} {statistics.fmean(t for k, t in TIMES.items() if k[3] == p):.2f} s" for p in policies
    )
    print(f"(mean time per simulation: {per_policy})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
