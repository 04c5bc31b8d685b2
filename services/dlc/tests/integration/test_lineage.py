"""dlc with lineage: a job reads a registered dataset version, and its output becomes a model version.

Real lineage, dlc, scheduler and auth in-process, on real NATS and SQLite or PostgreSQL; the replicas
are real processes that read the dataset from `$PAI_DATA_DIR` and write into `$PAI_OUTPUT_DIR`.
"""

from __future__ import annotations

import asyncio
import pathlib

import grpc
import pytest

from pai.dlc.v1 import job_pb2, job_spec_pb2, sweep_pb2, sweep_pb2_grpc
from pai.lineage.v1 import (
    dataset_pb2,
    dataset_pb2_grpc,
    lineage_pb2,
    lineage_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
)
from pai_common.grpc_client import channel
from pai_common.testing import error_info
from pai_dlc.app.events import OutputModels
from pai_dlc.mapping import outputs

from .conftest import PY, Client, Stack

Job = job_pb2.Job
DS = job_spec_pb2.DataSource
DATASET = "workspaces/team/datasets/digits"
MODEL = "workspaces/team/models/digits-net"

# Each rank reads the dataset, reports a loss and writes its part of the "model".
TRAIN = (
    "import json, os, pathlib\n"
    "rank = os.environ['RANK']\n"
    "rows = (pathlib.Path(os.environ['PAI_DATA_DIR']) / 'rows.txt').read_text().split()\n"
    "print(f'rank {rank} read {len(rows)} rows', flush=True)\n"
    "print('@pai.metric ' + json.dumps({'step': 1, 'loss': 2.0 + int(rank)}), flush=True)\n"
    "print('@pai.metric ' + json.dumps({'step': 2, 'loss': 0.25 + int(rank)}), flush=True)\n"
    "out = pathlib.Path(os.environ['PAI_OUTPUT_DIR'])\n"
    "out.mkdir(parents=True, exist_ok=True)\n"
    "(out / f'part-{rank}.txt').write_text('weights')\n"
)


@pytest.fixture
def with_lineage() -> bool:
    return True


def reason_of(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of one of dlc's errors (domain `dlc.pai.dev`, as its errors.proto says)."""
    info = error_info(err)
    assert info.domain == "dlc.pai.dev", info
    return info.reason


async def _dataset(
    stack: Stack, tmp_path: pathlib.Path, rows: int
) -> tuple[dataset_pb2_grpc.DatasetServiceStub, str]:
    data = tmp_path / f"digits-{rows}"
    data.mkdir()
    (data / "rows.txt").write_text(" ".join(str(i) for i in range(rows)))
    datasets = dataset_pb2_grpc.DatasetServiceStub(channel(stack.lineage_address, stack.key))
    try:
        await datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=DATASET))
    except grpc.aio.AioRpcError:
        await datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(
                parent="workspaces/team", dataset_id="digits", dataset=dataset_pb2.Dataset()
            )
        )
    v = await datasets.CreateDatasetVersion(
        dataset_pb2.CreateDatasetVersionRequest(
            parent=DATASET, dataset_version=dataset_pb2.DatasetVersion(uri=data.as_uri())
        )
    )
    return datasets, v.name


async def test_a_job_reads_the_latest_dataset_version_and_registers_its_output_model(
    stack: Stack, client: Client, tmp_path: pathlib.Path
) -> None:
    _, v1 = await _dataset(stack, tmp_path, 3)
    _, v2 = await _dataset(stack, tmp_path, 5)
    job = await client.submit(
        "train",
        [PY, "-c", TRAIN],
        code=None,
        data_sources=[DS(dataset_version=f"{DATASET}/versions/@latest")],
        output_model=MODEL,
        hyperparameters={"lr": "0.1"},
    )
    # `@latest` is resolved at create and the job records exactly which version it reads
    assert (v1, v2) == (f"{DATASET}/versions/1", f"{DATASET}/versions/2")
    assert job.spec.data_sources[0].dataset_version == v2
    assert job.spec.data_sources[0].resolved_uri == (tmp_path / "digits-5").as_uri()

    done = await client.done(job.name)
    assert done.state == Job.SUCCEEDED, done
    for rank in (0, 1):
        assert f"rank {rank} read 5 rows" in await client.text(job.name, f"worker-{rank}")

    # lineage registers the output directory as version 1 of a new model; dlc notes it on the job
    registered = await client.wait(job.name, lambda j: bool(j.output_model_version), 30, "its model version")
    assert registered.output_model_version == f"{MODEL}/versions/1"
    lineage_channel = channel(stack.lineage_address, stack.key)
    models = model_pb2_grpc.ModelRegistryServiceStub(lineage_channel)
    version = await models.GetModelVersion(model_pb2.GetModelVersionRequest(name=f"{MODEL}/versions/@latest"))
    assert version.name == registered.output_model_version
    assert version.artifact_uri == job.spec.output_uri
    assert version.source_job == job.name
    assert list(version.training_datasets) == [v2]
    assert version.params["lr"] == "0.1"
    assert version.metrics["loss"] == 0.25  # the last value of rank 0
    assert version.size_bytes == len("weights") * 2
    events = await client.jobs.ListJobEvents(job_pb2.ListJobEventsRequest(parent=job.name))
    assert "MODEL_REGISTERED" in [e.reason for e in events.job_events]

    # the graph: dataset version → job → model version
    graph = await lineage_pb2_grpc.LineageServiceStub(lineage_channel).QueryLineage(
        lineage_pb2.QueryLineageRequest(
            parent="workspaces/team", entity=version.name, direction=lineage_pb2.UPSTREAM, max_depth=3
        )
    )
    assert {n.name for n in graph.nodes} >= {version.name, job.name, v2}
    await lineage_channel.close()


async def test_each_run_registers_the_next_version_of_the_model(
    stack: Stack, client: Client, tmp_path: pathlib.Path
) -> None:
    await _dataset(stack, tmp_path, 2)
    names = []
    for run in ("run-a", "run-b"):
        job = await client.submit(
            run, [PY, "-c", TRAIN], code=None, workers=1,
            data_sources=[DS(dataset_version=f"{DATASET}/versions/1")], output_model=MODEL,
        )  # fmt: skip
        assert (await client.done(job.name)).state == Job.SUCCEEDED
        names.append(
            (await client.wait(job.name, lambda j: bool(j.output_model_version), 30)).output_model_version
        )
    assert names == [f"{MODEL}/versions/1", f"{MODEL}/versions/2"]
    models = model_pb2_grpc.ModelRegistryServiceStub(channel(stack.lineage_address, stack.key))
    listed = await models.ListModelVersions(model_pb2.ListModelVersionsRequest(parent=MODEL))
    assert [v.name for v in listed.model_versions] == [f"{MODEL}/versions/2", f"{MODEL}/versions/1"]


async def test_a_dataset_version_the_job_may_not_read_is_refused_and_nothing_is_stored(
    stack: Stack, client: Client, tmp_path: pathlib.Path
) -> None:
    datasets, v1 = await _dataset(stack, tmp_path, 1)
    cases = [
        (f"{DATASET}/versions/9", grpc.StatusCode.INVALID_ARGUMENT, "DATASET_VERSION_NOT_FOUND"),
        ("workspaces/team/datasets/nothing/versions/@latest", grpc.StatusCode.INVALID_ARGUMENT, "DATASET_VERSION_NOT_FOUND"),
        ("workspaces/other/datasets/digits/versions/1", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_JOB_SPEC"),
    ]  # fmt: skip
    await datasets.ArchiveDatasetVersion(dataset_pb2.ArchiveDatasetVersionRequest(name=v1))
    cases.append((v1, grpc.StatusCode.FAILED_PRECONDITION, "DATASET_VERSION_ARCHIVED"))
    for i, (name, code, reason) in enumerate(cases):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.submit(
                f"bad-{i}", [PY, "-c", "pass"], code=None, data_sources=[DS(dataset_version=name)]
            )
        assert (err.value.code(), reason_of(err.value)) == (code, reason), name
        assert name in (err.value.details() or ""), err.value.details()  # the error names the version
    for i, model in enumerate(("workspaces/other/models/m", f"{MODEL}:1", f"{MODEL}/versions/2")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.submit(f"bad-model-{i}", [PY, "-c", "pass"], code=None, output_model=model)
        assert (err.value.code(), reason_of(err.value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_JOB_SPEC",
        )
        assert "output_model" in (err.value.details() or "")
    listed = await client.jobs.ListJobs(job_pb2.ListJobsRequest(parent="workspaces/team"))
    assert list(listed.jobs) == []


async def test_a_sweep_pins_its_dataset_version_for_every_trial(
    stack: Stack, client: Client, tmp_path: pathlib.Path
) -> None:
    datasets, v1 = await _dataset(stack, tmp_path, 4)
    template = job_spec_pb2.JobSpec(
        replica_specs=[
            job_spec_pb2.ReplicaSpec(role=job_spec_pb2.ReplicaSpec.WORKER, command=[PY, "-c", TRAIN])
        ],
        data_sources=[DS(dataset_version=f"{DATASET}/versions/@latest")],
    )
    sweeps = sweep_pb2_grpc.SweepServiceStub(client.channel)
    created = await sweeps.CreateSweep(
        sweep_pb2.CreateSweepRequest(
            parent="workspaces/team",
            sweep_id="pinned",
            sweep=sweep_pb2.Sweep(
                spec=sweep_pb2.SweepSpec(
                    job_template=template,
                    objective=sweep_pb2.Objective(metric_key="loss", goal=sweep_pb2.Objective.MINIMIZE),
                    parameters=[sweep_pb2.ParameterSpec(
                        name="lr", type=sweep_pb2.ParameterSpec.DISCRETE, values=["0.1", "0.2"])],
                    parallelism=1,
                )
            ),
        )
    )  # fmt: skip
    assert created.spec.job_template.data_sources[0].dataset_version == v1
    await _dataset(stack, tmp_path, 9)  # a newer version while the sweep runs changes nothing
    # nor does archiving the pinned one: the trials are not resolved again (nor held up by lineage)
    await datasets.ArchiveDatasetVersion(dataset_pb2.ArchiveDatasetVersionRequest(name=v1))
    deadline = asyncio.get_running_loop().time() + 60
    while (
        s := await sweeps.GetSweep(sweep_pb2.GetSweepRequest(name=created.name))
    ).state == sweep_pb2.Sweep.RUNNING:
        assert asyncio.get_running_loop().time() < deadline, s
        await asyncio.sleep(0.2)
    assert s.state == sweep_pb2.Sweep.SUCCEEDED, s
    trials = (await sweeps.ListTrials(sweep_pb2.ListTrialsRequest(parent=created.name))).trials
    for t in trials:
        job = await client.get(t.job)
        assert job.spec.data_sources[0].dataset_version == v1
        assert "rank 0 read 4 rows" in await client.text(job.name, "worker-0")
    # a template naming a version that does not exist is refused at create, not trial by trial
    template.data_sources[0].dataset_version = f"{DATASET}/versions/77"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sweeps.CreateSweep(
            sweep_pb2.CreateSweepRequest(
                parent="workspaces/team", sweep_id="missing",
                sweep=sweep_pb2.Sweep(spec=sweep_pb2.SweepSpec(
                    job_template=template,
                    objective=sweep_pb2.Objective(metric_key="loss", goal=sweep_pb2.Objective.MINIMIZE),
                    parameters=[sweep_pb2.ParameterSpec(
                        name="lr", type=sweep_pb2.ParameterSpec.DISCRETE, values=["0.1"])],
                )),
            )
        )  # fmt: skip
    assert reason_of(err.value) == "DATASET_VERSION_NOT_FOUND"
    assert "sweep.spec.job_template.data_sources[0]" in str(err.value.trailing_metadata())


@pytest.mark.parametrize("with_lineage", [False])
async def test_only_the_jobs_own_output_takes_a_registered_version(
    stack: Stack, client: Client, tmp_path: pathlib.Path
) -> None:
    """What lineage publishes after registering a model version, fed to dlc's handler directly (no
    lineage runs here, so nothing else sets the field): only a version of this job's output sticks."""
    job = await client.submit("own", [PY, "-c", "pass"], code=None, workers=1, output_model=MODEL)
    done = await client.done(job.name)
    assert done.state == Job.SUCCEEDED and not done.output_model_version
    assert stack.app is not None
    app = stack.app
    later = done.end_time.ToSeconds() + 5

    def version(vid: str, **fields: object) -> model_pb2.ModelVersion:
        v = model_pb2.ModelVersion(
            name=f"{MODEL}/versions/{vid}", source_job=job.name, artifact_uri=job.spec.output_uri
        )
        v.create_time.FromSeconds(later)
        for key, value in fields.items():
            setattr(v, key, value)
        return v

    async def offer(v: model_pb2.ModelVersion) -> str:
        async with app.uows() as uow:
            await OutputModels().registered(uow, outputs.registered(v))
            await uow.commit()
        return (await client.get(job.name)).output_model_version

    assert await offer(version("1", name="workspaces/team/models/other/versions/1")) == ""  # another model
    assert await offer(version("2", artifact_uri="file:///elsewhere/out")) == ""  # not this job's output
    early = version("3")
    early.create_time.FromSeconds(done.end_time.ToSeconds() - 60)
    assert await offer(early) == ""  # registered before the job ended: an earlier job's
    assert await offer(version("4")) == f"{MODEL}/versions/4"
    assert await offer(version("5")) == f"{MODEL}/versions/4"  # the first one stays


@pytest.mark.parametrize("with_lineage", [False])
async def test_without_lineage_a_dataset_version_is_unavailable_but_a_uri_runs(
    stack: Stack, client: Client, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit("needs-lineage", [PY, "-c", "pass"], code=None,
                            data_sources=[DS(dataset_version=f"{DATASET}/versions/1")])  # fmt: skip
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(err.value) == "LINEAGE_UNAVAILABLE"
    data = tmp_path / "plain"
    data.mkdir()
    (data / "rows.txt").write_text("1 2 3 4")
    job = await client.submit(
        "plain", [PY, "-c", TRAIN], code=None, workers=1, data_sources=[DS(uri=data.as_uri())]
    )
    assert job.spec.data_sources[0].resolved_uri == data.as_uri()
    assert (await client.done(job.name)).state == Job.SUCCEEDED
    assert "rank 0 read 4 rows" in await client.text(job.name, "worker-0")
