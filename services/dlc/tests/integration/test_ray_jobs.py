"""The same 2-worker DDP job as in test_jobs, through the API, on a real 2-node Ray cluster."""

from __future__ import annotations

import pathlib

import pytest

from pai.dlc.v1 import job_spec_pb2

from ..ray.test_ray_training import RayCluster, cluster  # noqa: F401  (the module's cluster fixture)
from .conftest import PY, Client, Job

pytestmark = pytest.mark.ray


@pytest.fixture
def dlc_settings(cluster: RayCluster) -> dict[str, str]:  # noqa: F811
    return {"ray_address": cluster.address}


async def test_a_ddp_job_trains_across_the_two_ray_nodes(client: Client) -> None:
    job = await client.submit(
        "ray-mnist",
        [PY, "train.py", "--epochs", "2", "--steps-per-epoch", "5"],
        engine=job_spec_pb2.JobSpec.RAY,
    )
    done = await client.done(job.name, timeout=120)
    assert done.state == Job.SUCCEEDED, done
    assert "rank=0 world_size=2" in await client.text(job.name, "worker-0")
    assert "rank=1 world_size=2" in await client.text(job.name, "worker-1")
    assert sorted(s.node for s in done.replica_statuses) == ["127.0.0.2", "127.0.0.3"]  # one per node
    assert (pathlib.Path(done.spec.output_uri.removeprefix("file://")) / "model.pt").is_file()
