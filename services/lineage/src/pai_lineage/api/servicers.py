"""lineage's gRPC servicers: check the request, call the use case, render the answer. No rules here."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.api import field_behavior_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from pai.lineage.v1 import (
    dataset_pb2,
    dataset_pb2_grpc,
    lineage_pb2,
    lineage_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
)
from pai_common import fieldmask
from pai_common.principal import principal
from pai_lineage.api import listing
from pai_lineage.app import render
from pai_lineage.app.datasets import DATASET_FIELDS, Datasets
from pai_lineage.app.lineage import Lineage
from pai_lineage.app.models import MODEL_FIELDS, Models
from pai_lineage.domain import versions

Ctx: TypeAlias = grpc.aio.ServicerContext
DatasetVersion = dataset_pb2.DatasetVersion
ModelVersion = model_pb2.ModelVersion
Edge = lineage_pb2.LineageEdge
Node = lineage_pb2.LineageNode


def settable_fields(message: type[Message]) -> list[str]:
    """The fields a caller can give at all: not OUTPUT_ONLY or IDENTIFIER ones, nor the etag. Naming those in
    an update mask is INVALID_UPDATE_MASK; naming a settable but immutable one is VERSION_IMMUTABLE."""
    out = []
    for f in message.DESCRIPTOR.fields:
        behaviors = set(f.GetOptions().Extensions[field_behavior_pb2.field_behavior])
        if f.name != "etag" and not behaviors & {
            field_behavior_pb2.OUTPUT_ONLY,
            field_behavior_pb2.IDENTIFIER,
        }:
            out.append(f.name)
    return out


class DatasetServicer(dataset_pb2_grpc.DatasetServiceServicer):
    def __init__(self, datasets: Datasets) -> None:
        self._d = datasets

    async def CreateDataset(
        self, request: dataset_pb2.CreateDatasetRequest, context: Ctx
    ) -> dataset_pb2.Dataset:
        initial = request.initial_version if request.HasField("initial_version") else None
        return await self._d.create(
            request.parent, request.dataset_id, request.dataset, request.request_id, principal().name, initial
        )

    async def GetDataset(self, request: dataset_pb2.GetDatasetRequest, context: Ctx) -> dataset_pb2.Dataset:
        return await self._d.get(request.name)

    async def ListDatasets(
        self, request: dataset_pb2.ListDatasetsRequest, context: Ctx
    ) -> dataset_pb2.ListDatasetsResponse:
        chosen, token = listing.select(
            await self._d.list_datasets(request.parent),
            lambda d: {
                "display_name": d.display_name,
                "data_type": dataset_pb2.Dataset.DataType.Name(d.data_type),
                "format": d.format,
            },
            request, method="ListDatasets", fields=("display_name", "data_type", "format"), maps=("labels",),
        )  # fmt: skip
        return dataset_pb2.ListDatasetsResponse(datasets=chosen, next_page_token=token)

    async def UpdateDataset(
        self, request: dataset_pb2.UpdateDatasetRequest, context: Ctx
    ) -> dataset_pb2.Dataset:
        fields = fieldmask.paths(request.update_mask.paths, DATASET_FIELDS)
        return await self._d.update(request.dataset, fields)

    async def DeleteDataset(self, request: dataset_pb2.DeleteDatasetRequest, context: Ctx) -> empty_pb2.Empty:
        await self._d.delete(request.name, request.etag, request.force)
        return empty_pb2.Empty()

    async def CreateDatasetVersion(
        self, request: dataset_pb2.CreateDatasetVersionRequest, context: Ctx
    ) -> dataset_pb2.DatasetVersion:
        return await self._d.create_version(
            request.parent, request.dataset_version_id, request.dataset_version, request.request_id,
            principal().name,
        )  # fmt: skip

    async def GetDatasetVersion(
        self, request: dataset_pb2.GetDatasetVersionRequest, context: Ctx
    ) -> dataset_pb2.DatasetVersion:
        return await self._d.get_version(request.name)

    async def ListDatasetVersions(
        self, request: dataset_pb2.ListDatasetVersionsRequest, context: Ctx
    ) -> dataset_pb2.ListDatasetVersionsResponse:
        chosen, token = listing.select(
            await self._d.list_versions(request.parent),
            lambda v: {"state": DatasetVersion.State.Name(v.state), "source_job": v.source_job},
            request, method="ListDatasetVersions", fields=("state", "source_job"), maps=("labels",),
            newest_first=True,
        )  # fmt: skip
        return dataset_pb2.ListDatasetVersionsResponse(dataset_versions=chosen, next_page_token=token)

    async def UpdateDatasetVersion(
        self, request: dataset_pb2.UpdateDatasetVersionRequest, context: Ctx
    ) -> dataset_pb2.DatasetVersion:
        known = settable_fields(DatasetVersion)
        fields = versions.check_version_mask(request.update_mask.paths, known, request.dataset_version.name)
        return await self._d.update_version(request.dataset_version, fields)

    async def DeleteDatasetVersion(
        self, request: dataset_pb2.DeleteDatasetVersionRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._d.delete_version(request.name, request.etag)
        return empty_pb2.Empty()

    async def ArchiveDatasetVersion(
        self, request: dataset_pb2.ArchiveDatasetVersionRequest, context: Ctx
    ) -> dataset_pb2.DatasetVersion:
        return await self._d.change_state(request.name, request.etag, DatasetVersion.ARCHIVED)

    async def UnarchiveDatasetVersion(
        self, request: dataset_pb2.UnarchiveDatasetVersionRequest, context: Ctx
    ) -> dataset_pb2.DatasetVersion:
        return await self._d.change_state(request.name, request.etag, DatasetVersion.ACTIVE)


class ModelRegistryServicer(model_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, models: Models) -> None:
        self._m = models

    async def CreateModel(self, request: model_pb2.CreateModelRequest, context: Ctx) -> model_pb2.Model:
        initial = request.initial_version if request.HasField("initial_version") else None
        return await self._m.create(
            request.parent, request.model_id, request.model, request.request_id, principal().name, initial
        )

    async def GetModel(self, request: model_pb2.GetModelRequest, context: Ctx) -> model_pb2.Model:
        return await self._m.get(request.name)

    async def ListModels(
        self, request: model_pb2.ListModelsRequest, context: Ctx
    ) -> model_pb2.ListModelsResponse:
        chosen, token = listing.select(
            await self._m.list_models(request.parent),
            lambda m: {
                "display_name": m.display_name,
                "task": m.task,
                "framework": model_pb2.ModelFramework.Name(m.framework),
            },
            request, method="ListModels", fields=("display_name", "task", "framework"), maps=("labels",),
        )  # fmt: skip
        return model_pb2.ListModelsResponse(models=chosen, next_page_token=token)

    async def UpdateModel(self, request: model_pb2.UpdateModelRequest, context: Ctx) -> model_pb2.Model:
        fields = fieldmask.paths(request.update_mask.paths, MODEL_FIELDS)
        return await self._m.update(request.model, fields)

    async def DeleteModel(self, request: model_pb2.DeleteModelRequest, context: Ctx) -> empty_pb2.Empty:
        await self._m.delete(request.name, request.etag, request.force)
        return empty_pb2.Empty()

    async def SetModelAlias(self, request: model_pb2.SetModelAliasRequest, context: Ctx) -> model_pb2.Model:
        return await self._m.set_alias(request.name, request.alias, request.version_id, request.etag)

    async def DeleteModelAlias(
        self, request: model_pb2.DeleteModelAliasRequest, context: Ctx
    ) -> model_pb2.Model:
        return await self._m.delete_alias(request.name, request.alias, request.etag)

    async def CreateModelVersion(
        self, request: model_pb2.CreateModelVersionRequest, context: Ctx
    ) -> model_pb2.ModelVersion:
        return await self._m.create_version(
            request.parent, request.model_version_id, request.model_version, request.request_id,
            principal().name,
        )  # fmt: skip

    async def GetModelVersion(
        self, request: model_pb2.GetModelVersionRequest, context: Ctx
    ) -> model_pb2.ModelVersion:
        return await self._m.get_version(request.name)

    async def ListModelVersions(
        self, request: model_pb2.ListModelVersionsRequest, context: Ctx
    ) -> model_pb2.ListModelVersionsResponse:
        chosen, token = listing.select(
            await self._m.list_versions(request.parent),
            lambda v: {
                "state": ModelVersion.State.Name(v.state),
                "framework": model_pb2.ModelFramework.Name(v.framework),
                "source_job": v.source_job,
                **{f"metrics.{k}": repr(x) for k, x in v.metrics.items()},
            },
            request, method="ListModelVersions", fields=("state", "framework", "source_job"),
            maps=("labels", "metrics"), newest_first=True,
        )  # fmt: skip
        return model_pb2.ListModelVersionsResponse(model_versions=chosen, next_page_token=token)

    async def UpdateModelVersion(
        self, request: model_pb2.UpdateModelVersionRequest, context: Ctx
    ) -> model_pb2.ModelVersion:
        known = settable_fields(ModelVersion)
        fields = versions.check_version_mask(request.update_mask.paths, known, request.model_version.name)
        return await self._m.update_version(request.model_version, fields)

    async def DeleteModelVersion(
        self, request: model_pb2.DeleteModelVersionRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._m.delete_version(request.name, request.etag)
        return empty_pb2.Empty()

    async def ArchiveModelVersion(
        self, request: model_pb2.ArchiveModelVersionRequest, context: Ctx
    ) -> model_pb2.ModelVersion:
        return await self._m.change_state(request.name, request.etag, ModelVersion.ARCHIVED)

    async def UnarchiveModelVersion(
        self, request: model_pb2.UnarchiveModelVersionRequest, context: Ctx
    ) -> model_pb2.ModelVersion:
        return await self._m.change_state(request.name, request.etag, ModelVersion.ACTIVE)


class LineageServicer(lineage_pb2_grpc.LineageServiceServicer):
    def __init__(self, lineage: Lineage) -> None:
        self._l = lineage

    async def QueryLineage(
        self, request: lineage_pb2.QueryLineageRequest, context: Ctx
    ) -> lineage_pb2.QueryLineageResponse:
        q = await self._l.query(
            request.parent, request.entity, request.direction, request.max_depth, request.max_nodes
        )
        return lineage_pb2.QueryLineageResponse(
            root=q.root, nodes=q.nodes, edges=q.edges, truncated=q.truncated
        )

    async def RenderLineage(
        self, request: lineage_pb2.RenderLineageRequest, context: Ctx
    ) -> lineage_pb2.RenderLineageResponse:
        q = await self._l.query(
            request.parent, request.entity, request.direction, request.max_depth, request.max_nodes
        )
        content, media = render.render(q, request.format)
        return lineage_pb2.RenderLineageResponse(content=content, media_type=media, truncated=q.truncated)

    async def ExportOpenLineage(
        self, request: lineage_pb2.ExportOpenLineageRequest, context: Ctx
    ) -> lineage_pb2.ExportOpenLineageResponse:
        q = await self._l.query(request.parent, request.entity, request.direction, request.max_depth, 0)
        events = render.openlineage(q, request.job_namespace, request.parent.split("/")[1])
        return lineage_pb2.ExportOpenLineageResponse(events=events, truncated=q.truncated)

    async def RecordLineage(
        self, request: lineage_pb2.RecordLineageRequest, context: Ctx
    ) -> lineage_pb2.RecordLineageResponse:
        edges = await self._l.record(
            request.parent, list(request.edges), list(request.nodes), request.request_id, principal().name
        )
        return lineage_pb2.RecordLineageResponse(edges=edges)

    async def GetLineageEdge(
        self, request: lineage_pb2.GetLineageEdgeRequest, context: Ctx
    ) -> lineage_pb2.LineageEdge:
        return await self._l.get_edge(request.name)

    async def ListLineageEdges(
        self, request: lineage_pb2.ListLineageEdgesRequest, context: Ctx
    ) -> lineage_pb2.ListLineageEdgesResponse:
        chosen, token = listing.select(
            await self._l.list_edges(request.parent),
            lambda e: {
                "source": e.source,
                "target": e.target,
                "source_kind": Node.Kind.Name(e.source_kind),
                "target_kind": Node.Kind.Name(e.target_kind),
                "type": Edge.Type.Name(e.type),
                "origin": Edge.Origin.Name(e.origin),
            },
            request, method="ListLineageEdges",
            fields=("source", "target", "source_kind", "target_kind", "type", "origin"), newest_first=True,
        )  # fmt: skip
        return lineage_pb2.ListLineageEdgesResponse(lineage_edges=chosen, next_page_token=token)

    async def DeleteLineageEdge(
        self, request: lineage_pb2.DeleteLineageEdgeRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._l.delete_edge(request.name, request.etag)
        return empty_pb2.Empty()
