"""The Ray engine against a real two-node Ray cluster on this machine (nodes 127.0.0.2 and 127.0.0.3).

The module's fixture starts the cluster with `ray start` (a head and a worker node, each in a session
of its own, with its own temporary directory and ports) and at the end kills exactly the processes of
those two sessions: `ray stop` would stop every Ray process on the machine, not only this cluster's.
Skipped when Ray is not installed (`pip install -e 'services/dlc[ray]'`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip(
    "ray", reason="the Ray engine's tests need ray (pip install -e 'services/dlc[ray]')"
)

from pai.dlc.v1 import job_spec_pb2  # noqa: E402
from pai_dlc.engine.base import (  # noqa: E402
    AttemptLaunch,
    EngineError,
    ReplicaExit,
    ReplicaHandle,
    ReplicaLaunch,
)
from pai_dlc.engine.logfile import read_records  # noqa: E402
from pai_dlc.engine.ray import NAMESPACE, RayEngine, group_name, rendezvous  # noqa: E402
from pai_dlc.model.env import Cluster, replica_env  # noqa: E402
from pai_dlc.model.spec import file_uri, normalize, replicas  # noqa: E402

pytestmark = pytest.mark.ray

PY = sys.executable
RAY = str(Path(PY).with_name("ray"))
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
REPO = Path(__file__).resolve().parents[4]
MNIST = REPO / "examples" / "train_mnist_ddp" / "train.py"
CPUS_PER_NODE = 2


def script(code: str) -> tuple[str, ...]:
    return (PY, "-u", "-c", textwrap.dedent(code))


ENV_PRINTER = script(
    """
    import os
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PET_MASTER_ADDR", "PET_MASTER_PORT"):
        print(f"{var}={os.environ.get(var, '')}")
    """
)
SLEEPER = script("import os, time; print('pid', os.getpid()); time.sleep(300)")
STUBBORN = script(
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('pid', os.getpid()); time.sleep(300)"
)


# The cluster.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def processes() -> Iterator[tuple[int, int, str]]:
    """(pid, session id, state) of every process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    # "pid (comm) state ppid pgrp session ...": comm may hold anything
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            yield int(entry), int(fields[3]), fields[0].decode()


def mentioning(text: str) -> list[int]:
    """The processes whose command line mentions `text`."""
    found = []
    for pid, _, _ in processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def kill_sessions(sessions: set[int], grace: float = 2.0) -> None:
    """SIGTERM every process of `sessions`, SIGKILL what is left after `grace` seconds.

    Only sessions this module started: never 0 (kernel threads, and processes whose session leader is
    outside this PID namespace), init's or the test process's own.
    """
    me = os.getpid()
    assert next(sid for pid, sid, _ in processes() if pid == me) == os.getsid(0), "cannot read sessions"
    sessions = sessions - {0, 1, os.getsid(0)}

    def members() -> list[int]:
        return [pid for pid, sid, state in processes() if sid in sessions and state not in "ZX" and pid != me]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pid in members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while members() and time.monotonic() < deadline:
            time.sleep(0.1)


@dataclass
class RayCluster:
    address: str
    root: Path  # everything of the cluster and of the tests' runs is under it


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    # A short path: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="pai-ray-", dir="/tmp"))
    port = free_port()
    address = f"{HEAD_IP}:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    sessions: set[int] = set()

    def start(node: str, *args: str) -> None:
        log = root / f"{node}.out"
        command = [
            RAY,
            "start",
            f"--temp-dir={root / node}",
            "--disable-usage-stats",
            f"--num-cpus={CPUS_PER_NODE}",
        ]
        command += ["--object-store-memory=100000000", f"--dashboard-agent-listen-port={free_port()}"]
        command += [f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        command += [f"--metrics-export-port={free_port()}", *args]
        with open(log, "wb") as out:
            # A session of its own: every process of the node (and the Ray workers it starts) is in it.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        sessions.add(proc.pid)
        if proc.wait(timeout=90) != 0:
            raise RuntimeError(f"ray start ({node}) failed:\n{log.read_text()[-3000:]}")

    try:
        started = time.monotonic()
        start(
            "head",
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={port}",
            f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false",
        )
        start("worker", f"--address={address}", f"--node-ip-address={WORKER_IP}")
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="warning")
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, "the worker node did not join the cluster"
            time.sleep(0.1)
        print(f"Ray cluster up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield RayCluster(address, root)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        # Replicas left by a failed test run in sessions of their own; their command lines name `root`.
        ours = set(mentioning(str(root)))
        kill_sessions(sessions | {sid for pid, sid, _ in processes() if pid in ours})
        shutil.rmtree(root, ignore_errors=True)


# Helpers.


def attempt(
    root: Path,
    commands: list[tuple[str, ...]],
    env: Callable[[int], dict[str, str]] = lambda rank: {},
    uid: str | None = None,
    number: int = 0,
) -> AttemptLaunch:
    uid = uid or uuid.uuid4().hex[:12]
    names = ["master-0", *(f"worker-{i}" for i in range(1, len(commands)))]
    launches = tuple(
        ReplicaLaunch(name, rank, command, env(rank))
        for rank, (name, command) in enumerate(zip(names, commands, strict=True))
    )
    run_dir = root / "runs" / uid / f"attempt-{number}"
    return AttemptLaunch("jobs/demo", uid, number, str(run_dir), launches)


async def exits(
    engine: RayEngine, handles: list[ReplicaHandle], timeout: float = 30.0
) -> dict[str, ReplicaExit]:
    """Polls until every replica in `handles` has ended."""
    deadline = time.monotonic() + timeout
    while True:
        ended = {e.replica: e for e in engine.poll(handles)}
        if len(ended) == len(handles):
            return ended
        assert time.monotonic() < deadline, f"still running: {set(h.replica for h in handles) - set(ended)}"
        await asyncio.sleep(0.1)


def stdout(handle: ReplicaHandle) -> list[str]:
    return [r.text for r in read_records(handle.log_path) if r.stream == "stdout"]


async def printed_pid(handle: ReplicaHandle, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        for line in stdout(handle):
            if line.startswith("pid "):
                return int(line.split()[1])
        assert time.monotonic() < deadline, f"{handle.replica} printed no pid"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    return any(p == pid and state not in "ZX" for p, _, state in processes())


def actors_of(uid: str) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith(f"pai-{uid}-")
    ]


def groups_of(uid: str) -> list[str]:
    """The job's placement groups that are not removed."""
    return sorted(
        g["name"]
        for g in ray.util.placement_group_table().values()
        if g["state"] != "REMOVED" and g["name"].startswith(f"pai-{uid}-")
    )


async def gone(uid: str, timeout: float = 10.0) -> bool:
    """Whether the job's actors and placement groups are gone (removal takes effect quickly, not at once)."""
    deadline = time.monotonic() + timeout
    while actors_of(uid) or groups_of(uid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def rendezvous_env(rank: int) -> dict[str, str]:
    """What dlc sets: an address on its own machine, which the engine must replace."""
    return {
        "RANK": str(rank),
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": "1",
    }


# The tests.


async def test_a_gang_spreads_over_both_nodes_with_rank_0_as_rendezvous(cluster: RayCluster) -> None:
    engine = RayEngine(cluster.address)
    launch = attempt(cluster.root, [ENV_PRINTER, ENV_PRINTER], rendezvous_env)
    handles = await engine.launch(launch)
    try:
        assert {h.node for h in handles} == {HEAD_IP, WORKER_IP}
        for handle in handles:  # the actor's name, then the supervisor's pid and start time
            ref = f"pai-{launch.uid}-0-{handle.replica} pid {handle.pid} start "
            assert re.fullmatch(re.escape(ref) + r"\d+", handle.engine_ref), handle.engine_ref
        ended = await exits(engine, handles)
        assert all(e.exit_code == 0 and e.succeeded for e in ended.values()), ended
        for handle in handles:
            env = dict(line.split("=", 1) for line in stdout(handle))
            assert env["RANK"] == str(handle.rank) and env["WORLD_SIZE"] == "2"
            assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == handles[0].node
            assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] != "1"
    finally:
        await engine.kill(handles, grace=0)
    assert await gone(launch.uid)


async def test_ddp_trains_across_the_two_nodes(cluster: RayCluster, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:12]
    spec = job_spec_pb2.JobSpec(
        kind=job_spec_pb2.JobSpec.PYTORCH,
        engine=job_spec_pb2.JobSpec.RAY,
        replica_specs=[
            job_spec_pb2.ReplicaSpec(
                role=job_spec_pb2.ReplicaSpec.WORKER,
                count=2,
                command=[PY, str(MNIST)],
                args=["--epochs", "2", "--steps-per-epoch", "5"],
                resources=job_spec_pb2.Resources(cpu_milli=1000),
            )
        ],
        checkpoint_uri=file_uri(tmp_path / "checkpoints"),
        output_uri=file_uri(tmp_path / "output"),
    )
    spec = normalize(spec, default_engine=job_spec_pb2.JobSpec.RAY, storage_root=tmp_path, uid=uid)
    everyone = replicas(spec)
    placeholder = Cluster("127.0.0.1", free_port(), {})  # as the controller does; the engine rewrites it
    launch = AttemptLaunch(
        "jobs/ddp",
        uid,
        0,
        str(cluster.root / "runs" / uid / "attempt-0"),
        tuple(
            ReplicaLaunch(
                r.name,
                r.rank,
                (*r.spec.command, *r.spec.args),
                replica_env(
                    job="jobs/ddp",
                    uid=uid,
                    spec=spec,
                    replica=r,
                    everyone=everyone,
                    cluster=placeholder,
                    attempt=0,
                    restart_count=0,
                ),
                cwd=str(MNIST.parent),
            )
            for r in everyone
        ),
    )
    engine = RayEngine(cluster.address)
    handles = await engine.launch(launch)
    try:
        assert {h.node for h in handles} == {HEAD_IP, WORKER_IP}
        ended = await exits(engine, handles, timeout=90)
        logs = {h.replica: "\n".join(stdout(h)) for h in handles}
        assert all(e.succeeded for e in ended.values()), (ended, logs)
    finally:
        await engine.kill(handles, grace=0)
    assert (tmp_path / "output" / "model.pt").is_file()
    assert "rank=1 world_size=2" in logs["worker-1"]
    assert "saved model to" in logs["worker-0"] and "step=10 " in logs["worker-0"]
    assert await gone(uid)


async def test_kill_leaves_no_process_and_no_actor(cluster: RayCluster) -> None:
    engine = RayEngine(cluster.address)
    launch = attempt(cluster.root, [SLEEPER, STUBBORN])
    handles = await engine.launch(launch)
    pids = [await printed_pid(h) for h in handles]
    assert engine.poll(handles) == []
    started = time.monotonic()
    await engine.kill(handles, grace=1)
    assert time.monotonic() - started < 15
    for handle, pid in zip(handles, pids, strict=True):
        assert not alive(pid) and not alive(handle.pid), handle.replica
    assert await gone(launch.uid)
    ended = await exits(engine, handles, timeout=5)
    assert ended["master-0"].signal == signal.SIGTERM and not ended["master-0"].lost
    assert ended["worker-1"].lost  # SIGKILL took its supervisor too
    await engine.kill(handles, grace=0)  # again: nothing left to do


async def test_a_new_engine_watches_and_kills_the_replicas_of_another(cluster: RayCluster) -> None:
    go = cluster.root / f"go-{uuid.uuid4().hex[:8]}"
    waiter = script(
        f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\nsys.exit(5)"
    )
    launch = attempt(cluster.root, [waiter, SLEEPER])
    handles = await RayEngine(cluster.address).launch(launch)
    pid = await printed_pid(handles[1])
    ray.shutdown()  # dlc restarts: its connection to Ray goes, the detached actors stay
    other = RayEngine(cluster.address, check_interval=0.1)
    for _ in range(10):
        assert other.poll(handles) == []
        await asyncio.sleep(0.1)
    go.touch()
    ended = await exits(other, handles[:1])
    assert ended["master-0"].exit_code == 5
    await other.kill(handles[1:], grace=1)
    assert not alive(pid) and not alive(handles[1].pid)
    assert actors_of(launch.uid) == [f"pai-{launch.uid}-0-master-0"]
    assert groups_of(launch.uid) == [group_name(launch.uid, 0)]  # it still holds master-0's actor
    await other.kill(handles[:1], grace=1)
    assert await gone(launch.uid)


async def test_a_replica_whose_actor_died_is_lost_and_still_killed(cluster: RayCluster) -> None:
    engine = RayEngine(cluster.address, check_interval=0.1)
    launch = attempt(cluster.root, [SLEEPER])
    (handle,) = await engine.launch(launch)
    pid = await printed_pid(handle)
    ray.kill(ray.get_actor(handle.engine_ref.split()[0], namespace=NAMESPACE))
    (ended,) = (await exits(engine, [handle], timeout=30)).values()
    assert ended.lost
    await engine.kill([handle], grace=1)  # by a task on the replica's node
    assert not alive(pid) and not alive(handle.pid)
    assert await gone(launch.uid)


async def test_a_launch_removes_what_an_earlier_attempt_of_the_job_left(cluster: RayCluster) -> None:
    """dlc crashed while it launched attempt 0, and never got its handles: attempt 1 clears it away."""
    first = attempt(cluster.root, [SLEEPER])
    (orphan,) = await RayEngine(cluster.address).launch(first)
    pid = await printed_pid(orphan)
    engine = RayEngine(cluster.address)
    handles = await engine.launch(attempt(cluster.root, [SLEEPER], uid=first.uid, number=1))
    try:
        assert not alive(pid) and not alive(orphan.pid)
        assert actors_of(first.uid) == [f"pai-{first.uid}-1-master-0"]
        assert groups_of(first.uid) == [group_name(first.uid, 1)]
        assert engine.poll(handles) == []
    finally:
        await engine.kill(handles, grace=0)
    assert await gone(first.uid)


async def test_a_gang_the_cluster_cannot_hold_is_refused(cluster: RayCluster) -> None:
    engine = RayEngine(cluster.address, cpus_per_replica=CPUS_PER_NODE, placement_timeout=2)
    launch = attempt(cluster.root, [SLEEPER, SLEEPER, SLEEPER])
    with pytest.raises(EngineError, match="the Ray cluster cannot place the gang: 3 bundles of 2 CPU"):
        await engine.launch(launch)
    assert await gone(launch.uid)


async def test_a_replica_that_cannot_start_fails_the_launch_and_stops_the_rest(cluster: RayCluster) -> None:
    engine = RayEngine(cluster.address)
    launch = attempt(cluster.root, [SLEEPER, ("/nonexistent/command",)])
    with pytest.raises(EngineError, match="worker-1 did not start: cannot run /nonexistent/command"):
        await engine.launch(launch)
    assert await gone(launch.uid)
    assert not mentioning(launch.run_dir)


def test_rendezvous_points_at_rank_0_and_rewrites_tf_config() -> None:
    tf = '{{"cluster": {{"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}}, "task": {task}}}'
    launches = [
        ReplicaLaunch("chief-0", 0, ("x",), {"TF_CONFIG": tf.format(task='{"type": "chief", "index": 0}')}),
        ReplicaLaunch("worker-0", 1, ("x",), {"TF_CONFIG": tf.format(task='{"type": "worker", "index": 0}')}),
        ReplicaLaunch("worker-1", 2, ("x",), {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "RANK": "2"}),
    ]
    out = rendezvous(launches, [("10.0.0.1", 100), ("10.0.0.2", 200), ("10.0.0.3", 300)])
    assert json.loads(out[1].env["TF_CONFIG"])["cluster"] == {
        "chief": ["10.0.0.1:100"],
        "worker": ["10.0.0.2:200", "127.0.0.1:3"],  # worker-1 has no TF_CONFIG: left as it was
    }
    assert out[2].env == {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "100", "RANK": "2"}
    assert "MASTER_ADDR" not in out[0].env
