"""dlc on Ray: its rendezvous rewrite, and DDP across a real two-node Ray cluster on this machine.

The generic Ray backend (placement, kill, re-attach, orphans, readiness) is tested in
libs/pai-runtime/tests/ray; here is what is dlc's: the rendezvous function dlc hands to
`RayBackend(..., rendezvous=...)`, and a real torch DDP job whose two replicas meet through it.
The cluster (`pai_runtime.testing.ray_cluster`) is the module's fixture, also used by
tests/integration/test_ray_jobs.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need ray (pip install -e 'libs/pai-runtime[ray]')")

from pai.dlc.v1 import job_spec_pb2  # noqa: E402
from pai_dlc.domain.env import Attempt, Cluster, replica_env  # noqa: E402
from pai_dlc.domain.spec import Engine, file_uri, normalize, replicas  # noqa: E402
from pai_dlc.engine.rendezvous import rendezvous  # noqa: E402
from pai_dlc.mapping.specs import spec_from  # noqa: E402
from pai_runtime.probe import free_port  # noqa: E402
from pai_runtime.ray import RayBackend  # noqa: E402
from pai_runtime.testing import HEAD_IP, WORKER_IP, RayCluster, exits, gang_of, ray_cluster, stdout  # noqa: E402
from pai_runtime.types import GangLaunch, ReplicaLaunch  # noqa: E402

pytestmark = pytest.mark.ray

PY = sys.executable
NAMESPACE = "pai-dlc"  # as bootstrap configures the backend
REPO = Path(__file__).resolve().parents[4]
MNIST = REPO / "examples" / "train_mnist_ddp" / "train.py"
ENV_PRINTER = (
    PY,
    "-u",
    "-c",
    "import os\n"
    "for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'PET_MASTER_ADDR', 'PET_MASTER_PORT'):\n"
    "    print(f\"{var}={os.environ.get(var, '')}\")",
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster(NAMESPACE) as c:
        yield c


def backend_of(cluster: RayCluster) -> RayBackend:
    return RayBackend(cluster.address, namespace=NAMESPACE, rendezvous=rendezvous)


async def gone(uid: str, timeout: float = 10.0) -> bool:
    """Whether the job's actors and placement groups are gone."""
    deadline = time.monotonic() + timeout
    while True:
        actors = [
            a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(f"pai-{uid}-")
        ]
        groups = [
            g for g in ray.util.placement_group_table().values()
            if g["state"] != "REMOVED" and g["name"].startswith(f"pai-{uid}-")
        ]  # fmt: skip
        if not actors and not groups:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


def rendezvous_env(rank: int) -> dict[str, str]:
    """What dlc sets: an address on its own machine, which the rendezvous must replace."""
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
    backend = backend_of(cluster)
    launch = gang_of(cluster.root, [ENV_PRINTER, ENV_PRINTER], rendezvous_env)
    handles = await backend.launch(launch)
    try:
        assert {h.node for h in handles} == {HEAD_IP, WORKER_IP}
        for handle in handles:  # the actor's name, then the supervisor's pid and start time
            ref = f"pai-{launch.uid}-0-{handle.replica} pid {handle.pid} start "
            assert re.fullmatch(re.escape(ref) + r"\d+", handle.engine_ref), handle.engine_ref
        ended = await exits(backend, handles)
        assert all(e.exit_code == 0 and e.succeeded for e in ended.values()), ended
        for handle in handles:
            env = dict(line.split("=", 1) for line in stdout(handle))
            assert env["RANK"] == str(handle.rank) and env["WORLD_SIZE"] == "2"
            assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == handles[0].node
            assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] != "1"
    finally:
        await backend.kill(handles, grace=0)
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
    domain_spec = normalize(spec_from(spec), default_engine=Engine.RAY, storage_root=tmp_path, uid=uid)
    everyone = replicas(domain_spec)
    placeholder = Cluster("127.0.0.1", free_port(), {})  # as the controller does; the rendezvous rewrites it
    launch = GangLaunch(
        "jobs/ddp",
        uid,
        0,
        str(cluster.root / "runs" / uid / "attempt-0"),
        tuple(
            ReplicaLaunch(
                r.name,
                r.rank,
                (*r.spec.command, *r.spec.args),
                replica_env(Attempt("jobs/ddp", uid, 0, 0), domain_spec, r, everyone, placeholder),
                cwd=str(MNIST.parent),
            )
            for r in everyone
        ),
    )
    backend = backend_of(cluster)
    handles = await backend.launch(launch)
    try:
        assert {h.node for h in handles} == {HEAD_IP, WORKER_IP}
        ended = await exits(backend, handles, timeout=90)
        logs = {h.replica: "\n".join(stdout(h)) for h in handles}
        assert all(e.succeeded for e in ended.values()), (ended, logs)
    finally:
        await backend.kill(handles, grace=0)
    assert (tmp_path / "output" / "model.pt").is_file()
    assert "rank=1 world_size=2" in logs["worker-1"]
    assert "saved model to" in logs["worker-0"] and "step=10 " in logs["worker-0"]
    assert await gone(uid)


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
