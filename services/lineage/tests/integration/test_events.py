"""dlc's job events, published through a real outbox and relay onto JetStream, handled by lineage's
durable consumer: job nodes, CONSUMED_BY edges, and the output model registered on success."""

from __future__ import annotations

import asyncio
import datetime as dt
import pathlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import pytest
from google.protobuf import timestamp_pb2

from pai.dlc.v1 import events_pb2 as dlc_events
from pai.dlc.v1 import job_pb2, job_spec_pb2
from pai.lineage.v1 import dataset_pb2, events_pb2, lineage_pb2, model_pb2

from .conftest import Client, Stack, Watch, rows

pytestmark = pytest.mark.asyncio(loop_scope="module")
Job = job_pb2.Job
DS = job_spec_pb2.DataSource
Edge = lineage_pb2.LineageEdge
Node = lineage_pb2.LineageNode
T = TypeVar("T")


def ts(seconds_ago: float = 0) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago))
    return out


def job(
    ws: str, state: int, *sources: job_spec_pb2.DataSource, age: float = 0, **spec: object
) -> job_pb2.Job:
    return Job(
        name=f"{ws}/jobs/train",
        uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ws}/jobs/train")),
        creator="users/alice",
        state=state,  # type: ignore[arg-type]
        spec=job_spec_pb2.JobSpec(kind=job_spec_pb2.JobSpec.PYTORCH, data_sources=list(sources), **spec),  # type: ignore[arg-type]
        create_time=ts(60),
        update_time=ts(age),
    )


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], what: str, timeout: float = 10
) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            value = await probe()
            if check(value):
                return value
        except grpc.aio.AioRpcError:
            value = None  # type: ignore[assignment]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never {what}: {value}")
        await asyncio.sleep(0.05)


async def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never {what}")
        await asyncio.sleep(0.05)


async def dataset_version(client: Client, ws: str) -> str:
    ds = await client.datasets.CreateDataset(
        dataset_pb2.CreateDatasetRequest(
            parent=ws, dataset_id="qa", dataset=dataset_pb2.Dataset(),
            initial_version=dataset_pb2.DatasetVersion(uri="s3://bucket/qa"),
        )
    )  # fmt: skip
    return ds.latest_version


async def query(client: Client, ws: str, entity: str, **kw: object) -> lineage_pb2.QueryLineageResponse:
    return await client.lineage.QueryLineage(lineage_pb2.QueryLineageRequest(parent=ws, entity=entity, **kw))  # type: ignore[arg-type]


async def test_a_created_job_consumes_its_data_sources_and_its_state_follows(
    stack: Stack, client: Client, ws: str
) -> None:
    v1 = await dataset_version(client, ws)
    created = job(ws, Job.QUEUED, DS(dataset_version=v1, env_var="DATA"), DS(uri="s3://bucket/extra"), age=30)
    await stack.dlc.publish("pai.dlc.job.created", dlc_events.JobCreated(job=created))
    name = created.name
    found = await eventually(lambda: query(client, ws, name), lambda q: len(q.edges) == 2, "saw both edges")
    assert (found.root.display_name, dict(found.root.attributes)["state"]) == ("train (QUEUED)", "QUEUED")
    assert found.root.attributes["job_kind"] == "PYTORCH"
    edges = {e.source: e for e in found.edges}
    assert set(edges) == {v1, "s3://bucket/extra"}
    assert all(e.type == Edge.CONSUMED_BY and e.target == name for e in edges.values())
    assert all(e.origin == Edge.EVENT and e.recorder == "pai.dlc.job.created" for e in edges.values())
    assert dict(edges[v1].attributes) == {"env_var": "DATA", "index": "0"}
    assert dict(edges["s3://bucket/extra"].attributes) == {"index": "1"}
    kinds = {n.name: n.kind for n in found.nodes}
    assert kinds["s3://bucket/extra"] == Node.EXTERNAL

    running = job(ws, Job.RUNNING, age=10)
    await stack.dlc.publish(
        "pai.dlc.job.state_changed", dlc_events.JobStateChanged(job=running, previous_state=Job.QUEUED)
    )
    await eventually(
        lambda: query(client, ws, name), lambda q: q.root.attributes["state"] == "RUNNING", "ran"
    )
    stale = job(ws, Job.STARTING, age=20)  # older than what lineage has seen: dropped
    await stack.dlc.publish("pai.dlc.job.state_changed", dlc_events.JobStateChanged(job=stale))
    marker = job(ws, Job.RUNNING, age=5)
    marker.name = f"{ws}/jobs/marker"
    await stack.dlc.publish("pai.dlc.job.state_changed", dlc_events.JobStateChanged(job=marker))
    await eventually(lambda: query(client, ws, marker.name), lambda q: True, "saw the marker")
    assert (await query(client, ws, name)).root.attributes["state"] == "RUNNING"

    await stack.dlc.publish("pai.dlc.job.deleted", dlc_events.JobDeleted(job=running))
    gone = await eventually(lambda: query(client, ws, name), lambda q: q.root.deleted, "was marked deleted")
    assert len(gone.edges) == 2  # the history stays


async def test_a_succeeded_job_registers_its_model_once(
    stack: Stack, client: Client, ws: str, tmp_path: pathlib.Path, watch: Watch
) -> None:
    v1 = await dataset_version(client, ws)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"weights")
    model = f"{ws}/models/qa-model"
    done = job(
        ws, Job.SUCCEEDED, DS(dataset_version=v1), DS(dataset_version=f"{ws}/datasets/gone/versions/1"),
        DS(uri="s3://bucket/extra"), hyperparameters={"lr": "0.1"}, output_model=model,
    )  # fmt: skip
    event = dlc_events.JobSucceeded(
        job=done, model_artifact_uri=out.as_uri(), model=model, final_metrics={"loss": 0.25}
    )
    inbox = "SELECT count(*) FROM inbox WHERE consumer = 'lineage'"
    before = (await rows(stack, inbox))[0][0]
    await stack.dlc.publish("pai.dlc.job.succeeded", event)
    await stack.dlc.publish("pai.dlc.job.succeeded", event)  # dlc published it twice (another event id)
    registered = await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.model_version.created"
            and e.message.model_version.source_job == done.name
        ),  # type: ignore[union-attr]
        what="ModelVersionCreated",
    )
    assert isinstance(registered.message, events_pb2.ModelVersionCreated)
    v = registered.message.model_version
    assert v.name == f"{model}/versions/1"
    assert (v.artifact_uri, v.size_bytes, v.metrics["loss"], dict(v.params)) == (
        out.as_uri(),
        7,
        0.25,
        {"lr": "0.1"},
    )
    assert list(v.training_datasets) == [v1]  # the missing dataset version is skipped
    assert v.creator == "users/alice"
    m = await client.models.GetModel(model_pb2.GetModelRequest(name=model))
    assert (m.framework, m.creator) == (model_pb2.PYTORCH, "users/alice")

    # both deliveries were handled (two event ids), and only one version exists
    await eventually(lambda: rows(stack, inbox), lambda r: r[0][0] == before + 2, "handled both", 10)
    versions = await client.models.ListModelVersions(model_pb2.ListModelVersionsRequest(parent=model))
    assert [x.name for x in versions.model_versions] == [v.name]
    assert [e.subject for e in watch.events if e.subject == "pai.lineage.model_version.created"
            and e.message.model_version.source_job == done.name] == ["pai.lineage.model_version.created"]  # type: ignore[union-attr]  # fmt: skip

    upstream = await query(client, ws, f"{model}/versions/@latest", direction=lineage_pb2.UPSTREAM)
    # JobCreated never came in this test: the edges are the registration's own
    assert {n.name for n in upstream.nodes} == {v.name, done.name, v1}
    produced = [e for e in upstream.edges if e.type == Edge.PRODUCED]
    assert [(e.source, e.target) for e in produced] == [(done.name, v.name)]


async def test_the_same_event_id_is_handled_once_and_a_missing_artifact_still_registers(
    stack: Stack, client: Client, ws: str, tmp_path: pathlib.Path
) -> None:
    model = f"{ws}/models/m"
    done = job(ws, Job.SUCCEEDED, output_model=model)
    done.spec.kind = job_spec_pb2.JobSpec.XGBOOST
    event = dlc_events.JobSucceeded(
        job=done, model_artifact_uri=(tmp_path / "never-written").as_uri(), model=model
    )
    event_id = uuid.uuid4().hex
    before = stack.app.consumer.acked
    await stack.dlc.publish("pai.dlc.job.succeeded", event, event_id=event_id)
    # a re-publish with the same id is dropped by JetStream; a redelivery would be dropped by the inbox
    await stack.dlc.republish(event_id)
    v = await eventually(
        lambda: client.models.GetModelVersion(model_pb2.GetModelVersionRequest(name=f"{model}/versions/1")),
        lambda v: bool(v.name),
        "registered",
    )
    assert (v.size_bytes, v.checksum, v.source_job) == (0, "", done.name)
    m = await client.models.GetModel(model_pb2.GetModelRequest(name=model))
    assert m.framework == model_pb2.MODEL_FRAMEWORK_UNSPECIFIED
    acked, handled = stack.app.consumer.acked, stack.app.consumer.handled
    await stack.dlc.redeliver("pai.dlc.job.succeeded", event, event_id)
    await until(lambda: stack.app.consumer.acked > acked, "acked the redelivery")
    assert stack.app.consumer.handled == handled  # the inbox knew the id: the handler did not run
    inbox = await rows(stack, f"SELECT count(*) FROM inbox WHERE event_id = '{event_id}'")
    assert inbox[0][0] == 1
    assert stack.app.consumer.acked >= before + 2


async def test_an_output_model_lineage_cannot_hold_registers_nothing_and_blocks_nothing(
    stack: Stack, client: Client, ws: str, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"weights")
    bad = [
        f"{ws}/models/mnist:1",  # the CLI's NAME:VERSION where a model name belongs
        f"{ws}/models/m/versions/3",
        f"{ws}/datasets/m",
        "workspaces/elsewhere/models/m",
    ]
    handled = stack.app.consumer.handled
    for i, model in enumerate(bad):
        done = job(ws, Job.SUCCEEDED, output_model=model)
        done.name, done.uid = f"{ws}/jobs/bad-{i}", str(uuid.uuid4())
        await stack.dlc.publish(
            "pai.dlc.job.succeeded",
            dlc_events.JobSucceeded(job=done, model_artifact_uri=out.as_uri(), model=model),
        )
    # each event is handled (not retried, not dead-lettered): its job node is there, nothing else is
    await until(lambda: stack.app.consumer.handled >= handled + len(bad), "handled every event")
    listed = await client.models.ListModels(model_pb2.ListModelsRequest(parent=ws))
    assert list(listed.models) == []
    for i in range(len(bad)):
        graph = await query(client, ws, f"{ws}/jobs/bad-{i}")
        assert [n.name for n in graph.nodes] == [f"{ws}/jobs/bad-{i}"] and list(graph.edges) == []
