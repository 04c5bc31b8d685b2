"""Test support for owners and for the runtime's own tests: gangs to launch, waiting for their ends,
and a real two-node Ray cluster on this machine.

`ray_cluster()` starts a head on 127.0.0.2 and a worker node on 127.0.0.3 with `ray start` (each in a
session of its own, with its own temporary directory and ports), connects this process to it in
`namespace`, and at the end kills exactly the processes of those two sessions, and of the sessions
of any process whose command line names the cluster's directory (replicas a failed test left): `ray
stop` would stop every Ray process on the machine, not only this cluster's. Needs the `ray` package
and its `ray` command next to this Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pai_runtime.logfile import read_records
from pai_runtime.probe import free_port
from pai_runtime.types import Backend, GangLaunch, ReplicaExit, ReplicaHandle, ReplicaLaunch

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
CPUS_PER_NODE = 2
ANY = ""  # every interface: the ports of a Ray node


def gang_of(
    root: Path,
    commands: list[tuple[str, ...]],
    env: Callable[[int], dict[str, str]] = lambda rank: {},
    uid: str | None = None,
    number: int = 0,
) -> GangLaunch:
    """Attempt `number` of a gang of `commands` (master-0, worker-1, ...), run under `root`."""
    uid = uid or uuid.uuid4().hex[:12]
    names = ["master-0", *(f"worker-{i}" for i in range(1, len(commands)))]
    launches = tuple(
        ReplicaLaunch(name, rank, command, env(rank))
        for rank, (name, command) in enumerate(zip(names, commands, strict=True))
    )
    run_dir = root / "runs" / uid / f"attempt-{number}"
    return GangLaunch("jobs/demo", uid, number, str(run_dir), launches)


async def exits(
    backend: Backend, handles: list[ReplicaHandle], timeout: float = 30.0, every: float = 0.1
) -> dict[str, ReplicaExit]:
    """Polls `backend` every `every` seconds until every replica in `handles` has ended."""
    deadline = time.monotonic() + timeout
    while True:
        ended = {e.replica: e for e in backend.poll(handles)}
        if len(ended) == len(handles):
            return ended
        assert time.monotonic() < deadline, f"still running: {set(h.replica for h in handles) - set(ended)}"
        await asyncio.sleep(every)


def stdout(handle: ReplicaHandle) -> list[str]:
    """The lines a replica printed to its stdout."""
    return [r.text for r in read_records(handle.log_path) if r.stream == "stdout"]


@dataclass
class RayCluster:
    address: str
    root: Path  # everything of the cluster and of the tests' runs is under it


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

    Only sessions the caller started: never 0 (kernel threads, and processes whose session leader is
    outside this PID namespace), init's or the calling process's own.
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


def _start_node(root: Path, node: str, sessions: set[int], *args: str) -> None:
    log = root / f"{node}.out"
    ray_command = str(Path(sys.executable).with_name("ray"))
    command = [ray_command, "start", f"--temp-dir={root / node}", "--disable-usage-stats"]
    command += [f"--num-cpus={CPUS_PER_NODE}", "--object-store-memory=100000000"]
    command += [
        f"--dashboard-agent-listen-port={free_port('')}",
        f"--dashboard-agent-grpc-port={free_port('')}",
    ]
    command += [f"--runtime-env-agent-port={free_port('')}", f"--metrics-export-port={free_port('')}", *args]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
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


@contextlib.contextmanager
def ray_cluster(namespace: str) -> Iterator[RayCluster]:
    """A two-node cluster, this process connected to it in `namespace` (see the module's docstring)."""
    ray: Any = importlib.import_module("ray")

    # A short path: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="pai-ray-", dir="/tmp"))
    port = free_port(ANY)
    address = f"{HEAD_IP}:{port}"
    sessions: set[int] = set()
    try:
        started = time.monotonic()
        head = ["--head", f"--node-ip-address={HEAD_IP}", f"--port={port}"]
        head += [f"--ray-client-server-port={free_port('')}", "--include-dashboard=false"]
        _start_node(root, "head", sessions, *head)
        _start_node(root, "worker", sessions, f"--address={address}", f"--node-ip-address={WORKER_IP}")
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
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
