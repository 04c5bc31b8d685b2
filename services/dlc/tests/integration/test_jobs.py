"""Training jobs end to end: API → scheduler admission → real torch DDP processes → outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import pathlib
import signal

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pai.dlc.v1 import job_pb2, job_spec_pb2, log_pb2, metric_pb2
from pai.scheduler.v1 import workload_pb2
from pai_dlc.domain.job import Job as Job_

from .conftest import PY, Client, Job, Stack

FAST = ["--epochs", "2", "--steps-per-epoch", "5"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return pathlib.Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def children_of(pid: int) -> list[int]:
    return [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _state(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


async def test_two_worker_ddp_job_trains_and_succeeds(stack: Stack, client: Client) -> None:
    job = await client.submit("mnist", [PY, "train.py", *FAST])
    assert job.state == Job.CREATING and job.workload.endswith(f"/workloads/job-{job.uid}")
    assert [s.replica for s in job.replica_statuses] == ["worker-0", "worker-1"]
    done = await client.done(job.name)
    assert done.state == Job.SUCCEEDED, done
    # both ranks ran in one world of 2
    assert "rank=0 world_size=2" in await client.text(job.name, "worker-0")
    assert "rank=1 world_size=2" in await client.text(job.name, "worker-1")
    # lines are numbered from 0 per replica attempt; a role selects its replicas; offset skips lines
    page = (
        await client.jobs.ReadJobLogs(
            log_pb2.ReadJobLogsRequest(name=job.name, replicas=["worker"], offset=1)
        )
    ).entries
    for replica in ("worker-0", "worker-1"):
        numbers = [e.offset for e in page if e.replica == replica]
        assert numbers and numbers == list(range(1, len(numbers) + 1))
    last = numbers[-1]  # worker-1's: resuming at offset last - 1 gives exactly its last two lines
    tail = await client.jobs.ReadJobLogs(
        log_pb2.ReadJobLogsRequest(name=job.name, replicas=["worker-1"], offset=last - 1)
    )
    assert [(e.replica, e.offset) for e in tail.entries] == [("worker-1", last - 1), ("worker-1", last)]
    output = pathlib.Path(done.spec.output_uri.removeprefix("file://"))
    assert (output / "model.pt").is_file()
    assert [s.state for s in done.replica_statuses] == [job_pb2.ReplicaStatus.SUCCEEDED] * 2
    assert all(s.exit_code == 0 and s.pid for s in done.replica_statuses)
    assert not any(alive(s.pid) for s in done.replica_statuses)
    # the scheduler heard how it ended and freed the capacity
    w = await stack.workloads.GetWorkload(workload_pb2.GetWorkloadRequest(name=done.workload))
    assert w.state == workload_pb2.Workload.FINISHED and w.outcome == workload_pb2.Workload.SUCCEEDED
    # history, in order, with reasons
    events = (await client.jobs.ListJobEvents(job_pb2.ListJobEventsRequest(parent=job.name))).job_events
    states = [e.state for e in events]
    assert states == [Job.CREATING, Job.QUEUED, Job.STARTING, Job.RUNNING, Job.SUCCEEDED]
    assert all(e.reason for e in events)
    # the metrics the script reported, as series
    series = (await client.jobs.QueryJobMetrics(metric_pb2.QueryJobMetricsRequest(name=job.name))).series
    loss = next(s for s in series if s.key == "loss")
    assert loss.count == 10 and loss.last.step == 10 and loss.points[-1].value < loss.points[0].value


async def test_a_killed_replica_restarts_the_gang_from_the_checkpoint(client: Client) -> None:
    job = await client.submit(
        "resume", [PY, "train.py", "--epochs", "3", "--steps-per-epoch", "5", "--sleep-per-step", "0.3"],
        max_restarts=2,
    )  # fmt: skip
    # once the first epoch's checkpoint is written, kill -9 the training process of rank 1
    running = await client.wait(job.name, lambda j: j.state == Job.RUNNING, what="RUNNING")
    for _ in range(300):
        if "step=7 " in await client.text(job.name, "worker-0"):
            break
        await asyncio.sleep(0.1)
    supervisor = running.replica_statuses[1].pid
    os.kill(children_of(supervisor)[0], signal.SIGKILL)
    done = await client.done(job.name)
    assert done.state == Job.SUCCEEDED, done
    assert done.restart_count == 1
    log0 = await client.text(job.name, "worker-0")
    assert "resumed from checkpoint" in log0 and "restart=1" in log0
    assert "global_step=15" in log0


async def test_without_restarts_the_failing_rank_is_named(client: Client) -> None:
    job = await client.submit("fails", [PY, "train.py", *FAST, "--fail-at-step", "3"])
    done = await client.done(job.name)
    assert done.state == Job.FAILED and done.reason == "REPLICA_FAILED", done
    assert done.failure.replica == "worker-1" and done.failure.rank == 1 and done.failure.exit_code == 1
    assert "worker-1 (rank 1)" in done.message
    assert not any(alive(s.pid) for s in done.replica_statuses)


async def test_a_silent_job_is_restarted_as_hung_and_a_late_one_fails(client: Client) -> None:
    hang = await client.submit(
        "hang", [PY, "-c", "import time; print('started', flush=True); time.sleep(600)"], workers=1, code=None,
        log_silence_timeout={"seconds": 2}, max_restarts=1,
    )  # fmt: skip
    done = await client.done(hang.name, timeout=60)
    assert done.state == Job.FAILED and done.reason == "HANG_DETECTED", done
    assert done.restart_count == 1
    reasons = [
        e.reason
        for e in (await client.jobs.ListJobEvents(job_pb2.ListJobEventsRequest(parent=hang.name))).job_events
    ]
    assert reasons.count("HANG_DETECTED") == 2  # the restart, then the failure
    late = await client.submit(
        "late", [PY, "-c", "import time\nwhile True: print('tick', flush=True); time.sleep(0.2)"], workers=1,
        code=None, active_deadline={"seconds": 2},
    )  # fmt: skip
    done = await client.done(late.name, timeout=60)
    assert done.state == Job.FAILED and done.reason == "DEADLINE_EXCEEDED", done
    assert not any(alive(s.pid) for s in done.replica_statuses)


async def test_stop_kills_every_replica(stack: Stack, client: Client) -> None:
    job = await client.submit("stopme", [PY, "-c", "import time; time.sleep(600)"], code=None)
    running = await client.wait(job.name, lambda j: j.state == Job.RUNNING, what="RUNNING")
    stopped = await client.jobs.StopJob(job_pb2.StopJobRequest(name=job.name))
    assert stopped.state in (Job.STOPPING, Job.STOPPED)
    done = await client.done(job.name)
    assert done.state == Job.STOPPED
    assert not any(alive(s.pid) for s in running.replica_statuses)
    attempts = stack.home.parent / "storage" / "jobs" / done.uid
    assert (attempts / "attempt-0" / "worker-0.log").is_file()
    await client.jobs.DeleteJob(job_pb2.DeleteJobRequest(name=job.name))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get(job.name)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not list(attempts.glob("attempt-*"))  # its logs went with it; checkpoints and outputs stay
    assert (attempts / "checkpoints").is_dir()


async def test_delete_with_force_stops_a_running_job_first(stack: Stack, client: Client) -> None:
    job = await client.submit("forced", [PY, "-c", "import time; time.sleep(600)"], code=None)
    running = await client.wait(job.name, lambda j: j.state == Job.RUNNING, what="RUNNING")
    await client.jobs.DeleteJob(job_pb2.DeleteJobRequest(name=job.name, force=True))
    assert not any(alive(s.pid) for s in running.replica_statuses)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get(job.name)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    w = await stack.workloads.GetWorkload(workload_pb2.GetWorkloadRequest(name=running.workload))
    assert w.state == workload_pb2.Workload.FINISHED and w.outcome == workload_pb2.Workload.CANCELLED


async def test_bad_specs_are_refused_with_the_field_named(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit("nocmd", [], code=None)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "command is required" in (err.value.details() or "")
    spec = job_spec_pb2.JobSpec(
        replica_specs=[job_spec_pb2.ReplicaSpec(role=job_spec_pb2.ReplicaSpec.PS, command=["x"])]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.CreateJob(
            job_pb2.CreateJobRequest(parent="workspaces/team", job_id="ps", job=Job(spec=spec))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    running = await client.submit("busy", [PY, "-c", "import time; time.sleep(600)"], code=None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.DeleteJob(job_pb2.DeleteJobRequest(name=running.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit("busy", [PY, "-c", "pass"], code=None)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await client.jobs.StopJob(job_pb2.StopJobRequest(name=running.name))
    await client.done(running.name)


SLOW = [PY, "train.py", "--epochs", "3", "--steps-per-epoch", "5", "--sleep-per-step", "0.3"]


@pytest.mark.parametrize("cluster_cpu", [2000])  # room for one 2-worker job at a time
async def test_a_preempted_spot_job_resumes_from_its_checkpoint(stack: Stack, client: Client) -> None:
    spot = await client.submit("spot", SLOW, spot=True)
    await client.wait(spot.name, lambda j: j.state == Job.RUNNING, what="RUNNING")
    for _ in range(300):  # past the first epoch's checkpoint
        if "saved checkpoint ckpt-1.pt" in await client.text(spot.name, "worker-0"):
            break
        await asyncio.sleep(0.1)
    urgent = await client.submit("urgent", [PY, "train.py", *FAST], priority=10)
    await client.wait(spot.name, lambda j: j.preemption_count >= 1, what="preempted")
    assert (await client.done(urgent.name)).state == Job.SUCCEEDED
    done = await client.done(spot.name)
    assert done.state == Job.SUCCEEDED, done
    assert done.preemption_count == 1 and done.restart_count == 0
    events = (await client.jobs.ListJobEvents(job_pb2.ListJobEventsRequest(parent=spot.name))).job_events
    states = [e.state for e in events]
    assert Job.PREEMPTED in states and states[-1] == Job.SUCCEEDED
    assert states.index(Job.PREEMPTED) < len(states) - 1
    resumed = await client.logs(spot.name, "worker-0")  # the latest attempt, 1
    text = "\n".join(e.text for e in resumed)
    assert "resumed from checkpoint" in text and "global_step=15" in text
    first = "\n".join(e.text for e in await client.logs(spot.name, "worker-0", attempt=0))
    assert "received SIGTERM, exiting" in first  # stopped gracefully, not killed


async def test_dlc_restarted_mid_job_reattaches_and_runs_nothing_twice(stack: Stack, client: Client) -> None:
    job = await client.submit("steady", SLOW)
    running = await client.wait(job.name, lambda j: j.state == Job.RUNNING, what="RUNNING")
    pids = [s.pid for s in running.replica_statuses]
    await stack.stop()
    assert all(alive(p) for p in pids)  # replicas outlive dlc
    await asyncio.sleep(1.0)
    await stack.start()
    assert stack.client is not None
    done = await stack.client.done(job.name)
    assert done.state == Job.SUCCEEDED, done
    assert done.restart_count == 0 and [s.pid for s in done.replica_statuses] == pids
    entries = await stack.client.logs(job.name)
    assert {e.attempt for e in entries} == {0}
    text = "\n".join(e.text for e in entries if e.replica == "worker-0")
    assert text.count("rank=0 world_size=2") == 1 and "global_step=15" in text
    events = (await stack.client.jobs.ListJobEvents(job_pb2.ListJobEventsRequest(parent=job.name))).job_events
    assert [e.state for e in events].count(Job.RUNNING) == 1


@pytest.mark.parametrize(
    "dlc_settings", [{"kubernetes_namespace": "training", "kubernetes_image": "pytorch/pytorch:2.6"}]
)
async def test_a_kubernetes_job_without_a_cluster_fails_with_the_reason(client: Client) -> None:
    # The engine is configured but no API server exists here: the job is admitted, the launch is
    # refused, and the job says why (no cluster is faked; see engine/kubernetes.py).
    job = await client.submit(
        "k8s", ["python", "train.py"], code=None, engine=job_spec_pb2.JobSpec.KUBERNETES
    )
    done = await client.done(job.name)
    assert done.state == Job.FAILED and done.reason == "LAUNCH_FAILED", done
    assert "could not start the replicas" in done.message
    # what a PyTorchJob cannot express is refused at launch, saying so (not as a directory problem)
    tf = await client.submit(
        "k8s-tf", ["python", "train.py"], code=None, engine=job_spec_pb2.JobSpec.KUBERNETES,
        kind=job_spec_pb2.JobSpec.TENSORFLOW,
    )  # fmt: skip
    refused = await client.done(tf.name)
    assert refused.reason == "LAUNCH_FAILED" and "could not start the replicas" in refused.message, refused
    assert "TENSORFLOW" in refused.message
    with pytest.raises(grpc.aio.AioRpcError) as err:  # RAY is not configured on this server
        await client.submit("ray", ["python", "train.py"], code=None, engine=job_spec_pb2.JobSpec.RAY)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "RAY" in (err.value.details() or "")


async def test_replicas_started_but_never_recorded_are_stopped_before_the_attempt_runs_again(
    stack: Stack, client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    # dlc "dies" right after starting an attempt's processes and before storing their handles: the
    # processes run on, unwatched. The next step must find and stop them before starting the attempt
    # again, so the job never runs twice.
    assert stack.app is not None
    steps = stack.app.reconciler.steps
    real_record, real_runner = steps.record_launch, steps.gangs.runner
    started: list[int] = []

    async def crash(job: Job_) -> None:
        started.extend(h.pid for h in job.runtime.handles)
        monkeypatch.setattr(steps, "record_launch", real_record)
        raise RuntimeError("dlc died here")

    class NoKill:  # the crash leaves no chance to clean up
        def __init__(self, backend: object) -> None:
            self.backend = backend

        def __getattr__(self, name: str) -> object:
            return getattr(self.backend, name)

        async def kill(self, handles: object, grace: float) -> None:
            monkeypatch.setattr(steps.gangs, "runner", real_runner)

    monkeypatch.setattr(steps, "record_launch", crash)
    monkeypatch.setattr(
        steps.gangs,
        "runner",
        lambda job: dataclasses.replace(real_runner(job), backend=NoKill(real_runner(job).backend)),
    )
    job = await client.submit(
        "twice", [PY, "-c", "import time; print('up', flush=True); time.sleep(3)"], code=None
    )
    done = await client.done(job.name)
    assert done.state == Job.SUCCEEDED, done
    assert started and not any(alive(p) for p in started)
    assert all(p not in started for p in (s.pid for s in done.replica_statuses))
    assert (await client.get(job.name)).end_time.ToDatetime() - done.create_time.ToDatetime() < dt.timedelta(
        seconds=30
    )  # the minute-long first gang was stopped, not waited for


async def test_update_changes_only_the_masked_descriptive_fields(client: Client) -> None:
    job = await client.submit("named", [PY, "-c", "pass"], code=None, workers=1)
    updated = await client.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(
            job=Job(name=job.name, display_name="MNIST run", description="not this", labels={"team": "a"}),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "labels"]),
        )
    )
    assert (updated.display_name, updated.description, dict(updated.labels)) == (
        "MNIST run",
        "",
        {"team": "a"},
    )
    assert updated.etag != job.etag and updated.spec == job.spec
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.UpdateJob(job_pb2.UpdateJobRequest(job=Job(name=job.name, etag=job.etag)))
    assert err.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.UpdateJob(
            job_pb2.UpdateJobRequest(
                job=Job(name=job.name), update_mask=field_mask_pb2.FieldMask(paths=["spec"])
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await client.done(job.name)
