"""The Ray backend against a real two-node Ray cluster on this machine (nodes 127.0.0.2 and 127.0.0.3).

The module's fixture starts the cluster (`pai_runtime.testing.ray_cluster`) and at the end kills
exactly the processes of its two sessions. Skipped when Ray is not installed
(`pip install -e 'libs/pai-runtime[ray]'`). dlc's own Ray tests (its rendezvous, DDP across the two
nodes) are in services/dlc/tests/ray.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

ray = pytest.importorskip(
    "ray", reason="the Ray backend's tests need ray (pip install -e 'libs/pai-runtime[ray]')"
)

from pai_runtime.probe import free_port  # noqa: E402
from pai_runtime.ray import RayBackend, group_name  # noqa: E402
from pai_runtime.testing import (  # noqa: E402
    ANY,
    CPUS_PER_NODE,
    HEAD_IP,
    WORKER_IP,
    RayCluster,
    exits,
    gang_of,
    mentioning,
    processes,
    ray_cluster,
    stdout,
)
from pai_runtime.types import (  # noqa: E402
    BackendError,
    Readiness,
    ReplicaHandle,
    ReplicaLaunch,
)

pytestmark = pytest.mark.ray

PY = sys.executable
NAMESPACE = "pai-runtime-tests"


def script(code: str) -> tuple[str, ...]:
    return (PY, "-u", "-c", textwrap.dedent(code))


SLEEPER = script("import os, time; print('pid', os.getpid()); time.sleep(300)")
STUBBORN = script(
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('pid', os.getpid()); time.sleep(300)"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster(NAMESPACE) as c:
        yield c


def backend_of(cluster: RayCluster, **options: Any) -> RayBackend:
    return RayBackend(cluster.address, namespace=NAMESPACE, **options)


# Helpers.


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


def announce(replicas: Sequence[ReplicaLaunch], places: Sequence[tuple[str, int]]) -> list[ReplicaLaunch]:
    """An owner's rendezvous: every replica learns rank 0's node and port, and its own node."""
    master = places[min(range(len(replicas)), key=lambda i: replicas[i].rank)]
    return [
        ReplicaLaunch(
            r.replica, r.rank, r.command, {**r.env, "LEADER": f"{master[0]}:{master[1]}", "NODE": ip}
        )
        for r, (ip, _) in zip(replicas, places, strict=True)
    ]


async def test_a_gang_spreads_over_both_nodes_and_meets_through_the_owners_rendezvous(
    cluster: RayCluster,
) -> None:
    backend = backend_of(cluster, rendezvous=announce)
    printer = script("import os; print(os.environ['LEADER'], os.environ['NODE'])")
    launch = gang_of(cluster.root, [printer, printer])
    handles = await backend.launch(launch)
    try:
        assert {h.node for h in handles} == {HEAD_IP, WORKER_IP}
        for handle in handles:  # the actor's name, then the supervisor's pid and start time
            ref = f"pai-{launch.uid}-0-{handle.replica} pid {handle.pid} start "
            assert re.fullmatch(re.escape(ref) + r"\d+", handle.engine_ref), handle.engine_ref
        ended = await exits(backend, handles)
        assert all(e.exit_code == 0 and e.succeeded for e in ended.values()), ended
        for handle in handles:
            (line,) = stdout(handle)
            leader, node = line.split()
            assert leader.startswith(f"{handles[0].node}:") and node == handle.node
    finally:
        await backend.kill(handles, grace=0)
    assert await gone(launch.uid)


async def test_a_server_is_probed_at_its_node(cluster: RayCluster) -> None:
    serve = script(
        """
        import os, socket, sys, time
        port = int(os.environ["PORT"])
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen()
        print("pid", os.getpid(), flush=True)
        time.sleep(300)
        """
    )
    port = free_port(ANY)  # on every interface: the server runs on a Ray node's address
    launch = gang_of(cluster.root, [serve, SLEEPER], lambda rank: {"PORT": str(port)})
    server = dataclasses.replace(launch.replicas[0], readiness=Readiness(port))
    launch = dataclasses.replace(launch, replicas=(server, launch.replicas[1]))
    backend = backend_of(cluster)
    handles = await backend.launch(launch)
    try:
        deadline = time.monotonic() + 30
        while await backend.ready(handles) != {"master-0"}:  # the sleeper has no readiness
            assert time.monotonic() < deadline, "the server never became ready"
            await asyncio.sleep(0.1)
        with pytest.raises(BackendError, match="not supported by this backend yet"):
            await backend.replace(launch, handles[0], grace=1)
    finally:
        await backend.kill(handles, grace=0)
    assert await backend.ready(handles) == set()
    assert await gone(launch.uid)


async def test_kill_leaves_no_process_and_no_actor(cluster: RayCluster) -> None:
    backend = backend_of(cluster)
    launch = gang_of(cluster.root, [SLEEPER, STUBBORN])
    handles = await backend.launch(launch)
    pids = [await printed_pid(h) for h in handles]
    assert backend.poll(handles) == []
    started = time.monotonic()
    await backend.kill(handles, grace=1)
    assert time.monotonic() - started < 15
    for handle, pid in zip(handles, pids, strict=True):
        assert not alive(pid) and not alive(handle.pid), handle.replica
    assert await gone(launch.uid)
    ended = await exits(backend, handles, timeout=5)
    assert ended["master-0"].signal == signal.SIGTERM and not ended["master-0"].lost
    assert ended["worker-1"].lost  # SIGKILL took its supervisor too
    await backend.kill(handles, grace=0)  # again: nothing left to do


async def test_a_new_backend_watches_and_kills_the_replicas_of_another(cluster: RayCluster) -> None:
    go = cluster.root / f"go-{uuid.uuid4().hex[:8]}"
    waiter = script(
        f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\nsys.exit(5)"
    )
    launch = gang_of(cluster.root, [waiter, SLEEPER])
    handles = await backend_of(cluster).launch(launch)
    pid = await printed_pid(handles[1])
    ray.shutdown()  # the owner restarts: its connection to Ray goes, the detached actors stay
    other = backend_of(cluster, check_interval=0.1)
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
    backend = backend_of(cluster, check_interval=0.1)
    launch = gang_of(cluster.root, [SLEEPER])
    (handle,) = await backend.launch(launch)
    pid = await printed_pid(handle)
    ray.kill(ray.get_actor(handle.engine_ref.split()[0], namespace=NAMESPACE))
    (ended,) = (await exits(backend, [handle], timeout=30)).values()
    assert ended.lost
    await backend.kill([handle], grace=1)  # by a task on the replica's node
    assert not alive(pid) and not alive(handle.pid)
    assert await gone(launch.uid)


async def test_a_launch_removes_what_an_earlier_attempt_of_the_job_left(cluster: RayCluster) -> None:
    """Its owner crashed while it launched attempt 0, and never got its handles: attempt 1 clears it away."""
    first = gang_of(cluster.root, [SLEEPER])
    (orphan,) = await backend_of(cluster).launch(first)
    pid = await printed_pid(orphan)
    backend = backend_of(cluster)
    handles = await backend.launch(gang_of(cluster.root, [SLEEPER], uid=first.uid, number=1))
    try:
        assert not alive(pid) and not alive(orphan.pid)
        assert actors_of(first.uid) == [f"pai-{first.uid}-1-master-0"]
        assert groups_of(first.uid) == [group_name(first.uid, 1)]
        assert backend.poll(handles) == []
    finally:
        await backend.kill(handles, grace=0)
    assert await gone(first.uid)


async def test_a_gang_the_cluster_cannot_hold_is_refused(cluster: RayCluster) -> None:
    backend = backend_of(cluster, cpus_per_replica=CPUS_PER_NODE, placement_timeout=2)
    launch = gang_of(cluster.root, [SLEEPER, SLEEPER, SLEEPER])
    with pytest.raises(BackendError, match="the Ray cluster cannot place the gang: 3 bundles of 2 CPU"):
        await backend.launch(launch)
    assert await gone(launch.uid)


async def test_a_replica_that_cannot_start_fails_the_launch_and_stops_the_rest(cluster: RayCluster) -> None:
    backend = backend_of(cluster)
    launch = gang_of(cluster.root, [SLEEPER, ("/nonexistent/command",)])
    with pytest.raises(BackendError, match="worker-1 did not start: cannot run /nonexistent/command"):
        await backend.launch(launch)
    assert await gone(launch.uid)
    assert not mentioning(launch.run_dir)
