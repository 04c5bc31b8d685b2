"""Benchmark B: scheduling decisions per second as the cluster grows, and their latency.

Clusters are the openb GPU node list (`openb_node_list_gpu_node.csv`, 1,213 nodes) repeated with
`parse_openb_nodes(replicas=k)`: 1k nodes = x1, 10k = x8 (9,704), 50k = x40 (48,520). The rows are
dealt round-robin to 4 resource groups; each group has a two-level quota tree, 8 team quotas x 8
workspace quotas (64 workspaces per group, 256 in all): a team's `min` is half the group's GPUs / 8,
a workspace's an eighth of its team's, no `max` (borrowing up to the group's capacity).

The backlog (seed 42) is spread uniformly over the 256 workspaces; every workload is one gang of
2-64 identical pods (2: 40 %, 4: 25 %, 8: 15 %, 16: 10 %, 32: 6 %, 64: 4 %); a pod asks for whole
GPUs (70 %: 1, 2, 4 or 8 cards, 4 CPU cores and 8 GiB per card) or a share of one card (30 %:
0.1-0.5 GPU, 1 core, 2 GiB); 20 % are preemptible (spot); all have priority 0.

Pure path: the decision function in-process (`GroupScheduler.cycle`), one engine per group, the
whole backlog queued before the first cycle, cycles (budget 2,000 decisions) round-robin over the
groups while one reports more work, then the clock jumps to the next preemption deadline while
preemptions are pending. A *decision* is one workload tried (`Changes.decisions`; one call of
`GroupScheduler._decide`, timed by a subclass). decisions/s = decisions / wall time of the cycles
(queue walk, expiry and reasons included); p50/p99 are per decision. Work per configuration is
capped (`--max-decisions`, `--max-seconds`): a capped row measured the first decisions only, while
the cluster was filling. Build time (nodes, quotas, backlog queued, typical shapes learnt) is apart.

Full path: a real nats-server, auth and the scheduler in this process (SQLite in a temp dir, as
in `services/scheduler/tests/integration/conftest.py`); groups, `ImportNodes` and quotas through
the gRPC API; then a separate process submits the backlog with `CreateWorkload`, `--concurrency`
in flight, while the scheduler's own loop decides. Measured from the first submission until the
last decision (the scheduler quiet for 2 s, every admission persisted and its
`pai.scheduler.workload.admitted` event received on NATS): decisions/s and admissions/s end to
end, the service's own decision latency p50/p99 (`GetSchedulerStats`; it reports per cycle the
cycle time / decisions, here the median of the groups' p50 and the worst group's p99), and the
submit RPC latency.

    .venv/bin/python benchmarks/scheduler/throughput.py --quick
    .venv/bin/python benchmarks/scheduler/throughput.py                 # pure: all; full: 1k/10k x 1k/10k
    .venv/bin/python benchmarks/scheduler/throughput.py --sizes 1000,10000 --backlogs 1000,10000
    .venv/bin/python benchmarks/scheduler/throughput.py --pure-only --profile frag:10000:10000
    .venv/bin/python benchmarks/scheduler/throughput.py --json          # one JSON object per line
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import datetime as dt
import io
import json
import math
import os
import pathlib
import pstats
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

try:
    from pai_scheduler.domain.quota import GPU, QuotaSpec
    from pai_scheduler.domain.scheduling import Changes, GroupScheduler, NodeInfo, Policy
    from pai_scheduler.domain.workload import PodSet, State, Workload
    from pai_scheduler.inventory import parse_openb_nodes
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "services/scheduler/src"))
    from pai_scheduler.domain.quota import GPU, QuotaSpec
    from pai_scheduler.domain.scheduling import Changes, GroupScheduler, NodeInfo, Policy
    from pai_scheduler.domain.workload import PodSet, State, Workload
    from pai_scheduler.inventory import parse_openb_nodes

SELF = pathlib.Path(__file__).resolve()
TRACES = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "traces"
NODE_CSV = TRACES / "cluster-trace-gpu-v2023" / "csv" / "openb_node_list_gpu_node.csv"
REPLICAS = {1000: 1, 10000: 8, 50000: 40}  # nominal cluster size -> copies of the openb list
GROUPS, TEAMS, WORKSPACES_PER_TEAM = 4, 8, 8
GANGS = ((2, 40), (4, 25), (8, 15), (16, 10), (32, 6), (64, 4))
WHOLE = ((1, 50), (2, 20), (4, 15), (8, 15))
SHARE, SPOT = 0.3, 0.2
GiB = 2**30
SEED = 42
OURS, BASELINE = "frag", "bestfit"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ADMITTED_SUBJECT = "pai.scheduler.workload.admitted"
GOAL = "goal: >= 1,000 decisions/s at 10k nodes with frag, p99 <= 10 ms, cost flat in node count"


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def replicas_for(size: int) -> int:
    return REPLICAS.get(size, max(1, round(size / 1213)))


# ---- the cluster, the quota tree and the backlog -------------------------------------------------


def group_csv(text: str, group: int) -> str:
    """The header and every GROUPS-th row of the node list, starting at row `group`."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join([lines[0], *lines[1:][group::GROUPS]]) + "\n"


def group_id(g: int) -> str:
    return f"rg-{g}"


def team_id(g: int, t: int) -> str:
    return f"team-{g}-{t}"


def workspace_id(g: int, i: int) -> str:
    return f"ws-{g}-{i:02d}"


def quota_tree(g: int, gpu_milli: int) -> list[QuotaSpec]:
    """The team and workspace quotas of group `g` (parents first) over `gpu_milli` of GPUs."""
    rg = f"resourceGroups/{group_id(g)}/quotas"
    team_min = gpu_milli // 2 // TEAMS
    specs: list[QuotaSpec] = []
    for t in range(TEAMS):
        team = f"{rg}/{team_id(g, t)}"
        specs.append(QuotaSpec(team, min={GPU: team_min}))
        for k in range(WORKSPACES_PER_TEAM):
            ws = workspace_id(g, t * WORKSPACES_PER_TEAM + k)
            specs.append(
                QuotaSpec(
                    f"{rg}/{ws}",
                    parent=team,
                    workspace=f"workspaces/{ws}",
                    min={GPU: team_min // WORKSPACES_PER_TEAM},
                )
            )
    return specs


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One workload of the backlog: a gang of `pods` identical pods."""

    index: int
    group: int
    workspace: str
    pods: int
    gpu_count: int
    gpu_milli: int
    cpu_milli: int
    memory_bytes: int
    spot: bool

    @property
    def workload_id(self) -> str:
        return f"w-{self.index:06d}"


def _pick(rng: random.Random, table: tuple[tuple[int, int], ...]) -> int:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def make_backlog(n: int, seed: int = SEED) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        slot = rng.randrange(GROUPS * TEAMS * WORKSPACES_PER_TEAM)
        g, ws = divmod(slot, TEAMS * WORKSPACES_PER_TEAM)
        pods = _pick(rng, GANGS)
        if rng.random() < SHARE:
            count, milli, cpu, mem = 0, rng.choice((100, 200, 300, 400, 500)), 1000, 2 * GiB
        else:
            count = _pick(rng, WHOLE)
            milli, cpu, mem = 0, 4000 * count, 8 * GiB * count
        jobs.append(Job(i, g, workspace_id(g, ws), pods, count, milli, cpu, mem, rng.random() < SPOT))
    return jobs


# ---- pure path -----------------------------------------------------------------------------------


class TimedScheduler(GroupScheduler):
    """A GroupScheduler that times every decision."""

    def __init__(self, name: str, nodes: list[NodeInfo], policy: Policy) -> None:
        self.latencies: list[float] = []
        self.admitted_latencies: list[float] = []
        self.pods_decided = 0
        self.pods_placed = 0
        self.failures: Counter[str] = Counter()
        super().__init__(name, nodes, policy)

    def _decide(self, w: Workload, now: dt.datetime, changes: Changes, *, preempt: bool) -> bool:
        start = time.perf_counter()
        admitted = super()._decide(w, now, changes, preempt=preempt)
        elapsed = time.perf_counter() - start
        self.latencies.append(elapsed)
        if admitted:
            self.admitted_latencies.append(elapsed)
            self.pods_placed += sum(ps.count for ps in w.pod_sets)
        else:
            self.failures[w.pending_code] += 1
        self.pods_decided += sum(ps.count for ps in w.pod_sets)
        return admitted


def build_pure(replicas: int, jobs: list[Job], placement: str) -> list[TimedScheduler]:
    text = NODE_CSV.read_text(encoding="utf-8-sig")
    engines = []
    for g in range(GROUPS):
        specs = parse_openb_nodes(group_csv(text, g), replicas=replicas)
        nodes = [
            NodeInfo(s.node_id, s.cpu_milli, s.memory_bytes, [c.model for c in s.gpus], dict(s.labels))
            for s in specs
        ]
        engine = TimedScheduler(
            f"resourceGroups/{group_id(g)}", nodes, Policy(placement=placement, seed=SEED)
        )
        for spec in quota_tree(g, engine.quotas.capacity[GPU]):
            engine.quotas.validate(spec)
            engine.quotas.put(spec)
        engines.append(engine)
    for j in jobs:
        rg = f"resourceGroups/{group_id(j.group)}"
        ps = PodSet("worker", j.pods, j.cpu_milli, j.memory_bytes, j.gpu_count, j.gpu_milli)
        w = Workload(
            f"workspaces/{j.workspace}/workloads/{j.workload_id}",
            j.workload_id,
            f"{rg}/quotas/{j.workspace}",
            rg,
            (ps,),
            preemptible=j.spot,
            seq=j.index + 1,
            enqueue_time=NOW,
        )
        engines[j.group].add(w)
    for engine in engines:
        engine.rebuild()  # learn the typical shapes of the backlog now, not in the first cycle
    return engines


def run_pure(engines: list[TimedScheduler], max_decisions: int, max_seconds: float) -> dict[str, Any]:
    now = NOW
    decisions = admitted = preempting = cycles = 0
    wall = 0.0
    capped = ""
    active = list(engines)
    while True:
        more: list[TimedScheduler] = []
        for engine in active:
            left = max_decisions - decisions
            engine.policy = dataclasses.replace(engine.policy, budget=max(1, min(2000, left)))
            start = time.perf_counter()
            changes = engine.cycle(now)
            wall += time.perf_counter() - start
            cycles += 1
            decisions += changes.decisions
            admitted += len(changes.admitted)
            preempting += len(changes.preempting)
            if changes.more:
                more.append(engine)
            if decisions >= max_decisions:
                capped = f"{max_decisions} decisions"
            elif wall >= max_seconds:
                capped = f"{max_seconds:g} s"
            if capped:
                break
        if capped:
            break
        active = more
        if active:
            continue
        deadlines = [
            w.preemption.deadline
            for e in engines
            for w in e.workloads.values()
            if w.state == State.PREEMPTING and w.preemption is not None
        ]
        if not deadlines:
            break
        now = max(now, min(deadlines))  # the service wakes up at the next preemption deadline
        active = list(engines)
    lat = sorted(x for e in engines for x in e.latencies)
    adm = sorted(x for e in engines for x in e.admitted_latencies)
    pods = sum(e.pods_decided for e in engines)
    placed = sum(e.pods_placed for e in engines)
    return {
        "decisions": decisions,
        "admitted": admitted,
        "failed": decisions - admitted,
        "preempting": preempting,
        "cycles": cycles,
        "wall_s": wall,
        "decisions_per_s": decisions / wall if wall else math.nan,
        "admitted_per_s": admitted / wall if wall else math.nan,
        "p50_ms": percentile(lat, 0.5) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
        "max_ms": (lat[-1] if lat else math.nan) * 1e3,
        "admitted_p99_ms": percentile(adm, 0.99) * 1e3,
        "in_decide_share": sum(lat) / wall if wall else math.nan,
        "us_per_pod": sum(lat) / pods * 1e6 if pods else math.nan,
        "us_per_placed_pod": sum(adm) / placed * 1e6 if placed else math.nan,
        "gpu_allocated_pct": 100.0
        * sum(e.quotas.usage[""].get(GPU, 0) for e in engines)
        / sum(e.quotas.capacity[GPU] for e in engines),
        "failures": dict(sum((e.failures for e in engines), Counter[str]()).most_common()),
        "capped": capped,
    }


def pure_config(size: int, backlog: int, placement: str, args: argparse.Namespace) -> dict[str, Any]:
    replicas = replicas_for(size)
    jobs = make_backlog(backlog, args.seed)
    start = time.perf_counter()
    engines = build_pure(replicas, jobs, placement)
    build_s = time.perf_counter() - start
    nodes = sum(len(e.nodes) for e in engines)
    out = {
        "path": "pure",
        "nodes": nodes,
        "size": size,
        "backlog": backlog,
        "policy": placement,
        "build_s": build_s,
    }
    out.update(run_pure(engines, args.max_decisions, args.max_seconds))
    return out


def profile_pure(size: int, backlog: int, placement: str, args: argparse.Namespace, top: int = 30) -> str:
    jobs = make_backlog(backlog, args.seed)
    engines = build_pure(replicas_for(size), jobs, placement)
    profiler = cProfile.Profile()
    profiler.enable()
    result = run_pure(engines, args.max_decisions, args.max_seconds)
    profiler.disable()
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    head = (
        f"profile: {placement}, {size} nodes, backlog {backlog}: {result['decisions']} decisions, "
        f"{result['decisions_per_s']:.0f}/s under cProfile (slower than without)"
    )
    return head + "\n" + buf.getvalue()


# ---- full path -----------------------------------------------------------------------------------

PLACEMENT_ENUM = {"frag": 1, "fgd": 2, "bestfit": 3}


def _settings(service: str, tmp: pathlib.Path, nats_url: str, auth: str) -> Any:
    from pai_common.config import Settings

    return Settings(
        service=service,
        home=tmp / "home",
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp / service}.db",
        database_schema="",
        nats_url=nats_url,
        auth_endpoint=auth,
        log_format="text",
        log_level="WARNING",
        extra={"local_node": "false"},
    )


async def _submit(spec: dict[str, Any]) -> dict[str, Any]:
    """The load generator (a separate process): CreateWorkload for the whole backlog."""
    from pai.scheduler.v1 import workload_pb2, workload_pb2_grpc
    from pai_common.grpc_client import channel

    jobs = make_backlog(spec["backlog"], spec["seed"])
    ch = channel(spec["address"], spec["key"])
    stub = workload_pb2_grpc.WorkloadServiceStub(ch)
    latencies: list[float] = []
    errors = 0
    first_error = ""
    it: Iterator[Job] = iter(jobs)

    async def worker() -> None:
        nonlocal errors, first_error
        for j in it:
            w = workload_pb2.Workload(
                preemptible=j.spot,
                pod_sets=[
                    workload_pb2.PodSet(
                        name="worker",
                        count=j.pods,
                        cpu_milli=j.cpu_milli,
                        memory_bytes=j.memory_bytes,
                        gpu_count=j.gpu_count,
                        gpu_milli=j.gpu_milli,
                    )
                ],
            )
            request = workload_pb2.CreateWorkloadRequest(
                parent=f"workspaces/{j.workspace}", workload_id=j.workload_id, workload=w
            )
            start = time.perf_counter()
            try:
                await stub.CreateWorkload(request)
            except Exception as exc:  # counted and reported
                errors += 1
                first_error = first_error or repr(exc)
            latencies.append(time.perf_counter() - start)

    started = time.time()
    await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    ended = time.time()
    await ch.close()
    latencies.sort()
    return {
        "start": started,
        "end": ended,
        "submitted": len(latencies),
        "errors": errors,
        "first_error": first_error,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


async def full_config(size: int, backlog: int, placement: str, args: argparse.Namespace) -> dict[str, Any]:
    import nats
    from google.protobuf import duration_pb2

    from pai.scheduler.v1 import (
        node_pb2,
        node_pb2_grpc,
        quota_pb2,
        quota_pb2_grpc,
        resource_group_pb2,
        resource_group_pb2_grpc,
        stats_pb2,
        stats_pb2_grpc,
        types_pb2,
    )
    from pai_auth.bootstrap import build as build_auth
    from pai_common.grpc_client import channel
    from pai_common.testing import NatsServer, api_key
    from pai_scheduler.bootstrap import build as build_scheduler

    replicas = replicas_for(size)
    out: dict[str, Any] = {"path": "full", "size": size, "backlog": backlog, "policy": placement}
    async with contextlib.AsyncExitStack() as stack:
        tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pai-sched-bench-")))
        setup_start = time.perf_counter()
        server = NatsServer(tmp / "nats")
        stack.callback(server.stop)
        server.start()
        key = api_key()
        auth = await stack.enter_async_context(
            build_auth(_settings("auth", tmp, server.url, ""), bootstrap_key=key)
        )
        app = await stack.enter_async_context(
            build_scheduler(_settings("scheduler", tmp, server.url, auth.address))
        )
        ch = channel(app.address, key)
        stack.push_async_callback(ch.close)
        groups = resource_group_pb2_grpc.ResourceGroupServiceStub(ch)
        nodes_api = node_pb2_grpc.NodeServiceStub(ch)
        quotas_api = quota_pb2_grpc.QuotaServiceStub(ch)
        stats_api = stats_pb2_grpc.SchedulerStatsServiceStub(ch)
        text = NODE_CSV.read_text(encoding="utf-8-sig")
        node_count = 0
        for g in range(GROUPS):
            policy = resource_group_pb2.SchedulingPolicy(
                placement_policy=PLACEMENT_ENUM[placement],  # type: ignore[arg-type]
                tie_break_seed=SEED,
                default_preemption_grace_period=duration_pb2.Duration(seconds=1),  # victims go quickly
            )
            await groups.CreateResourceGroup(
                resource_group_pb2.CreateResourceGroupRequest(
                    resource_group_id=group_id(g),
                    resource_group=resource_group_pb2.ResourceGroup(scheduling_policy=policy),
                )
            )
            imported = await nodes_api.ImportNodes(
                node_pb2.ImportNodesRequest(
                    parent=f"resourceGroups/{group_id(g)}", csv_content=group_csv(text, g), replicas=replicas
                )
            )
            node_count += imported.created_count
            for spec in quota_tree(g, imported.capacity.gpu_milli):
                qid = spec.name.rsplit("/", 1)[1]
                await quotas_api.CreateQuota(
                    quota_pb2.CreateQuotaRequest(
                        parent=f"resourceGroups/{group_id(g)}",
                        quota_id=qid,
                        quota=quota_pb2.Quota(
                            parent=spec.parent,
                            workspace=spec.workspace,
                            min=types_pb2.ResourceLimits(gpu_milli=spec.min[GPU]),
                        ),
                    )
                )
        out["nodes"] = node_count
        arrivals: list[float] = []

        async def on_admitted(msg: Any) -> None:
            arrivals.append(time.time())

        nc = await nats.connect(server.url)
        stack.push_async_callback(nc.close)
        await nc.subscribe(ADMITTED_SUBJECT, cb=on_admitted)
        await nc.flush()
        out["setup_s"] = time.perf_counter() - setup_start

        scheduler = app.scheduler
        load = {
            "address": app.address,
            "key": key,
            "backlog": backlog,
            "seed": args.seed,
            "concurrency": args.concurrency,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SELF),
            "--submit",
            json.dumps(load),
            stdout=asyncio.subprocess.PIPE,
        )
        stdout_task = asyncio.ensure_future(proc.communicate())
        load_start = time.time()

        def totals() -> tuple[int, int]:
            st = scheduler.stats.values()
            return sum(s.attempts_total for s in st), sum(s.admitted_total for s in st)

        last = totals()
        last_change = time.time()
        deadline = time.monotonic() + args.full_timeout
        timed_out = False
        next_report = time.monotonic() + 10
        while True:
            await asyncio.sleep(0.05)
            if time.monotonic() >= next_report:
                next_report += 10
                preempting = sum(1 for w in scheduler.workloads.values() if w.state == State.PREEMPTING)
                say(
                    f"  ... {time.time() - load_start:.0f} s: decisions {last[0]}, admitted {last[1]}, "
                    f"admitted events {len(arrivals)}, preempting {preempting}, cycles {scheduler.cycles}, "
                    f"submitter {'done' if stdout_task.done() else 'running'}"
                )
            now_totals = totals()
            if now_totals != last:
                last, last_change = now_totals, time.time()
            if stdout_task.done() and len(arrivals) >= last[1] and time.time() - last_change >= 2.0:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
        if not stdout_task.done():
            proc.kill()
        stdout, _ = await stdout_task
        submit = json.loads(stdout.decode()) if stdout else {}
        decisions, admitted_total = last
        stats = await stats_api.GetSchedulerStats(stats_pb2.GetSchedulerStatsRequest())
        p50s = sorted(
            rg.decisions.decision_latency_p50.ToTimedelta().total_seconds() for rg in stats.resource_groups
        )
        capacity = sum(rg.capacity.gpu_milli for rg in stats.resource_groups)
        allocated = sum(rg.allocated.gpu_milli for rg in stats.resource_groups)
        p99s = [
            rg.decisions.decision_latency_p99.ToTimedelta().total_seconds() for rg in stats.resource_groups
        ]
        start = float(submit.get("start", last_change))
        end = max([last_change, *arrivals[-1:]])
        wall = end - start
        sub_wall = float(submit.get("end", end)) - start
        out.update(
            {
                "submitted": submit.get("submitted", 0),
                "submit_errors": submit.get("errors", 0),
                "submit_first_error": submit.get("first_error", ""),
                "submit_per_s": submit.get("submitted", 0) / sub_wall if sub_wall > 0 else math.nan,
                "submit_p50_ms": submit.get("p50_ms", math.nan),
                "submit_p99_ms": submit.get("p99_ms", math.nan),
                "decisions": decisions,
                "admitted": admitted_total,
                "admitted_events": len(arrivals),
                "cycles": scheduler.cycles,
                "wall_s": wall,
                "decisions_per_s": decisions / wall if wall > 0 else math.nan,
                "admitted_per_s": len(arrivals) / wall if wall > 0 else math.nan,
                "service_p50_ms": p50s[len(p50s) // 2] * 1e3 if p50s else math.nan,
                "service_p99_ms": max(p99s) * 1e3 if p99s else math.nan,
                "gpu_allocated_pct": 100.0 * allocated / capacity if capacity else math.nan,
                "timed_out": timed_out,
            }
        )
    return out


# ---- output --------------------------------------------------------------------------------------


def pure_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    header = (
        f"{'nodes':>6} {'backlog':>7} {'policy':<7} {'build s':>7} {'decisions':>9} {'admitted':>8}"
        f" {'failed':>6} {'preempt':>7} {'dec/s':>7} {'adm/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        f" {'adm p99':>7} {'us/pod':>6} {'us/adm':>6} {'in-dec':>6} {'GPU %':>5} {'wall s':>6}  capped at"
    )
    lines = [
        "Pure path: GroupScheduler.cycle in-process, 4 groups x 64 workspaces "
        f"(caps: {args.max_decisions} decisions or {args.max_seconds:g} s of cycles per row)",
        header,
        "-" * len(header),
    ]
    for r in rows:
        lines.append(
            f"{r['nodes']:>6} {r['backlog']:>7} {r['policy']:<7} {r['build_s']:>7.1f} {r['decisions']:>9}"
            f" {r['admitted']:>8} {r['failed']:>6} {r['preempting']:>7} {r['decisions_per_s']:>7.0f}"
            f" {r['admitted_per_s']:>6.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['max_ms']:>7.1f} {r['admitted_p99_ms']:>7.2f}"
            f" {r['us_per_pod']:>6.0f} {r['us_per_placed_pod']:>6.0f} {100 * r['in_decide_share']:>5.0f}% {r['gpu_allocated_pct']:>5.1f}"
            f" {r['wall_s']:>6.1f}  {r['capped'] or '-'}"
        )
    codes = Counter[str]()
    for r in rows:
        codes.update(r["failures"])
    lines.append(
        "failed decisions by reason, all rows: " + ", ".join(f"{c} {n}" for c, n in codes.most_common())
    )
    lines += [
        "(failed = not admitted: no placement, quota, or waiting for preempted victims; preempt = victims "
        "given notice; adm p99 = p99 of admitting decisions; us/pod = time in decisions per pod of the "
        "gangs tried, cheap memoised failures included; us/adm = time in admitting decisions per pod they "
        "placed, the placement cost per pod; in-dec = share of cycle time spent inside decisions; GPU % = "
        "allocated at the end)"
    ]
    return "\n".join(lines)


def full_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    header = (
        f"{'nodes':>6} {'backlog':>7} {'policy':<7} {'setup s':>7} {'submit/s':>8} {'sub p50':>7} {'sub p99':>7}"
        f" {'decisions':>9} {'admitted':>8} {'dec/s':>7} {'adm/s':>6} {'svc p50':>7} {'svc p99':>7}"
        f" {'GPU %':>5} {'wall s':>6} {'cycles':>6}  note"
    )
    lines = [
        "Full path: gRPC CreateWorkload -> SQLite + outbox -> decision loop -> SQLite + outbox -> NATS "
        f"({args.concurrency} submits in flight from a separate process; ms)",
        header,
        "-" * len(header),
    ]
    for r in rows:
        note = []
        if r["timed_out"]:
            note.append(f"timed out after {args.full_timeout:g} s")
        if r["submit_errors"]:
            note.append(f"{r['submit_errors']} submit errors: {r['submit_first_error'][:80]}")
        if r["admitted_events"] != r["admitted"]:
            note.append(f"{r['admitted_events']} admitted events")
        lines.append(
            f"{r['nodes']:>6} {r['backlog']:>7} {r['policy']:<7} {r['setup_s']:>7.1f} {r['submit_per_s']:>8.0f}"
            f" {r['submit_p50_ms']:>7.1f} {r['submit_p99_ms']:>7.1f} {r['decisions']:>9} {r['admitted']:>8}"
            f" {r['decisions_per_s']:>7.0f} {r['admitted_per_s']:>6.0f} {r['service_p50_ms']:>7.2f}"
            f" {r['service_p99_ms']:>7.2f} {r['gpu_allocated_pct']:>5.1f} {r['wall_s']:>6.1f} {r['cycles']:>6}  {'; '.join(note) or '-'}"
        )
    lines += [
        "(dec/s, adm/s: from the first submit to the last decision with its admitted event on NATS; "
        "svc p50/p99: GetSchedulerStats, per cycle time / decisions, median group p50 and worst group p99)"
    ]
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", type=_ints, default=[1000, 10000, 50000], help="nominal node counts (pure path)"
    )
    ap.add_argument(
        "--backlogs", type=_ints, default=[1000, 10000, 100000], help="pending workloads (pure path)"
    )
    ap.add_argument("--full-sizes", type=_ints, default=[1000, 10000], help="nominal node counts (full path)")
    ap.add_argument(
        "--full-backlogs", type=_ints, default=[1000, 10000], help="pending workloads (full path)"
    )
    ap.add_argument("--policies", default=f"{OURS},{BASELINE}", help="placement policies, comma-separated")
    ap.add_argument("--max-decisions", type=int, default=20000, help="pure path: decisions per row at most")
    ap.add_argument(
        "--max-seconds", type=float, default=30.0, help="pure path: seconds of cycles per row at most"
    )
    ap.add_argument("--full-timeout", type=float, default=300.0, help="full path: seconds per row at most")
    ap.add_argument("--concurrency", type=int, default=32, help="full path: CreateWorkload calls in flight")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--quick", action="store_true", help="1k nodes and a 1k backlog only, both paths")
    ap.add_argument("--pure-only", action="store_true")
    ap.add_argument("--full-only", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON object per line instead of tables")
    ap.add_argument(
        "--profile", metavar="POLICY:NODES:BACKLOG", help="cProfile one pure-path row and print it"
    )
    ap.add_argument("--submit", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.submit:  # the load generator process
        print(json.dumps(asyncio.run(_submit(json.loads(args.submit)))), flush=True)
        return 0
    if args.profile:
        placement, size, backlog = args.profile.split(":")
        print(profile_pure(int(size), int(backlog), placement, args))
        return 0
    if args.quick:
        args.sizes = args.backlogs = args.full_sizes = args.full_backlogs = [1000]
    policies = [p for p in args.policies.split(",") if p]

    if not args.json:
        print(
            f"Benchmark B: decisions per second as the cluster grows ({os.cpu_count()} CPUs, shared with "
            f"other work on this machine; load average {os.getloadavg()[0]:.1f} at start); {GOAL}"
        )
    failed = False
    if not args.full_only:
        rows = []
        for size in args.sizes:
            for backlog in args.backlogs:
                for policy in policies:
                    say(f"pure: {size} nodes, backlog {backlog}, {policy}...")
                    r = pure_config(size, backlog, policy, args)
                    rows.append(r)
                    if args.json:
                        print(json.dumps(r), flush=True)
        if not args.json:
            print()
            print(pure_table(rows, args))
    if not args.pure_only:
        rows = []
        for size in args.full_sizes:
            for backlog in args.full_backlogs:
                for policy in policies:
                    say(f"full: {size} nodes, backlog {backlog}, {policy}...")
                    r = asyncio.run(full_config(size, backlog, policy, args))
                    rows.append(r)
                    failed = failed or bool(r["timed_out"] or r["submit_errors"])
                    if args.json:
                        print(json.dumps(r), flush=True)
        if not args.json:
            print()
            print(full_table(rows, args))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
