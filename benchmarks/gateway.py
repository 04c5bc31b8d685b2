"""Gateway benchmark: the same upstream direct and through Envoy, and xDS push latency.

    .venv/bin/python benchmarks/gateway.py            # tables
    .venv/bin/python benchmarks/gateway.py --json     # one JSON object on one line

Everything runs on loopback and is started (and stopped, even on failure) by this script: a
nats-server, auth (in this process, as in tests/gateway/conftest.py), the control plane (in this
process), a real Envoy, and one stand-in model server (gateway/tests/standin_upstream.py).

Traffic: every measurement uses the same load generator, a separate process (so it does not share
an event loop or a core with auth and the control plane), aiohttp with a keep-alive pool of
`--concurrency` connections for HTTP and one grpc.aio channel for gRPC; `--warmup` requests, then
`--requests` timed ones, `--concurrency` in flight. CPU columns are the share of one core each
process used during the timed phase (read from /proc).

xDS: for each size, `size` revision clusters (two revisions per endpoint route) pointing at a
closed loopback port are published from scratch and applied; then one change is made through the
control plane's API (`set_route` + `flush`) and timed until Envoy has ACKed it
(`wait_applied`): a weight change (which resends the route table) and a replica address change
(which resends one ClusterLoadAssignment).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pathlib
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
STANDIN = ROOT / "gateway" / "tests" / "standin_upstream.py"
RESOURCE = "workspaces/default/services/bench"
DUMMY = "127.0.0.1:9"  # nothing listens there: health checks fail fast, no traffic is sent
INFER_BODY = b'{"inputs": []}'
PRINCIPAL = "/pai.auth.v1.AuthorizationService/GetCurrentPrincipal"


class BenchError(Exception):
    """The benchmark could not run (a process did not start, Envoy did not apply a config...)."""


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The load generator (runs in its own process: `gateway.py --loadgen SPEC`)


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_ms:
        return math.nan
    return sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(q * len(sorted_ms)) - 1))]


async def _drive(one: Any, count: int, concurrency: int) -> tuple[list[float], int, str]:
    """`count` calls of `one()`, `concurrency` at a time: latencies (ms), errors, first error."""
    latencies: list[float] = []
    errors = 0
    first_error = ""
    left = count

    async def worker() -> None:
        nonlocal left, errors, first_error
        while left > 0:
            left -= 1
            start = time.perf_counter()
            problem = await one()
            latencies.append((time.perf_counter() - start) * 1000)
            if problem:
                errors += 1
                first_error = first_error or problem

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, first_error


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    count, warmup, concurrency = spec["requests"], spec["warmup"], spec["concurrency"]
    expect = spec["expect"].encode()
    async with contextlib.AsyncExitStack() as stack:
        if spec["kind"] == "http":
            import aiohttp

            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=concurrency),
                    timeout=aiohttp.ClientTimeout(total=30),
                )
            )
            method, url, headers = spec["method"], spec["url"], spec["headers"]
            body = INFER_BODY if method == "POST" else None

            async def one() -> str:
                try:
                    async with session.request(method, url, data=body, headers=headers) as resp:
                        data = await resp.read()
                        if resp.status != 200 or expect not in data:
                            return f"HTTP {resp.status}: {data[:200]!r}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    return repr(exc)
                return ""

        else:
            import grpc

            channel = grpc.aio.insecure_channel(spec["target"])
            stack.push_async_callback(channel.close)
            call = channel.unary_unary(spec["method"])  # bytes in, bytes out
            metadata = tuple(spec["headers"].items())

            async def one() -> str:
                try:
                    reply = await call(b"", metadata=metadata, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    return f"{exc.code().name}: {exc.details()}"
                return "" if expect in reply else f"unexpected reply {reply[:200]!r}"

        _, warm_errors, warm_first = await _drive(one, warmup, concurrency)
        if warm_errors:
            return {"errors": warm_errors, "first_error": f"warm-up: {warm_first}", "requests": 0}
        print("start", flush=True)  # the parent samples the other processes' CPU now...
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        latencies, errors, first_error = await _drive(one, count, concurrency)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        print("end", flush=True)  # ...and now
    latencies.sort()
    return {
        "requests": count,
        "errors": errors,
        "first_error": first_error,
        "wall_s": round(wall, 3),
        "rps": round(count / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2),
        "cpu_client": round(100 * cpu / wall),
    }


# --------------------------------------------------------------------------------------------
# The orchestrator


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads) from /proc; NaN where unavailable."""
    if pid is None:
        return math.nan
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_load(spec: dict[str, Any], watched: dict[str, int | None]) -> dict[str, Any]:
    """Run the load generator process on `spec`; CPU shares of `watched` during the timed phase."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--loadgen",
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        before: dict[str, float] = {}
        cpu: dict[str, float] = {}
        t0 = 0.0
        result: dict[str, Any] | None = None
        async for raw in proc.stdout:
            line = raw.decode().strip()
            if line == "start":
                t0 = time.perf_counter()
                before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            elif line == "end":
                wall = time.perf_counter() - t0
                cpu = {name: 100 * (cpu_seconds(pid) - before[name]) / wall for name, pid in watched.items()}
            elif line.startswith("{"):
                result = json.loads(line)
        stderr = (await proc.stderr.read()).decode()
        if await proc.wait() != 0 or result is None:
            raise BenchError(f"the load generator failed (exit {proc.returncode}):\n{stderr[-2000:]}")
        if "rps" not in result:
            raise BenchError(f"{spec['kind']} load failed: {result['first_error']}")
        result.update({f"cpu_{name}": round(value) for name, value in cpu.items() if not math.isnan(value)})
        return result
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def start_standin(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(STANDIN), str(port), "bench", "a"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def profile_text(profiler: Any, top: int = 25) -> str:
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from pai_auth.bootstrap import build as build_auth
    from pai_common.config import Settings
    from pai_common.testing import NatsServer, free_port
    from pai_gateway import resources
    from pai_gateway.app import descriptor_set, pai_services, serve
    from pai_gateway.envoy import EnvoyProcess
    from pai_gateway.model import EndpointRoute, GatewayConfig, Revision, Upstream

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # clean up on SIGTERM as on Ctrl-C

    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "load_generator": "separate process (aiohttp keep-alive pool / one grpc.aio channel)",
    }
    async with contextlib.AsyncExitStack() as stack:
        tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pai-gw-bench-")))
        envoy_log: pathlib.Path | None = None

        def envoy_tail() -> str:
            if envoy_log is None or not envoy_log.exists():
                return ""
            return "\nEnvoy log (tail):\n" + envoy_log.read_text(errors="replace")[-3000:]

        say("starting nats, auth, the stand-in upstream, the control plane and Envoy...")
        nats = NatsServer(tmp / "nats")
        stack.callback(nats.stop)
        nats.start()

        standin_port = free_port()
        standin = start_standin(standin_port)
        stack.callback(stop_process, standin)

        key = "pai_" + secrets.token_hex(4) + "_" + secrets.token_urlsafe(32)
        settings = Settings(
            service="auth",
            home=tmp / "home",
            listen="127.0.0.1:0",
            database_url=f"sqlite+aiosqlite:///{tmp / 'auth.db'}",
            database_schema="",
            nats_url=nats.url,
            auth_endpoint="",
            log_format="text",
        )
        auth = await stack.enter_async_context(build_auth(settings, bootstrap_key=key))

        descriptors = descriptor_set()
        listen_port = free_port()
        standin_address = f"127.0.0.1:{standin_port}"
        bench_route = EndpointRoute(
            "predict", "bench", (Revision("r1", 100, (standin_address,)),), resource=RESOURCE
        )
        base = GatewayConfig(
            listen_port=listen_port,
            upstreams=(Upstream("auth", (auth.address,)),),
            routes=(bench_route,),
            descriptor_set=descriptors,
            grpc_services=pai_services(descriptors),
            access_log_path=str(tmp / "access.log"),  # JSON access logs stay on, as in production
        )
        plane = await stack.enter_async_context(serve(base))
        envoy = EnvoyProcess(tmp / "envoy", "gateway-bench", plane.address, free_port())
        envoy_log = envoy.log_path
        stack.callback(envoy.stop)
        envoy.start()
        if not await plane.ads.wait_applied(plane.control.last_version, 30):
            raise BenchError("Envoy did not apply the first configuration" + envoy_tail())
        await wait_port(listen_port)
        await wait_port(standin_port)
        await asyncio.sleep(1.5)  # the revision's first active health check has passed

        # ---- traffic ----------------------------------------------------------------------
        watched = {
            "upstream": standin.pid,
            "envoy": envoy.proc.pid if envoy.proc else None,
            "main": os.getpid(),  # auth (incl. ext_authz) and the control plane
        }
        common = {"requests": args.requests, "warmup": args.warmup, "concurrency": args.concurrency}
        bearer = {"authorization": f"Bearer {key}"}
        http_json = {"content-type": "application/json"}
        gw = f"http://127.0.0.1:{listen_port}"
        cases = [
            (
                "http_direct",
                "HTTP POST stand-in, direct",
                {"kind": "http", "method": "POST", "url": f"http://{standin_address}/v2/models/m/infer"},
                http_json,
                "bench",
            ),
            (
                "http_envoy",
                "HTTP POST /api/predict via Envoy",
                {"kind": "http", "method": "POST", "url": f"{gw}/api/predict/bench/v2/models/m/infer"},
                {**http_json, **bearer},
                "bench",
            ),
            (
                "grpc_direct",
                "gRPC GetCurrentPrincipal, direct to auth",
                {"kind": "grpc", "method": PRINCIPAL, "target": auth.address},
                bearer,
                "users/admin",
            ),
            (
                "grpc_envoy",
                "gRPC GetCurrentPrincipal via Envoy",
                {"kind": "grpc", "method": PRINCIPAL, "target": f"127.0.0.1:{listen_port}"},
                bearer,
                "users/admin",
            ),
            (
                "healthz_envoy",
                "HTTP GET /healthz via Envoy (no authz)",
                {"kind": "http", "method": "GET", "url": f"{gw}/healthz"},
                {},
                "ok",
            ),
        ]
        traffic: dict[str, Any] = {}
        for name, label, target, headers, expect in cases:
            say(f"traffic: {label} ({args.requests} requests, concurrency {args.concurrency})...")
            spec = {**common, **target, "headers": headers, "expect": expect}
            traffic[name] = {"label": label, **await run_load(spec, watched)}
        out["traffic"] = traffic

        # ---- xDS push latency ---------------------------------------------------------------
        def bulk(size: int) -> tuple[EndpointRoute, ...]:
            """`size` revision clusters: two revisions per route (one if size is odd)."""
            routes = []
            for i in range(0, size, 2):
                revisions = [Revision("a", 90, (DUMMY,))]
                if i + 1 < size:
                    revisions.append(Revision("b", 10, (DUMMY,)))
                routes.append(
                    EndpointRoute("predict", f"s{size}-{i // 2}", tuple(revisions), resource=RESOURCE)
                )
            return tuple(routes)

        async def applied(version: int, timeout: float, what: str) -> None:
            if not await plane.ads.wait_applied(version, timeout):
                raise BenchError(f"Envoy did not apply {what} within {timeout}s" + envoy_tail())

        control, ads = plane.control, plane.ads
        xds: list[dict[str, Any]] = []
        profiler = None
        for size in args.sizes:
            say(f"xDS: {size} clusters...")
            # From the small base config each time, so every size starts alike.
            await applied(control.force(base), 60, "the base configuration")
            routes = bulk(size)
            for route in routes:
                route.validate()
            config = dataclasses.replace(base, routes=(bench_route, *routes))
            profiling = args.profile and size == max(args.sizes)
            if profiling:
                import cProfile

                initial_profiler = cProfile.Profile()
                initial_profiler.enable()
            wall0 = time.time()
            t0 = time.perf_counter()
            version = control.force(config)  # build + publish, caches cold for these names
            t1 = time.perf_counter()
            await applied(version, 120, f"the {size}-cluster snapshot")
            t2 = time.perf_counter()
            if profiling:
                initial_profiler.disable()
                out["profile_initial"] = profile_text(initial_profiler)
            row: dict[str, Any] = {
                "clusters": size,
                "clusters_total": len(ads.snapshot.items[resources.CLUSTER]),
                # Envoy routes: pinned + weighted per endpoint route, gRPC per service, healthz, 404
                "routes": sum(len(r.revisions) + 1 for r in config.routes)
                + len(resources.with_every_service(config.upstreams))
                + 2,
                "initial_publish_ms": round((t1 - t0) * 1000, 1),
                "initial_applied_ms": round((t2 - t0) * 1000, 1),
                # when Envoy ACKed each type (last time, if several pushes), from the publish
                "initial_acks_ms": {
                    short: round((status.acked_at - wall0) * 1000, 1)
                    for node in ads.nodes.values()
                    for t, status in node.types.items()
                    if status.acked_at >= wall0
                    for short in [t.rsplit(".", 1)[1]]
                },
            }
            # What Envoy spends with nothing to route: active health checks of every revision host.
            envoy_pid = envoy.proc.pid if envoy.proc else None
            c0, w0 = cpu_seconds(envoy_pid), time.perf_counter()
            await asyncio.sleep(2)
            row["envoy_idle_cpu"] = round(100 * (cpu_seconds(envoy_pid) - c0) / (time.perf_counter() - w0))
            if profiling:
                profiler = cProfile.Profile()
                profiler.enable()
            target = routes[len(routes) // 2]
            for change in ("weights", "address"):
                cp_ms: list[float] = []
                total_ms: list[float] = []
                for rep in range(1, args.repeats + 1):
                    if change == "weights":  # the route table is resent
                        weights = (90 - 10 * rep, 10 + 10 * rep) if len(target.revisions) == 2 else (rep,)
                        revisions = tuple(
                            dataclasses.replace(r, weight=w)
                            for r, w in zip(target.revisions, weights, strict=True)
                        )
                    else:  # one ClusterLoadAssignment is resent
                        moved = dataclasses.replace(target.revisions[0], addresses=(f"127.0.0.1:{10 + rep}",))
                        revisions = (moved, *target.revisions[1:])
                    t0 = time.perf_counter()
                    control.set_route(dataclasses.replace(target, revisions=revisions))
                    version = await control.flush()
                    t1 = time.perf_counter()
                    await applied(version, 60, f"a {change} change at {size} clusters")
                    t2 = time.perf_counter()
                    cp_ms.append((t1 - t0) * 1000)
                    total_ms.append((t2 - t0) * 1000)
                row[change] = {
                    "control_plane_median_ms": round(median(cp_ms), 1),
                    "applied_median_ms": round(median(total_ms), 1),
                    "applied_max_ms": round(max(total_ms), 1),
                }
            if profiler is not None:
                profiler.disable()
            xds.append(row)
        out["xds"] = xds
        out["repeats"] = args.repeats

        if profiler is not None:
            out["profile_changes"] = profile_text(profiler)

        # Envoy matches routes in order: the same predict traffic, its route now the last one.
        largest = max(args.sizes)
        config = dataclasses.replace(base, routes=(*bulk(largest), bench_route))
        await applied(control.force(config), 120, f"the {largest}-cluster table with the bench route last")
        label = f"  same, route last in a {largest}-cluster table"
        say(f"traffic: {label.strip()}...")
        spec = {**common, **cases[1][2], "headers": cases[1][3], "expect": "bench"}
        traffic["http_envoy_big"] = {"label": label, "clusters": largest, **await run_load(spec, watched)}

        node = next(iter(ads.nodes.values()), None)
        nacks = [t for t, s in node.types.items() if s.nacked_version] if node else []
        if nacks:
            raise BenchError(f"Envoy NACKed {nacks}" + envoy_tail())
        say("stopping...")
    return out


# --------------------------------------------------------------------------------------------
# Output


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Gateway benchmark - loopback, {result['cpus']} CPUs. Load generator: {result['load_generator']}; "
        f"{result['requests']} timed requests after {result['warmup']} warm-up, "
        f"concurrency {result['concurrency']}.",
        "",
        f"{'':45} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}"
        f"   CPU % of a core: {'client':>6} {'upstream':>8} {'envoy':>5} {'auth+xds':>8}",
    ]
    t = result["traffic"]
    for name in ("http_direct", "http_envoy", "http_envoy_big", "grpc_direct", "grpc_envoy", "healthz_envoy"):
        r = t[name]
        bound = "*" if r["cpu_client"] >= 90 else " "
        lines.append(
            f"{r['label']:44}{bound} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p90_ms']:>7.2f} {r['p99_ms']:>7.2f}"
            f" {r['max_ms']:>7.1f} {r['errors']:>6}   {'':16} {r['cpu_client']:>6} "
            f"{r.get('cpu_upstream', '-'):>8} {r.get('cpu_envoy', '-'):>5} {r.get('cpu_main', '-'):>8}"
        )
        if name in ("http_envoy", "grpc_envoy"):
            d = t[name.replace("envoy", "direct")]
            lines.append(
                f"{'  via Envoy / direct':45} {r['rps'] / d['rps']:>7.2f}x {r['p50_ms'] / d['p50_ms']:>6.2f}x"
                f" {r['p90_ms'] / d['p90_ms']:>6.2f}x {r['p99_ms'] / d['p99_ms']:>6.2f}x"
            )
    if any(r["cpu_client"] >= 90 for r in t.values()):
        lines.append(
            "* the load generator used a whole core here: the figure is what one Python client "
            "can drive, a floor of what the target can serve"
        )
    lines += [
        "",
        f"xDS push latency: one change through the control plane until Envoy ACKed it "
        f"(median / max of {result['repeats']}; 'cp' = set_route + flush, i.e. build + snapshot)",
        "",
        f"{'clusters':>8} {'(total)':>7} {'routes':>6} {'initial: publish':>16} {'CDS ack':>7}"
        f" {'EDS ack':>7} {'RDS ack':>7} {'applied':>7} {'idle%':>5}"
        f" | {'weights: cp':>11} {'median':>7} {'max':>7} | {'address: cp':>11} {'median':>7} {'max':>7}",
    ]
    for x in result["xds"]:
        w, a, acks, nan = x["weights"], x["address"], x["initial_acks_ms"], math.nan
        lines.append(
            f"{x['clusters']:>8} {x['clusters_total']:>7} {x['routes']:>6}"
            f" {x['initial_publish_ms']:>16.0f} {acks.get('Cluster', nan):>7.0f}"
            f" {acks.get('ClusterLoadAssignment', nan):>7.0f} {acks.get('RouteConfiguration', nan):>7.0f}"
            f" {x['initial_applied_ms']:>7.0f} {x['envoy_idle_cpu']:>5}"
            f" | {w['control_plane_median_ms']:>11.1f} {w['applied_median_ms']:>7.1f} {w['applied_max_ms']:>7.1f}"
            f" | {a['control_plane_median_ms']:>11.1f} {a['applied_median_ms']:>7.1f} {a['applied_max_ms']:>7.1f}"
        )
    lines.append(
        "(times in ms from the publish; idle% = Envoy's CPU, % of a core, with that many clusters and no traffic)"
    )
    if "profile_initial" in result:
        lines += ["", "Profile of the initial snapshot at the largest size:", result["profile_initial"]]
    if "profile_changes" in result:
        lines += ["", "Profile of the changes at the largest size:", result["profile_changes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object line instead of tables")
    parser.add_argument("--requests", type=int, default=5000, help="timed requests per measurement")
    parser.add_argument("--warmup", type=int, default=500, help="untimed requests before each measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10, 1000, 4000],
        help="cluster counts for the xDS push benchmark (comma-separated)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="changes timed per size and kind")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the initial snapshot and the changes at the largest size",
    )
    parser.add_argument("--loadgen", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.repeats, *args.sizes) < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency, --repeats and --sizes must be positive")

    if args.loadgen:  # the load generator process
        print(json.dumps(asyncio.run(_loadgen(json.loads(args.loadgen)))), flush=True)
        return 0

    try:
        result = asyncio.run(bench(args))
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except asyncio.CancelledError:  # SIGTERM
        say("terminated")
        return 143
    failed = {name: r for name, r in result["traffic"].items() if r["errors"]}
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        print(table(result))
    for name, r in failed.items():
        say(f"{name}: {r['errors']} failed requests, first: {r['first_error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
