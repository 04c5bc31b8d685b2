"""Datasets and their immutable versions: the use cases behind DatasetService."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from pai.lineage.v1 import dataset_pb2, events_pb2
from pai_common.clock import utcnow
from pai_common.errors import NotFound, bad_request
from pai_common.wire import ts
from pai_lineage.app import artifacts, family, recording
from pai_lineage.app.idempotency import earlier_result, remember
from pai_lineage.db.store import Store, Stored
from pai_lineage.db.uow import UnitOfWorkFactory
from pai_lineage.domain import graph

Dataset = dataset_pb2.Dataset
Version = dataset_pb2.DatasetVersion
DATASET_FIELDS = ("display_name", "description", "labels", "data_type", "format")
REGISTERED = "pai.lineage.dataset_version.created"


dataset_of = family.parent_of


def check_same_workspace(other: str, resource: str, field: str) -> None:
    """What a version names (its `source_job`, training datasets, base model) is in the version's own
    workspace: a registration must not reach into, or reveal, another workspace's entities."""
    if other and graph.workspace_of(other) != graph.workspace_of(resource):
        message = f"{other} is not in {graph.workspace_of(resource)}"
        raise bad_request(field, message, "WORKSPACE_MISMATCH", resource=other)


def node_attributes(v: dataset_pb2.DatasetVersion) -> dict[str, str]:
    return {"uri": v.uri, "state": Version.State.Name(v.state), "checksum": v.checksum}


DATASETS: family.Family[dataset_pb2.Dataset, dataset_pb2.DatasetVersion] = family.Family(
    parents=lambda s: s.datasets,
    versions=lambda s: s.dataset_versions,
    kind=graph.DATASET_VERSION,
    updated=lambda d: events_pb2.DatasetUpdated(dataset=d),
    deleted=lambda d: events_pb2.DatasetDeleted(dataset=d),
    version_updated=lambda v: events_pb2.DatasetVersionUpdated(dataset_version=v),
    version_deleted=lambda v: events_pb2.DatasetVersionDeleted(dataset_version=v),
    state_changed=lambda v, previous: events_pb2.DatasetVersionStateChanged(
        dataset_version=v,
        previous_state=previous,  # type: ignore[arg-type]
    ),
    attributes=node_attributes,
    subject="dataset",
)


class Datasets:
    """Every change in one transaction with its events (and graph nodes and edges)."""

    def __init__(self, uow: UnitOfWorkFactory, files: artifacts.Files | None = None) -> None:
        self._uow = uow
        self.files = files or artifacts.Files()

    # ---- datasets ------------------------------------------------------------------------------

    async def create(
        self,
        parent: str,
        dataset_id: str,
        given: dataset_pb2.Dataset,
        request_id: str,
        creator: str,
        initial: dataset_pb2.DatasetVersion | None,
    ) -> dataset_pb2.Dataset:
        name = f"{parent}/datasets/{dataset_id}"
        facts = await self._facts(initial, "initial_version.uri") if initial is not None else None
        async with self._uow() as uow:
            s = uow.store
            earlier = await earlier_result(s, request_id, "CreateDataset", name)
            if earlier:
                return await self._get(s, earlier)
            if await s.datasets.get(name) is not None:
                raise DATASETS.parent_exists(name)
            now = utcnow()
            new = Dataset(
                name=name,
                uid=str(uuid.uuid4()),
                display_name=given.display_name,
                description=given.description,
                labels=dict(given.labels),
                data_type=given.data_type,
                format=given.format,
                creator=creator,
                create_time=ts(now),
                update_time=ts(now),
            )
            ds = Stored(new, 0)
            await s.datasets.insert(ds, now)
            created: dataset_pb2.DatasetVersion | None = None
            if initial is not None and facts is not None:
                created = await self._add_version(s, ds, "1", initial, creator, facts)
            await s.publish("pai.lineage.dataset.created", events_pb2.DatasetCreated(dataset=ds.msg))
            if created is not None:
                await s.publish(REGISTERED, events_pb2.DatasetVersionCreated(dataset_version=created))
            await remember(s, request_id, "CreateDataset", name, name)
            await uow.commit()
        return ds.msg

    async def get(self, name: str) -> dataset_pb2.Dataset:
        async with self._uow.reading() as s:
            return await self._get(s, name)

    async def _get(self, s: Store, name: str) -> dataset_pb2.Dataset:
        return (await family.get_parent(DATASETS, s, name)).msg

    async def list_datasets(self, parent: str) -> list[dataset_pb2.Dataset]:
        async with self._uow.reading() as s:
            return await family.list_parents(DATASETS, s, parent)

    async def update(self, given: dataset_pb2.Dataset, fields: set[str]) -> dataset_pb2.Dataset:
        async with self._uow() as uow:
            updated = await family.update_parent(DATASETS, uow.store, given, fields)
            await uow.commit()
        return updated

    async def delete(self, name: str, etag: str, force: bool) -> None:
        async with self._uow() as uow:
            ds, children = await family.parent_to_delete(DATASETS, uow.store, name, etag, force)
            for v in children:
                await family.drop_version(DATASETS, uow.store, v)
            await family.delete_parent(DATASETS, uow.store, ds)
            await uow.commit()

    # ---- versions ------------------------------------------------------------------------------

    async def _facts(self, v: dataset_pb2.DatasetVersion, field: str) -> artifacts.Facts:
        if not v.uri:
            raise bad_request(field, "uri is required")
        return await self.files.complete(v.uri, v.size_bytes, v.file_count, v.checksum, field=field)

    async def create_version(
        self,
        parent: str,
        version_id: str,
        given: dataset_pb2.DatasetVersion,
        request_id: str,
        creator: str,
    ) -> dataset_pb2.DatasetVersion:
        target = f"{parent}/versions/{version_id}"
        async with self._uow.reading() as s:  # fail fast before reading the data
            await family.get_parent(DATASETS, s, parent)
        facts = await self._facts(given, "dataset_version.uri")
        async with self._uow() as uow:
            s = uow.store
            earlier = await earlier_result(s, request_id, "CreateDatasetVersion", target)
            if earlier:
                return await self.version_in(s, earlier)
            ds = await family.get_parent(DATASETS, s, parent)
            created = await self._add_version(s, ds, version_id, given, creator, facts)
            await s.publish(REGISTERED, events_pb2.DatasetVersionCreated(dataset_version=created))
            await remember(s, request_id, "CreateDatasetVersion", target, created.name)
            await uow.commit()
        return created

    async def _add_version(
        self,
        s: Store,
        ds: Stored[dataset_pb2.Dataset],
        version_id: str,
        given: dataset_pb2.DatasetVersion,
        creator: str,
        facts: artifacts.Facts,
    ) -> dataset_pb2.DatasetVersion:
        check_same_workspace(given.source_job, ds.name, "dataset_version.source_job")
        name = await family.new_version_name(DATASETS, s, ds.name, version_id)
        now = utcnow()
        new = Version(
            name=name,
            uid=str(uuid.uuid4()),
            display_name=given.display_name,
            description=given.description,
            labels=dict(given.labels),
            uri=given.uri,
            size_bytes=facts.size_bytes,
            file_count=facts.file_count,
            checksum=facts.checksum,
            columns=list(given.columns),
            metadata=dict(given.metadata),
            state=Version.ACTIVE,
            source_job=given.source_job,
            creator=creator,
            create_time=ts(now),
            update_time=ts(now),
        )
        stored = await family.add_version(DATASETS, s, ds, new, now)
        if new.source_job:
            await recording.record_edge(
                s, graph.workspace_of(name) or "", new.source_job, graph.JOB, graph.PRODUCED,
                name, graph.DATASET_VERSION, origin=recording.EVENT, recorder=REGISTERED,
            )  # fmt: skip
        return stored.msg

    async def get_version(self, name: str) -> dataset_pb2.DatasetVersion:
        async with self._uow.reading() as s:
            return await self.version_in(s, name)

    async def version_in(self, s: Store, name: str) -> dataset_pb2.DatasetVersion:
        return (await self._stored_version(s, name)).msg

    async def _stored_version(self, s: Store, name: str) -> Stored[dataset_pb2.DatasetVersion]:
        if name.endswith("/versions/@latest"):
            ds = await s.datasets.get(dataset_of(name))
            if ds is None or not ds.msg.latest_version:
                raise NotFound(
                    "DATASET_VERSION_NOT_FOUND",
                    f"{dataset_of(name)} has no ACTIVE version",
                    dataset_version=name,
                )
            name = ds.msg.latest_version
        return await family.get_version(DATASETS, s, name)

    async def exists(self, s: Store, name: str) -> bool:
        try:
            await self._stored_version(s, name)
        except NotFound:
            return False
        return True

    async def list_versions(self, parent: str) -> list[dataset_pb2.DatasetVersion]:
        async with self._uow.reading() as s:
            await family.get_parent(DATASETS, s, parent)
            return [v.msg for v in await family.versions_of(DATASETS, s, parent)]

    async def update_version(
        self, given: dataset_pb2.DatasetVersion, fields: set[str]
    ) -> dataset_pb2.DatasetVersion:
        async with self._uow() as uow:
            v = await family.update_version(DATASETS, uow.store, given, fields)
            await uow.store.publish(family.event_of(DATASETS, "updated"), DATASETS.version_updated(v.msg))
            await uow.commit()
        return v.msg

    async def delete_version(self, name: str, etag: str) -> None:
        async with self._uow() as uow:
            v = await family.version_to_change(DATASETS, uow.store, name, etag)
            await family.drop_version(DATASETS, uow.store, v)
            await family.refresh_parent_of(DATASETS, uow.store, name)
            await uow.commit()

    async def change_state(self, name: str, etag: str, target: int) -> dataset_pb2.DatasetVersion:
        """Archive or unarchive."""
        state_name: Callable[[int], str] = Version.State.Name  # type: ignore[assignment]
        async with self._uow() as uow:
            v = await family.version_to_change(DATASETS, uow.store, name, etag)
            previous = await family.set_state(DATASETS, uow.store, v, target, state_name)
            await uow.store.publish(
                family.event_of(DATASETS, "state_changed"), DATASETS.state_changed(v.msg, previous)
            )
            await uow.commit()
        return v.msg
