"""Sweeps end to end: a grid fans out into real jobs, at most `parallelism` at a time, best trial named."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pai.dlc.v1 import job_pb2, job_spec_pb2, sweep_pb2, sweep_pb2_grpc

from .conftest import PY, Client, Stack

S = sweep_pb2.Sweep
P = sweep_pb2.ParameterSpec
# a "training" that reports a loss from its hyperparameters: lowest at lr=0.1, bs=32
TRIAL = (
    "import sys, time, json\n"
    "hp = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--'))\n"
    "lr, bs = float(hp['lr']), int(hp['bs'])\n"
    "for step in range(1, 4):\n"
    "    loss = (lr - 0.1) ** 2 + bs / 1000 + 1 / step\n"
    "    print('@pai.metric ' + json.dumps({'step': step, 'loss': loss}), flush=True)\n"
    "    time.sleep(0.3)\n"
)


def grid(parallelism: int = 2, **kw: object) -> sweep_pb2.Sweep:
    template = job_spec_pb2.JobSpec(
        replica_specs=[
            job_spec_pb2.ReplicaSpec(role=job_spec_pb2.ReplicaSpec.WORKER, command=[PY, "-c", TRIAL])
        ]
    )
    return S(
        spec=sweep_pb2.SweepSpec(
            job_template=template,
            objective=sweep_pb2.Objective(metric_key="loss", goal=sweep_pb2.Objective.MINIMIZE),
            parameters=[
                P(name="lr", type=P.DISCRETE, values=["0.05", "0.1"]),
                P(name="bs", type=P.CATEGORICAL, values=["64", "32"]),
            ],
            parallelism=parallelism,
            **kw,  # type: ignore[arg-type]
        )
    )


async def wait_sweep(
    sweeps: sweep_pb2_grpc.SweepServiceStub, name: str, timeout: float = 90
) -> sweep_pb2.Sweep:
    deadline = asyncio.get_running_loop().time() + timeout
    most_running = 0
    while True:
        s = await sweeps.GetSweep(sweep_pb2.GetSweepRequest(name=name))
        most_running = max(most_running, s.trial_counts.running)
        if s.state in (S.SUCCEEDED, S.FAILED, S.STOPPED):
            assert most_running <= max(1, s.spec.parallelism)
            return s
        assert asyncio.get_running_loop().time() < deadline, s
        await asyncio.sleep(0.1)


async def test_a_grid_sweep_of_four_trials_names_the_best(stack: Stack, client: Client) -> None:
    sweeps = sweep_pb2_grpc.SweepServiceStub(client.channel)
    created = await sweeps.CreateSweep(
        sweep_pb2.CreateSweepRequest(parent="workspaces/team", sweep_id="grid", sweep=grid())
    )
    assert created.state == S.RUNNING and created.trial_counts.total == 4
    done = await wait_sweep(sweeps, created.name)
    assert done.state == S.SUCCEEDED, done
    assert done.trial_counts.succeeded == 4
    best = {a.name: a.value for a in done.best_trial.parameter_assignments}
    assert best == {"lr": "0.1", "bs": "32"} and "best is" in done.message
    assert done.best_trial.objective_value == pytest.approx(0.032 + 1 / 3)
    trials = (await sweeps.ListTrials(sweep_pb2.ListTrialsRequest(parent=created.name))).trials
    assert len(trials) == 4 and all(t.state == sweep_pb2.Trial.SUCCEEDED for t in trials)
    # every trial is an ordinary job, with its assignment as hyperparameters
    job = await client.get(trials[0].job)
    assert job.trial == trials[0].name and dict(job.spec.hyperparameters) == {"lr": "0.05", "bs": "64"}
    # at most two ran at once: the third trial's job started after one of the first two ended
    jobs = [await client.get(t.job) for t in trials]
    first_end = min(j.end_time.ToDatetime() for j in jobs[:2])
    assert jobs[2].start_time.ToDatetime() >= first_end


async def test_bad_sweeps_are_refused_and_a_stop_stops_every_trial(client: Client) -> None:
    sweeps = sweep_pb2_grpc.SweepServiceStub(client.channel)
    bad = grid()
    bad.spec.objective.goal = sweep_pb2.Objective.GOAL_UNSPECIFIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sweeps.CreateSweep(
            sweep_pb2.CreateSweepRequest(parent="workspaces/team", sweep_id="bad", sweep=bad)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    slow = grid(parallelism=1)
    slow.spec.job_template.replica_specs[0].command[:] = [PY, "-c", "import time; time.sleep(600)"]
    made = await sweeps.CreateSweep(
        sweep_pb2.CreateSweepRequest(parent="workspaces/team", sweep_id="slow", sweep=slow)
    )
    for _ in range(200):
        trials = (await sweeps.ListTrials(sweep_pb2.ListTrialsRequest(parent=made.name))).trials
        if trials and (await client.get(trials[0].job)).state == job_pb2.Job.RUNNING:
            break
        await asyncio.sleep(0.1)
    await sweeps.StopSweep(sweep_pb2.StopSweepRequest(name=made.name))
    done = await wait_sweep(sweeps, made.name)
    assert done.state == S.STOPPED and done.trial_counts.stopped == 1 and done.trial_counts.total == 4
    assert (await client.get(trials[0].job)).state == job_pb2.Job.STOPPED
    await sweeps.DeleteSweep(sweep_pb2.DeleteSweepRequest(name=made.name))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sweeps.GetSweep(sweep_pb2.GetSweepRequest(name=made.name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_sweeps_pages_by_state_without_repeats(client: Client) -> None:
    sweeps = sweep_pb2_grpc.SweepServiceStub(client.channel)
    slow = grid(parallelism=1)
    slow.spec.job_template.replica_specs[0].command[:] = [PY, "-c", "import time; time.sleep(600)"]
    for sid in ("a", "b", "c"):
        await sweeps.CreateSweep(
            sweep_pb2.CreateSweepRequest(parent="workspaces/team", sweep_id=sid, sweep=slow)
        )
    await sweeps.StopSweep(sweep_pb2.StopSweepRequest(name="workspaces/team/sweeps/b"))
    seen: list[str] = []
    token = ""
    while True:
        page = await sweeps.ListSweeps(
            sweep_pb2.ListSweepsRequest(
                parent="workspaces/team", states=[S.RUNNING], page_size=1, page_token=token
            )
        )
        seen += [s.name.rsplit("/", 1)[1] for s in page.sweeps]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "c"]
    for sid in ("a", "c"):
        await sweeps.StopSweep(sweep_pb2.StopSweepRequest(name=f"workspaces/team/sweeps/{sid}"))
    for sid in ("a", "b", "c"):
        await wait_sweep(sweeps, f"workspaces/team/sweeps/{sid}")


async def test_update_renames_a_running_sweep_and_checks_a_given_etag(client: Client) -> None:
    sweeps = sweep_pb2_grpc.SweepServiceStub(client.channel)
    created = await sweeps.CreateSweep(
        sweep_pb2.CreateSweepRequest(parent="workspaces/team", sweep_id="named", sweep=grid(parallelism=1))
    )
    updated = await sweeps.UpdateSweep(
        sweep_pb2.UpdateSweepRequest(
            sweep=S(name=created.name, display_name="lr search", labels={"team": "a"}),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "labels"]),
        )
    )
    assert (updated.display_name, dict(updated.labels), updated.spec) == (
        "lr search",
        {"team": "a"},
        created.spec,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sweeps.UpdateSweep(sweep_pb2.UpdateSweepRequest(sweep=S(name=created.name, etag='W/"0"')))
    assert err.value.code() == grpc.StatusCode.ABORTED
    await sweeps.StopSweep(sweep_pb2.StopSweepRequest(name=created.name))
    await wait_sweep(sweeps, created.name)
