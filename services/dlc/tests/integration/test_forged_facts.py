"""An attack on dlc through the scheduler's events: a workload's `owner` and `owner_kind` are the words
of whoever created it, so anyone who may create a workload can name another's job as its owner. The
scheduler's events about that workload (admitted, evicted, finished, deleted) reach dlc's consumer;
they must never move, stop or fail the job they name."""

from __future__ import annotations

import asyncio

from pai.dlc.v1 import job_pb2
from pai.scheduler.v1 import workload_pb2

from .conftest import PY, Client, GiB, Stack

W = workload_pb2.Workload


async def test_a_workload_that_only_claims_a_job_cannot_touch_it(stack: Stack, client: Client) -> None:
    job = await client.submit(
        "victim", [PY, "-c", "import time; time.sleep(4); print('done')"], code=None, workers=1
    )
    running = await client.wait(job.name, lambda j: j.state == job_pb2.Job.RUNNING, what="RUNNING")
    forged = W(
        owner=job.name,
        owner_kind=W.DLC_JOB,
        pod_sets=[workload_pb2.PodSet(name="x", count=1, cpu_milli=100, memory_bytes=GiB)],
    )
    made = await stack.workloads.CreateWorkload(
        workload_pb2.CreateWorkloadRequest(parent="workspaces/team", workload_id="forged", workload=forged)
    )
    await stack.workloads.FinishWorkload(workload_pb2.FinishWorkloadRequest(name=made.name, outcome=W.FAILED))
    await stack.workloads.DeleteWorkload(workload_pb2.DeleteWorkloadRequest(name=made.name))
    await asyncio.sleep(1.0)  # the events reach dlc and its next steps
    done = await client.done(job.name)
    assert done.state == job_pb2.Job.SUCCEEDED, done  # neither WORKLOAD_LOST nor anything else
    assert done.workload == running.workload != made.name
    assert done.restart_count == 0 and done.preemption_count == 0
