"""Lineage, as the app's `Datasets` port: dataset versions a job names are resolved to their URIs.

dlc asks lineage with its own credential (`PAI_DLC_API_KEY`), and only for versions of the job's own
workspace (the app checks), so a caller cannot read another workspace's data through dlc. The model
a job registers on success travels the other way, by events (`pai.dlc.job.succeeded` →
`pai.lineage.model_version.created`), so a job never waits for lineage when it ends.
"""

from __future__ import annotations

import grpc

from pai.lineage.v1 import dataset_pb2, dataset_pb2_grpc
from pai_common.errors import FailedPrecondition, Unavailable, bad_request

DatasetVersion = dataset_pb2.DatasetVersion


class GrpcDatasets:
    """Resolves dataset versions through lineage's DatasetService."""

    def __init__(self, channel: grpc.aio.Channel, endpoint: str) -> None:
        self._stub = dataset_pb2_grpc.DatasetServiceStub(channel)
        self._endpoint = endpoint

    async def resolve(self, field: str, name: str) -> tuple[str, str]:
        """(concrete name, URI) of version `name` (`.../versions/@latest` for the newest ACTIVE one),
        or a clear error naming `field`: INVALID_ARGUMENT when it does not exist, FAILED_PRECONDITION
        when it is archived or lineage refuses dlc's credential, UNAVAILABLE when lineage does not answer."""
        try:
            v: DatasetVersion = await self._stub.GetDatasetVersion(
                dataset_pb2.GetDatasetVersionRequest(name=name), timeout=10
            )
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                message = f"dataset version {name} does not exist in lineage"
                raise bad_request(field, message, "DATASET_VERSION_NOT_FOUND") from None
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                message = f"lineage refused dlc's own credential (PAI_DLC_API_KEY) for {name}: {e.details()}"
                raise FailedPrecondition("LINEAGE_ACCESS_DENIED", message, dataset_version=name) from None
            raise Unavailable(
                "LINEAGE_UNAVAILABLE",
                f"lineage at {self._endpoint} did not resolve {name} ({code.name}: {e.details()}); retry",
            ) from None
        if v.state == DatasetVersion.ARCHIVED:
            raise FailedPrecondition(
                "DATASET_VERSION_ARCHIVED",
                f"dataset version {v.name} is archived; unarchive it or name another version",
                dataset_version=v.name,
            )
        return v.name, v.uri
