"""dlc with lineage: a job reads a registered dataset version, and its output becomes a model version.

Real lineage, dlc, scheduler and auth in-process, on real NATS and SQLite or PostgreSQL; the replicas
are real processes that read the dataset from `$PAI_DATA_DIR` and write into `$PAI_OUTPUT_DIR`.
"""

from __future__ import annotations

import pathlib

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from pai.dlc.v1 import job_pb2, job_spec_pb2
from pai.lineage.v1 import (
    dataset_pb2,
    dataset_pb2_grpc,
    lineage_pb2,
    lineage_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
)
from pai_common.grpc_client import channel

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
    """The ErrorInfo reason of a rich error."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)  # type: ignore[arg-type]
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


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
        assert (
            name.rsplit("/", 1)[0].split("/")[3] in (err.value.details() or "")
            or reason == "INVALID_JOB_SPEC"
        )
    listed = await client.jobs.ListJobs(job_pb2.ListJobsRequest(parent="workspaces/team"))
    assert list(listed.jobs) == []


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
