"""ModelRegistryService over real gRPC, on SQLite and PostgreSQL, with the events it publishes."""

from __future__ import annotations

import pathlib

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pai.lineage.v1 import dataset_pb2, events_pb2, lineage_pb2, model_pb2

from .conftest import Client, Watch, fails

pytestmark = pytest.mark.asyncio(loop_scope="module")
M = model_pb2
MV = model_pb2.ModelVersion
Code = grpc.StatusCode


def artifact(tmp_path: pathlib.Path, name: str = "out") -> pathlib.Path:
    root = tmp_path / name
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"0123456789")
    return root


async def make(client: Client, ws: str, model_id: str = "qa-model", **kw: object) -> model_pb2.Model:
    return await client.models.CreateModel(
        M.CreateModelRequest(parent=ws, model_id=model_id, model=M.Model(**kw))  # type: ignore[arg-type]
    )


async def version(client: Client, parent: str, uri: str = "s3://b/m", **kw: object) -> model_pb2.ModelVersion:
    request_id = kw.pop("request_id", "")
    version_id = kw.pop("model_version_id", "")
    return await client.models.CreateModelVersion(
        M.CreateModelVersionRequest(
            parent=parent,
            model_version=MV(artifact_uri=uri, **kw),  # type: ignore[arg-type]
            request_id=str(request_id),
            model_version_id=str(version_id),
        )
    )


async def test_versions_inherit_the_framework_and_record_their_lineage(
    client: Client, ws: str, tmp_path: pathlib.Path, watch: Watch
) -> None:
    ds = await client.datasets.CreateDataset(
        dataset_pb2.CreateDatasetRequest(
            parent=ws,
            dataset_id="qa",
            dataset=dataset_pb2.Dataset(),
            initial_version=dataset_pb2.DatasetVersion(uri="s3://b/qa"),
        )
    )
    m = await client.models.CreateModel(
        M.CreateModelRequest(
            parent=ws,
            model_id="qa-model",
            model=M.Model(framework=M.PYTORCH, task="question-answering"),
            initial_version=MV(artifact_uri=artifact(tmp_path).as_uri()),
        )
    )
    assert (m.latest_version, m.version_count) == (f"{m.name}/versions/1", 1)
    v1 = await client.models.GetModelVersion(M.GetModelVersionRequest(name=m.latest_version))
    assert (v1.framework, v1.size_bytes, v1.checksum.startswith("sha256:")) == (M.PYTORCH, 10, True)
    job = f"{ws}/jobs/train"
    v2 = await version(
        client, m.name, framework=M.ONNX, metrics={"eval/accuracy": 0.91}, params={"lr": "3e-5"},
        source_job=job, training_datasets=[ds.latest_version], base_model_version=v1.name,
    )  # fmt: skip
    assert (v2.name, v2.framework, v2.metrics["eval/accuracy"]) == (f"{m.name}/versions/2", M.ONNX, 0.91)
    created = await watch.wait_for(
        lambda e: e.subject == "pai.lineage.model_version.created" and e.message.model_version.name == v2.name  # type: ignore[union-attr]
    )
    assert isinstance(created.message, events_pb2.ModelVersionCreated)
    assert created.message.model_version.source_job == job

    edges = await client.lineage.ListLineageEdges(lineage_pb2.ListLineageEdgesRequest(parent=ws))
    got = {(e.source, lineage_pb2.LineageEdge.Type.Name(e.type), e.target) for e in edges.lineage_edges}
    assert got == {
        (job, "PRODUCED", v2.name),
        (ds.latest_version, "CONSUMED_BY", job),
        (v1.name, "DERIVED_INTO", v2.name),
    }
    assert {e.origin for e in edges.lineage_edges} == {lineage_pb2.LineageEdge.EVENT}
    v3 = await version(client, m.name, training_datasets=[ds.latest_version])
    direct = await client.lineage.ListLineageEdges(
        lineage_pb2.ListLineageEdgesRequest(parent=ws, filter=f'target = "{v3.name}"')
    )
    assert [(e.source, e.type) for e in direct.lineage_edges] == [
        (ds.latest_version, lineage_pb2.LineageEdge.DERIVED_INTO)
    ]

    async with fails(Code.NOT_FOUND, "DATASET_VERSION_NOT_FOUND"):
        await version(client, m.name, training_datasets=[f"{ws}/datasets/qa/versions/9"])
    async with fails(Code.NOT_FOUND, "MODEL_VERSION_NOT_FOUND"):
        await version(client, m.name, base_model_version=f"{m.name}/versions/99")
    async with fails(Code.NOT_FOUND, "MODEL_NOT_FOUND"):
        await version(client, f"{ws}/models/nothing")
    async with fails(Code.ALREADY_EXISTS, "MODEL_VERSION_ALREADY_EXISTS"):
        await version(client, m.name, model_version_id="2")
    async with fails(Code.ALREADY_EXISTS, "MODEL_ALREADY_EXISTS"):
        await make(client, ws)
    async with fails(Code.FAILED_PRECONDITION, "URI_NOT_FOUND"):
        await version(client, m.name, (tmp_path / "missing").as_uri())
    async with fails(Code.FAILED_PRECONDITION, "CHECKSUM_MISMATCH"):
        await version(client, m.name, artifact(tmp_path, "x").as_uri(), checksum="sha256:00")
    async with fails(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"):
        await version(client, m.name, "")
    async with fails(Code.INVALID_ARGUMENT, "WORKSPACE_MISMATCH"):
        await version(client, m.name, source_job="workspaces/elsewhere/jobs/train")
    # another workspace's data and models are neither confirmed to exist nor linked into this graph
    async with fails(Code.INVALID_ARGUMENT, "WORKSPACE_MISMATCH"):
        await version(client, m.name, training_datasets=["workspaces/elsewhere/datasets/qa/versions/1"])
    async with fails(Code.INVALID_ARGUMENT, "WORKSPACE_MISMATCH"):
        await version(client, m.name, base_model_version="workspaces/elsewhere/models/m/versions/1")


async def test_aliases_point_at_active_versions_and_guard_them(client: Client, ws: str, watch: Watch) -> None:
    m = await make(client, ws)
    v1 = await version(client, m.name)
    v2 = await version(client, m.name)
    with_alias = await client.models.SetModelAlias(
        M.SetModelAliasRequest(name=m.name, alias="production", version_id="1")
    )
    assert dict(with_alias.aliases) == {"production": "1"}
    moved = await client.models.SetModelAlias(
        M.SetModelAliasRequest(name=m.name, alias="production", version_id="2", etag=with_alias.etag)
    )
    assert dict(moved.aliases) == {"production": "2"}
    change = await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.model.alias_changed"
            and e.message.version_id == "2"  # type: ignore[union-attr]
            and e.message.model.name == m.name
        )  # type: ignore[union-attr]
    )
    assert isinstance(change.message, events_pb2.ModelAliasChanged)
    assert (change.message.alias, change.message.previous_version_id) == ("production", "1")

    by_alias = await client.models.GetModelVersion(
        M.GetModelVersionRequest(name=f"{m.name}/versions/@production")
    )
    assert (by_alias.name, list(by_alias.aliases)) == (v2.name, ["production"])
    latest = await client.models.GetModelVersion(M.GetModelVersionRequest(name=f"{m.name}/versions/@latest"))
    assert latest.name == v2.name

    async with fails(Code.ABORTED, "ETAG_MISMATCH"):
        await client.models.SetModelAlias(
            M.SetModelAliasRequest(name=m.name, alias="staging", version_id="1", etag=with_alias.etag)
        )
    async with fails(Code.INVALID_ARGUMENT, "ALIAS_RESERVED"):
        await client.models.SetModelAlias(M.SetModelAliasRequest(name=m.name, alias="latest", version_id="1"))
    async with fails(Code.NOT_FOUND, "MODEL_VERSION_NOT_FOUND"):
        await client.models.SetModelAlias(
            M.SetModelAliasRequest(name=m.name, alias="staging", version_id="7")
        )
    async with fails(Code.NOT_FOUND, "MODEL_NOT_FOUND"):
        await client.models.SetModelAlias(
            M.SetModelAliasRequest(name=f"{ws}/models/no", alias="a", version_id="1")
        )
    async with fails(Code.FAILED_PRECONDITION, "VERSION_HAS_ALIASES"):
        await client.models.ArchiveModelVersion(M.ArchiveModelVersionRequest(name=v2.name))
    async with fails(Code.FAILED_PRECONDITION, "VERSION_HAS_ALIASES"):
        await client.models.DeleteModelVersion(M.DeleteModelVersionRequest(name=v2.name))
    archived = await client.models.ArchiveModelVersion(M.ArchiveModelVersionRequest(name=v1.name))
    assert archived.state == MV.ARCHIVED
    async with fails(Code.FAILED_PRECONDITION, "VERSION_ARCHIVED"):
        await client.models.SetModelAlias(
            M.SetModelAliasRequest(name=m.name, alias="staging", version_id="1")
        )
    async with fails(Code.FAILED_PRECONDITION, "ILLEGAL_STATE_TRANSITION"):
        await client.models.ArchiveModelVersion(M.ArchiveModelVersionRequest(name=v1.name))
    async with fails(Code.NOT_FOUND, "ALIAS_NOT_FOUND"):
        await client.models.GetModelVersion(M.GetModelVersionRequest(name=f"{m.name}/versions/@staging"))
    async with fails(Code.NOT_FOUND, "ALIAS_NOT_FOUND"):
        await client.models.DeleteModelAlias(M.DeleteModelAliasRequest(name=m.name, alias="staging"))

    removed = await client.models.DeleteModelAlias(M.DeleteModelAliasRequest(name=m.name, alias="production"))
    assert dict(removed.aliases) == {}
    await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.model.alias_changed"
            and e.message.version_id == ""  # type: ignore[union-attr]
            and e.message.previous_version_id == "2"
            and e.message.model.name == m.name
        )  # type: ignore[union-attr]
    )
    await client.models.ArchiveModelVersion(M.ArchiveModelVersionRequest(name=v2.name))
    async with fails(Code.NOT_FOUND, "MODEL_VERSION_NOT_FOUND"):
        await client.models.GetModelVersion(M.GetModelVersionRequest(name=f"{m.name}/versions/@latest"))
    got = await client.models.GetModel(M.GetModelRequest(name=m.name))
    assert (got.latest_version, got.version_count) == ("", 2)


async def test_update_list_and_delete(client: Client, ws: str, watch: Watch) -> None:
    m = await make(client, ws, framework=M.SKLEARN, labels={"team": "a"})
    await make(client, ws, "other", framework=M.PYTORCH)
    updated = await client.models.UpdateModel(
        M.UpdateModelRequest(
            model=M.Model(name=m.name, task="text-generation", description="ignored", etag=m.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["task"]),
        )
    )
    assert (updated.task, updated.description) == ("text-generation", "")
    async with fails(Code.ABORTED, "ETAG_MISMATCH"):
        await client.models.UpdateModel(M.UpdateModelRequest(model=M.Model(name=m.name, etag=m.etag)))
    async with fails(Code.INVALID_ARGUMENT, "INVALID_UPDATE_MASK"):
        await client.models.UpdateModel(
            M.UpdateModelRequest(
                model=M.Model(name=m.name), update_mask=field_mask_pb2.FieldMask(paths=["aliases"])
            )
        )
    listed = await client.models.ListModels(M.ListModelsRequest(parent=ws, filter="framework = SKLEARN"))
    assert [x.name for x in listed.models] == [m.name]
    everything = await client.models.ListModels(M.ListModelsRequest(parent=ws, page_size=1))
    assert everything.next_page_token and [x.name for x in everything.models] == [f"{ws}/models/other"]
    second = await client.models.ListModels(
        M.ListModelsRequest(parent=ws, page_size=1, page_token=everything.next_page_token)
    )
    assert [x.name for x in second.models] == [m.name] and not second.next_page_token

    v1 = await version(client, m.name, metrics={"acc": 0.5})
    v2 = await version(client, m.name, metrics={"acc": 0.95})
    assert v1.framework == M.SKLEARN
    good = await client.models.ListModelVersions(
        M.ListModelVersionsRequest(parent=m.name, filter="metrics.acc > 0.9")
    )
    assert [x.name for x in good.model_versions] == [v2.name]
    newest = await client.models.ListModelVersions(M.ListModelVersionsRequest(parent=m.name))
    assert [x.name for x in newest.model_versions] == [v2.name, v1.name]
    renamed = await client.models.UpdateModelVersion(
        M.UpdateModelVersionRequest(
            model_version=MV(name=v1.name, description="baseline"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    )
    assert renamed.description == "baseline"
    async with fails(Code.INVALID_ARGUMENT, "VERSION_IMMUTABLE"):
        await client.models.UpdateModelVersion(
            M.UpdateModelVersionRequest(
                model_version=MV(name=v1.name, metrics={"acc": 1.0}),
                update_mask=field_mask_pb2.FieldMask(paths=["metrics"]),
            )
        )
    async with fails(Code.FAILED_PRECONDITION, "MODEL_HAS_VERSIONS"):
        await client.models.DeleteModel(M.DeleteModelRequest(name=m.name))
    await client.models.SetModelAlias(M.SetModelAliasRequest(name=m.name, alias="production", version_id="2"))
    await client.models.DeleteModel(M.DeleteModelRequest(name=m.name, force=True))
    async with fails(Code.NOT_FOUND, "MODEL_NOT_FOUND"):
        await client.models.GetModel(M.GetModelRequest(name=m.name))
    async with fails(Code.NOT_FOUND, "MODEL_VERSION_NOT_FOUND"):
        await client.models.GetModelVersion(M.GetModelVersionRequest(name=v2.name))
    # the deleted version's node stays, marked deleted
    q = await client.lineage.QueryLineage(lineage_pb2.QueryLineageRequest(parent=ws, entity=v2.name))
    assert q.root.deleted and q.root.name == v2.name
    # a service following `production` hears it is gone; the deleted version says which aliases it had
    gone = await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.model.alias_changed"
            and e.message.model.name == m.name  # type: ignore[union-attr]
            and e.message.alias == "production"
            and not e.message.version_id
        ),  # type: ignore[union-attr]
        what="production removed",
    )
    assert gone.message.previous_version_id == "2"  # type: ignore[union-attr]
    deleted = await watch.wait_for(
        lambda e: (
            e.subject == "pai.lineage.model_version.deleted" and e.message.model_version.name == v2.name
        ),  # type: ignore[union-attr]
        what="version 2 deleted",
    )
    assert list(deleted.message.model_version.aliases) == ["production"]  # type: ignore[union-attr]


async def test_request_id_registers_one_version(client: Client, ws: str) -> None:
    m = await make(client, ws)
    rid = f"job-uid-{ws[-20:]}"
    a = await version(client, m.name, request_id=rid)
    b = await version(client, m.name, request_id=rid)
    assert (a.name, a.uid) == (b.name, b.uid)
    async with fails(Code.ALREADY_EXISTS, "REQUEST_ID_REUSED"):
        await version(client, m.name, request_id=rid, model_version_id="x1")
    listed = await client.models.ListModelVersions(M.ListModelVersionsRequest(parent=m.name))
    assert len(listed.model_versions) == 1
