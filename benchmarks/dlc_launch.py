"""dlc launch benchmark: the same 2-worker DDP script via plain `torchrun` and as a pai job, side by side.

    .venv/bin/python benchmarks/dlc_launch.py                     # tables
    .venv/bin/python benchmarks/dlc_launch.py --repeat 5 --epochs 3 --steps-per-epoch 20
    .venv/bin/python benchmarks/dlc_launch.py --json              # one JSON object on one line

The script is `examples/train_mnist_ddp/train.py` (2 ranks, gloo, CPU), with `--epochs` x
`--steps-per-epoch` steps (default 2 x 10, a few seconds). Both paths run it `--repeat` times,
alternating (plain then pai, then pai then plain, ...) after `--warmup` untimed runs of each, so
machine noise and warm caches hit both alike. Every run starts from empty checkpoint and output
directories. Both paths run with OMP_NUM_THREADS=1: dlc sets it from each replica's CPU request (1
core), and the plain path gets it from here, so both do the same work.

Plain path: `python -m torch.distributed.run --nnodes=1 --nproc_per_node=2 --master_port <free>
train.py ...` in the example's directory, with temporary PAI_CHECKPOINT_DIR / PAI_OUTPUT_DIR. Its
stdout is read line by line as it runs (time.monotonic()): first step = when `step=1 ` appears,
wall time = until torchrun has exited; `rank=0 ` (printed once torch is imported) splits the start.

pai path: a nats-server (`pai_common.testing.NatsServer`), auth, the scheduler and dlc, each its own
process started as `cli/tests/conftest.py` does (SQLite in a temporary PAI_HOME, the admin's key as
dlc's identity, dlc polling every 0.1 s), once for the whole benchmark; a resource group with this
machine as a (simulated) node and a quota for the workspace, through the scheduler's gRPC API as the
admin. Each run submits `pai.dlc.v1.JobService/CreateJob` (PYTORCH, 2 WORKER replicas, command
`[python, "train.py", ...]`, code = the example directory as a file:// URI, 1 CPU and 1 GiB each):
first step = when the `step=1 ` line arrives on `StreamJobLogs(follow=True)`, wall time = until
`GetJob` (polled every 0.05 s) says SUCCEEDED, both from just before the CreateJob call.
Submit -> RUNNING, the platform's own overhead (workload creation, admission, launch), comes from
the job's events (`ListJobEvents`: the RUNNING event's create_time minus the CREATING one's); the
rest of the pai breakdown uses the capture times dlc stamps on log lines (`rank=0 `, `step=1 `,
and its `exited with code` line per replica). Server and client times are wall clock on one machine.

Everything is started by this script in a temporary directory and stopped again, even on failure,
Ctrl-C or SIGTERM: a job still running is stopped through dlc first (its replicas outlive dlc).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.metadata
import json
import os
import pathlib
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import grpc

from pai.dlc.v1 import job_pb2, job_pb2_grpc, job_spec_pb2, log_pb2
from pai.scheduler.v1 import (
    node_pb2,
    node_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    resource_group_pb2,
    resource_group_pb2_grpc,
)
from pai_common.testing import (
    AuthProcess,
    DlcProcess,
    NatsServer,
    SchedulerProcess,
    ServiceStartError,
    free_port,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_mnist_ddp"
WORKSPACE = "bench"
GROUP = "bench"
GiB = 2**30
WORKERS = 2
POLL_SECONDS = 0.05  # GetJob polling while a job runs
DLC_POLL_INTERVAL = "0.1"  # PAI_DLC_POLL_INTERVAL, as in the CLI tests (dlc's own default: 0.25)
DLC_KILL_GRACE = "3"  # PAI_DLC_KILL_GRACE, as in the CLI tests

Job = job_pb2.Job
Spec = job_spec_pb2.JobSpec
ReplicaSpec = job_spec_pb2.ReplicaSpec
TERMINAL = (Job.SUCCEEDED, Job.FAILED, Job.STOPPED)

# (key, label) of the pai breakdown; the first seven add up to submit -> first step seen, the first
# six plus the last three to the wall time.
PAI_PHASES = (
    ("submit_to_creating_s", "submit -> CREATING (the CreateJob call)"),
    ("creating_to_queued_s", "CREATING -> QUEUED (workload created in the scheduler)"),
    ("queued_to_starting_s", "QUEUED -> STARTING (admitted, event to dlc over NATS)"),
    ("starting_to_running_s", "STARTING -> RUNNING (supervisors + commands started)"),
    ("running_to_rank0_s", "RUNNING -> rank=0 logged (python, import torch)"),
    ("rank0_to_step1_s", "rank=0 logged -> step=1 logged (gloo init, step 1)"),
    ("step1_seen_delay_s", "step=1 logged -> seen on StreamJobLogs"),
    ("step1_to_exit_s", "step=1 logged -> last replica exited (training, exit)"),
    ("exit_to_succeeded_s", "last replica exited -> SUCCEEDED (dlc notices)"),
    ("succeeded_seen_delay_s", "SUCCEEDED -> seen by GetJob polling"),
)
PLAIN_PHASES = (
    ("launch_to_rank0_s", "launch -> rank=0 seen (torchrun agent, python, import torch)"),
    ("rank0_to_step1_s", "rank=0 seen -> step=1 seen (gloo init, step 1)"),
    ("step1_to_exit_s", "step=1 seen -> torchrun exited (training, exit)"),
)


class BenchError(Exception):
    """The benchmark could not run (a service did not start, a run failed or timed out...)."""


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, through every finally."""


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def clean_env() -> dict[str, str]:
    """This process's environment without PAI_* / OTEL_* settings (as conftest.py starts services)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PAI_", "OTEL_"))}


def train_args(args: argparse.Namespace) -> list[str]:
    return ["--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch)]


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc (children first)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo += children.get(child, [])
    return found


def stop_tree(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM `proc` (torchrun stops its workers), SIGKILL it and everything below it after `grace`.

    torchrun starts each worker in a process group of its own, so its group alone is not enough;
    its descendants are noted while it still runs (once it is gone, they are nobody's children).
    """
    if proc.poll() is None:
        below = descendants(proc.pid)
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        for pid in (proc.pid, *below):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    proc.wait()


# --------------------------------------------------------------------------------------------
# The plain path


def run_plain(args: argparse.Namespace, work: pathlib.Path, label: str) -> dict[str, Any]:
    """One torchrun of the script; times from just before the launch (time.monotonic())."""
    out = work / label
    env = clean_env()
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PAI_CHECKPOINT_DIR=str(out / "checkpoints"),
        PAI_OUTPUT_DIR=str(out / "output"),
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={WORKERS}",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", "train.py", *train_args(args),
    ]  # fmt: skip
    lines: collections.deque[str] = collections.deque(maxlen=40)
    first = rank0 = saved = None
    timed_out = threading.Event()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=EXAMPLE,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def expire() -> None:
        timed_out.set()
        stop_tree(proc)

    watchdog = threading.Timer(args.timeout, expire)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if rank0 is None and line.startswith("rank=0 "):
                rank0 = now
            elif first is None and line.startswith("step=1 "):
                first = now
            elif line.startswith("saved model to "):
                saved = now
        code = proc.wait()
        end = time.monotonic()
    finally:
        watchdog.cancel()
        stop_tree(proc)
    if timed_out.is_set():
        raise BenchError(f"{label}: not done after {args.timeout:.0f} s:\n" + "\n".join(lines))
    if code != 0 or rank0 is None or first is None or saved is None:
        raise BenchError(f"{label}: torchrun exited with {code}:\n" + "\n".join(lines))
    return {
        "wall_s": end - t0,
        "first_step_s": first - t0,
        "launch_to_rank0_s": rank0 - t0,
        "rank0_to_step1_s": first - rank0,
        "step1_to_exit_s": end - first,
    }


# --------------------------------------------------------------------------------------------
# The pai path


class LogWatcher(threading.Thread):
    """Follows StreamJobLogs: when `step=1 ` arrived (monotonic) and was logged, and the exit lines."""

    def __init__(self, stub: job_pb2_grpc.JobServiceStub, name: str, metadata: Any) -> None:
        super().__init__(name=f"logs {name}", daemon=True)
        self.request = log_pb2.StreamJobLogsRequest(name=name, follow=True)
        self.call = stub.StreamJobLogs(self.request, metadata=metadata)
        self.rank0_logged: float | None = None  # wall clock, from dlc's capture time
        self.step1_seen: float | None = None
        self.step1_logged: float | None = None  # wall clock, from dlc's capture time
        self.exited: dict[str, float] = {}  # replica -> wall clock of its `exited with code` line
        self.lines: collections.deque[str] = collections.deque(maxlen=40)
        self.error: grpc.RpcError | None = None

    def run(self) -> None:
        try:
            for reply in self.call:
                now = time.monotonic()
                for e in reply.entries:
                    self.lines.append(f"[{e.replica}] {e.text}")
                    if self.rank0_logged is None and e.text.startswith("rank=0 "):
                        self.rank0_logged = e.time.ToNanoseconds() / 1e9
                    elif self.step1_seen is None and e.text.startswith("step=1 "):
                        self.step1_seen, self.step1_logged = now, e.time.ToNanoseconds() / 1e9
                    elif e.stream == log_pb2.LogEntry.SYSTEM and e.text.startswith("exited with code"):
                        self.exited[e.replica] = e.time.ToNanoseconds() / 1e9
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e

    def stop(self) -> None:
        self.call.cancel()
        self.join(5)


class Platform:
    """NATS, auth, the scheduler and dlc, with room for the workspace's jobs; stops all of it."""

    def __init__(self, home: pathlib.Path) -> None:
        self.home = home
        self.nats = NatsServer(home / "nats")
        self.auth: AuthProcess | None = None
        self.scheduler: SchedulerProcess | None = None
        self.dlc: DlcProcess | None = None
        self.channel: grpc.Channel | None = None
        self.jobs: job_pb2_grpc.JobServiceStub  # set by start()
        self.running: str | None = None  # the job of the run in progress
        self.pids: list[int] = []  # its replicas' supervisors (process group leaders)

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.nats.start()
        # the services as the CLI tests run them, each in a session of its own: a Ctrl-C in the
        # terminal reaches only this script, which stops the running job before the services
        self.auth = AuthProcess(self.home / "auth", self.nats.url, own_session=True)
        self.auth.start()
        self.scheduler = SchedulerProcess(self.home / "scheduler", self.nats.url, self.auth, own_session=True)
        self.scheduler.start()
        self.dlc = DlcProcess(
            self.home / "dlc", self.nats.url, self.auth, self.scheduler, own_session=True,
            kill_grace=DLC_KILL_GRACE, poll_interval=DLC_POLL_INTERVAL,
        )  # fmt: skip
        self.dlc.start()
        self.make_room()
        self.channel = grpc.insecure_channel(self.dlc.address, options=[("grpc.enable_http_proxy", 0)])
        self.jobs = job_pb2_grpc.JobServiceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        assert self.auth is not None
        return (("authorization", f"Bearer {self.auth.admin_key}"),)

    def make_room(self) -> None:
        """A resource group with this machine as its node and a quota for the workspace."""
        assert self.scheduler is not None
        cpu_milli = max(WORKERS, os.cpu_count() or 1) * 1000
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        md = self.metadata
        with grpc.insecure_channel(self.scheduler.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
            resource_group_pb2_grpc.ResourceGroupServiceStub(ch).CreateResourceGroup(
                resource_group_pb2.CreateResourceGroupRequest(
                    resource_group_id=GROUP, resource_group=resource_group_pb2.ResourceGroup()
                ),
                metadata=md,
                timeout=30,
            )
            node_pb2_grpc.NodeServiceStub(ch).RegisterNode(
                node_pb2.RegisterNodeRequest(
                    parent=f"resourceGroups/{GROUP}",
                    node_id="this-machine",
                    node=node_pb2.Node(
                        source=node_pb2.Node.SIMULATED, cpu_milli=cpu_milli, memory_bytes=memory
                    ),
                ),
                metadata=md,
                timeout=30,
            )
            quota_pb2_grpc.QuotaServiceStub(ch).CreateQuota(
                quota_pb2.CreateQuotaRequest(
                    parent=f"resourceGroups/{GROUP}",
                    quota_id=WORKSPACE,
                    quota=quota_pb2.Quota(workspace=f"workspaces/{WORKSPACE}"),
                ),
                metadata=md,
                timeout=30,
            )

    def spec(self, args: argparse.Namespace) -> job_spec_pb2.JobSpec:
        return Spec(
            kind=Spec.PYTORCH,
            engine=Spec.LOCAL,
            replica_specs=[
                ReplicaSpec(
                    role=ReplicaSpec.WORKER,
                    count=WORKERS,
                    command=[sys.executable, "train.py", *train_args(args)],
                    resources=job_spec_pb2.Resources(cpu_milli=1000, memory_bytes=GiB),
                )
            ],
            code=job_spec_pb2.CodeSource(uri=EXAMPLE.as_uri()),
        )

    def run_job(self, args: argparse.Namespace, label: str) -> dict[str, Any]:
        """One job; times from just before the CreateJob call."""
        name = f"workspaces/{WORKSPACE}/jobs/{label}"
        md = self.metadata
        request = job_pb2.CreateJobRequest(
            parent=f"workspaces/{WORKSPACE}", job_id=label, job=Job(spec=self.spec(args))
        )
        self.running, self.pids = name, []  # from here on, a failure stops the job
        t0_wall, t0 = time.time(), time.monotonic()
        self.jobs.CreateJob(request, metadata=md, timeout=30)
        watcher = LogWatcher(self.jobs, name, md)
        watcher.start()
        try:
            while True:
                job = self.jobs.GetJob(job_pb2.GetJobRequest(name=name), metadata=md, timeout=30)
                self.pids = [r.pid for r in job.replica_statuses if r.pid] or self.pids
                if job.state in TERMINAL:
                    break
                if time.monotonic() - t0 > args.timeout:
                    raise BenchError(
                        f"{name}: not done after {args.timeout:.0f} s, {Job.State.Name(job.state)}"
                    )
                time.sleep(POLL_SECONDS)
            done = time.monotonic()
            self.running = None
            watcher.join(10)
        finally:
            watcher.stop()
        if job.state != Job.SUCCEEDED:
            raise BenchError(
                f"{name} ended {Job.State.Name(job.state)} ({job.reason}): {job.message}\n"
                + "\n".join(watcher.lines)
            )
        if watcher.error is not None:
            raise BenchError(f"{name}: StreamJobLogs failed: {watcher.error}")
        rank0, seen, logged = watcher.rank0_logged, watcher.step1_seen, watcher.step1_logged
        if rank0 is None or seen is None or logged is None or len(watcher.exited) < WORKERS:
            raise BenchError(
                f"{name}: no rank=0, step=1 or exit lines in its logs:\n" + "\n".join(watcher.lines)
            )
        events = self.jobs.ListJobEvents(
            job_pb2.ListJobEventsRequest(parent=name, page_size=1000), metadata=md, timeout=30
        ).job_events
        at: dict[int, float] = {}
        for e in events:  # oldest first: keep the first time the job entered each state
            at.setdefault(e.state, e.create_time.ToNanoseconds() / 1e9)
        missing = [
            s for s in (Job.CREATING, Job.QUEUED, Job.STARTING, Job.RUNNING, Job.SUCCEEDED) if s not in at
        ]
        if missing:
            raise BenchError(f"{name}: no event for {', '.join(Job.State.Name(s) for s in missing)}")
        exited = max(watcher.exited.values())
        return {
            "wall_s": done - t0,
            "first_step_s": seen - t0,
            "submit_to_running_s": at[Job.RUNNING] - at[Job.CREATING],
            "submit_to_creating_s": at[Job.CREATING] - t0_wall,
            "creating_to_queued_s": at[Job.QUEUED] - at[Job.CREATING],
            "queued_to_starting_s": at[Job.STARTING] - at[Job.QUEUED],
            "starting_to_running_s": at[Job.RUNNING] - at[Job.STARTING],
            "running_to_rank0_s": rank0 - at[Job.RUNNING],
            "rank0_to_step1_s": logged - rank0,
            "step1_seen_delay_s": (seen - t0) - (logged - t0_wall),
            "step1_to_exit_s": exited - logged,
            "exit_to_succeeded_s": at[Job.SUCCEEDED] - exited,
            "succeeded_seen_delay_s": (done - t0) - (at[Job.SUCCEEDED] - t0_wall),
            "restarts": job.restart_count,
        }

    def abandon(self) -> None:
        """Stop the job of an unfinished run; if dlc cannot, kill its replicas' process groups."""
        name, self.running = self.running, None
        if name is None:
            return
        say(f"stopping {name}...")
        md = self.metadata
        deadline = time.monotonic() + float(DLC_KILL_GRACE) + 15
        try:
            self.jobs.StopJob(job_pb2.StopJobRequest(name=name), metadata=md, timeout=10)
            while time.monotonic() < deadline:
                job = self.jobs.GetJob(job_pb2.GetJobRequest(name=name), metadata=md, timeout=10)
                if job.state in TERMINAL:
                    return  # dlc waited until every process of it was gone
                time.sleep(0.2)
        except grpc.RpcError as e:
            say(f"could not stop {name} through dlc: {e.code().name}")
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.abandon()
        if self.channel is not None:
            self.channel.close()
        for service in (self.dlc, self.scheduler, self.auth):
            if service is not None:
                service.stop()
        self.nats.stop()


# --------------------------------------------------------------------------------------------
# Running and reporting


def figures(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summary(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: figures([r[k] for r in runs]) for k in keys}
    out["runs"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in runs]
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    plain: list[dict[str, Any]] = []
    pai: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pai-dlc-launch-") as tmp:
        work = pathlib.Path(tmp)
        stack = Platform(work / "home")
        try:
            say("starting nats, auth, the scheduler and dlc...")
            started = time.monotonic()
            stack.start()
            say(f"  serving after {time.monotonic() - started:.1f} s; room made for workspaces/{WORKSPACE}")
            order = [("warm", i, side) for i in range(args.warmup) for side in ("plain", "pai")]
            for i in range(args.repeat):
                order += [("run", i, side) for side in (("plain", "pai") if i % 2 == 0 else ("pai", "plain"))]
            for kind, i, side in order:
                label = f"{kind}-{i + 1}"
                r = run_plain(args, work, f"plain-{label}") if side == "plain" else stack.run_job(args, label)
                say(
                    f"{side:>5} {label:7}: wall {r['wall_s']:6.2f} s, first step {r['first_step_s']:5.2f} s"
                    + (f", submit -> RUNNING {r['submit_to_running_s']:.2f} s" if side == "pai" else "")
                    + (" (warm-up, not counted)" if kind == "warm" else "")
                )
                if kind == "run":
                    (plain if side == "plain" else pai).append(r)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):  # let the cleanup finish
                signal.signal(signum, signal.SIG_IGN)
            say("stopping...")
            stack.stop()
    return {
        "benchmark": "dlc_launch",
        "env": {
            "cpus": os.cpu_count(),
            "torch": importlib.metadata.version("torch"),
            "python": platform.python_version(),
            "load_average_at_start": round(args.load_average, 2),
        },
        "settings": {
            "script": str(EXAMPLE.relative_to(ROOT) / "train.py"),
            "workers": WORKERS,
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "omp_num_threads": 1,
            "dlc_poll_interval_s": float(DLC_POLL_INTERVAL),
            "getjob_poll_s": POLL_SECONDS,
        },
        "plain": summary(plain, ["wall_s", "first_step_s", *(k for k, _ in PLAIN_PHASES)]),
        "pai": summary(pai, ["wall_s", "first_step_s", "submit_to_running_s", *(k for k, _ in PAI_PHASES)]),
    }


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def table(result: dict[str, Any]) -> str:
    env, s, plain, pai = result["env"], result["settings"], result["plain"], result["pai"]
    lines = [
        f"dlc launch benchmark: {s['script']}, {s['workers']} DDP workers (gloo, CPU), "
        f"{s['epochs']} epochs x {s['steps_per_epoch']} steps",
        f"{env['cpus']} CPU cores (load average {env['load_average_at_start']:.2f} at start), "
        f"torch {env['torch']}, Python {env['python']}; {plural(s['repeat'], 'run')} per path, alternating, "
        f"after {plural(s['warmup'], 'warm-up run')} of each",
        "OMP_NUM_THREADS=1 on both paths (dlc sets it from each replica's 1-core CPU request; "
        "torchrun gets it from this script)",
        "plain: python -m torch.distributed.run --nproc_per_node=2 --master_port <free> train.py ...",
        f"pai:   CreateJob (PYTORCH, 2 WORKER replicas, 1 CPU + 1 GiB each, LOCAL engine) to dlc + scheduler + "
        f"auth + NATS; dlc polls every {s['dlc_poll_interval_s']:g} s, the client every {s['getjob_poll_s']:g} s",
        "",
        f"{'seconds':34} {'plain torchrun':>20}   {'pai job':>20}   {'pai - plain':>11}",
        f"{'':34} {'mean':>6} {'min':>6} {'max':>6}   {'mean':>6} {'min':>6} {'max':>6}   {'mean':>11}",
    ]

    def row(label: str, a: dict[str, float] | None, b: dict[str, float]) -> str:
        left = f"{a['mean']:>6.2f} {a['min']:>6.2f} {a['max']:>6.2f}" if a else f"{'-':>6} {'-':>6} {'-':>6}"
        diff = f"{b['mean'] - a['mean']:>+11.2f}" if a else f"{'':>11}"
        return f"{label:34} {left}   {b['mean']:>6.2f} {b['min']:>6.2f} {b['max']:>6.2f}   {diff}"

    lines.append(row("launch/submit -> first step", plain["first_step_s"], pai["first_step_s"]))
    lines.append(row("launch/submit -> done (wall)", plain["wall_s"], pai["wall_s"]))
    lines.append(row("submit -> RUNNING (job events)", None, pai["submit_to_running_s"]))
    lines += ["", f"{'where the time goes (seconds)':62} {'mean':>6} {'min':>6} {'max':>6}"]
    lines.append("pai job:")
    for key, label in PAI_PHASES:
        f = pai[key]
        lines.append(f"  {label:60} {f['mean']:>6.2f} {f['min']:>6.2f} {f['max']:>6.2f}")
    lines.append("plain torchrun:")
    for key, label in PLAIN_PHASES:
        f = plain[key]
        lines.append(f"  {label:60} {f['mean']:>6.2f} {f['min']:>6.2f} {f['max']:>6.2f}")
    lines.append(
        "(pai phases from the job's events and the capture times dlc stamps on log lines; the first seven add "
        "up to first step, the first six and the last three to wall)"
    )
    restarted = [r for r in pai["runs"] if r["restarts"]]
    if restarted:
        lines.append(f"warning: {len(restarted)} pai run(s) restarted their gang; their times include it")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per path before them")
    parser.add_argument("--epochs", type=int, default=2, help="train.py --epochs")
    parser.add_argument("--steps-per-epoch", type=int, default=10, help="train.py --steps-per-epoch")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run at most")
    parser.add_argument("--json", action="store_true", help="print one JSON object line instead of tables")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.epochs < 1 or args.steps_per_epoch < 1:
        parser.error("--repeat, --epochs and --steps-per-epoch must be positive, --warmup not negative")
    args.load_average = os.getloadavg()[0]

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        result = bench(args)
    except (BenchError, ServiceStartError) as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Terminated:
        say("terminated")
        return 143
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
