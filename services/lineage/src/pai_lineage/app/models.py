"""The model registry: models, their immutable versions and aliases, behind ModelRegistryService."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from pai.lineage.v1 import events_pb2, model_pb2
from pai_common.clock import utcnow
from pai_common.errors import NotFound, bad_request
from pai_common.wire import ts
from pai_lineage.app import aliases, artifacts, family, recording
from pai_lineage.app.datasets import Datasets, check_same_workspace
from pai_lineage.app.idempotency import earlier_result, remember
from pai_lineage.db.store import Store, Stored
from pai_lineage.db.uow import UnitOfWorkFactory
from pai_lineage.domain import graph, versions

Model = model_pb2.Model
Version = model_pb2.ModelVersion
MODEL_FIELDS = ("display_name", "description", "labels", "task", "framework")
REGISTERED = "pai.lineage.model_version.created"


def node_attributes(v: model_pb2.ModelVersion) -> dict[str, str]:
    out = {
        "uri": v.artifact_uri,
        "state": Version.State.Name(v.state),
        "framework": model_pb2.ModelFramework.Name(v.framework),
    }
    for key, value in sorted(v.metrics.items())[:60]:
        out[f"metric.{key}"] = repr(value)
    return out


MODELS: family.Family[model_pb2.Model, model_pb2.ModelVersion] = family.Family(
    parents=lambda s: s.models,
    versions=lambda s: s.model_versions,
    kind=graph.MODEL_VERSION,
    updated=lambda m: events_pb2.ModelUpdated(model=m),
    deleted=lambda m: events_pb2.ModelDeleted(model=m),
    version_updated=lambda v: events_pb2.ModelVersionUpdated(model_version=v),
    version_deleted=lambda v: events_pb2.ModelVersionDeleted(model_version=v),
    state_changed=lambda v, previous: events_pb2.ModelVersionStateChanged(
        model_version=v,
        previous_state=previous,  # type: ignore[arg-type]
    ),
    attributes=node_attributes,
    subject="model",
)


class Models:
    """Every change in one transaction with its events (and graph nodes and edges)."""

    def __init__(self, uow: UnitOfWorkFactory, datasets: Datasets) -> None:
        self._uow = uow
        self.datasets = datasets
        self.files = datasets.files

    # ---- models --------------------------------------------------------------------------------

    async def create(
        self,
        parent: str,
        model_id: str,
        given: model_pb2.Model,
        request_id: str,
        creator: str,
        initial: model_pb2.ModelVersion | None,
    ) -> model_pb2.Model:
        name = f"{parent}/models/{model_id}"
        facts = await self.facts(initial, "initial_version.artifact_uri") if initial is not None else None
        async with self._uow() as uow:
            s = uow.store
            earlier = await earlier_result(s, request_id, "CreateModel", name)
            if earlier:
                return await self._get(s, earlier)
            m = await self.insert_model(s, name, given, creator)
            created = None
            if initial is not None and facts is not None:
                created = await self._add_version(s, m, "1", initial, creator, facts)
            await s.publish("pai.lineage.model.created", events_pb2.ModelCreated(model=m.msg))
            if created is not None:
                await s.publish(REGISTERED, events_pb2.ModelVersionCreated(model_version=created))
            await remember(s, request_id, "CreateModel", name, name)
            await uow.commit()
        return m.msg

    async def insert_model(
        self, s: Store, name: str, given: model_pb2.Model, creator: str
    ) -> Stored[model_pb2.Model]:
        if await s.models.get(name) is not None:
            raise MODELS.parent_exists(name)
        now = utcnow()
        new = Model(
            name=name,
            uid=str(uuid.uuid4()),
            display_name=given.display_name,
            description=given.description,
            labels=dict(given.labels),
            task=given.task,
            framework=given.framework,
            creator=creator,
            create_time=ts(now),
            update_time=ts(now),
        )
        m = Stored(new, 0)
        await s.models.insert(m, now)
        return m

    async def get(self, name: str) -> model_pb2.Model:
        async with self._uow.reading() as s:
            return await self._get(s, name)

    async def _get(self, s: Store, name: str) -> model_pb2.Model:
        return (await family.get_parent(MODELS, s, name)).msg

    async def list_models(self, parent: str) -> list[model_pb2.Model]:
        async with self._uow.reading() as s:
            return await family.list_parents(MODELS, s, parent)

    async def update(self, given: model_pb2.Model, fields: set[str]) -> model_pb2.Model:
        async with self._uow() as uow:
            updated = await family.update_parent(MODELS, uow.store, given, fields)
            await uow.commit()
        return updated

    async def delete(self, name: str, etag: str, force: bool) -> None:
        async with self._uow() as uow:
            s = uow.store
            m, children = await family.parent_to_delete(MODELS, s, name, etag, force)
            gone = dict(m.msg.aliases)
            for v in children:  # the versions as they were, aliases included
                aliases.shown(m.msg, v.msg)
                await family.drop_version(MODELS, s, v)
            # a service following an alias learns that it is gone, as from DeleteModelAlias
            m.msg.aliases.clear()
            for alias, previous in sorted(gone.items()):
                await aliases.announce(s, m.msg, alias, "", previous)
            await family.delete_parent(MODELS, s, m)
            await uow.commit()

    # ---- aliases -------------------------------------------------------------------------------

    async def set_alias(self, name: str, alias: str, version_id: str, etag: str) -> model_pb2.Model:
        versions.check_alias(alias)
        async with self._uow() as uow:
            m = await aliases.set_alias(uow.store, name, alias, version_id, etag)
            await uow.commit()
        return m

    async def delete_alias(self, name: str, alias: str, etag: str) -> model_pb2.Model:
        async with self._uow() as uow:
            m = await aliases.delete_alias(uow.store, name, alias, etag)
            await uow.commit()
        return m

    # ---- versions ------------------------------------------------------------------------------

    async def facts(
        self, v: model_pb2.ModelVersion, field: str, *, missing_ok: bool = False
    ) -> artifacts.Facts:
        if not v.artifact_uri:
            raise bad_request(field, "artifact_uri is required")
        return await self.files.complete(
            v.artifact_uri, v.size_bytes, 0, v.checksum, field=field, missing_ok=missing_ok
        )

    async def create_version(
        self,
        parent: str,
        version_id: str,
        given: model_pb2.ModelVersion,
        request_id: str,
        creator: str,
    ) -> model_pb2.ModelVersion:
        async with self._uow.reading() as s:  # fail fast before reading the artifact
            await family.get_parent(MODELS, s, parent)
        facts = await self.facts(given, "model_version.artifact_uri")
        async with self._uow() as uow:
            created = await self.register(uow.store, parent, version_id, given, request_id, creator, facts)
            await uow.commit()
        return created

    async def register(
        self,
        s: Store,
        parent: str,
        version_id: str,
        given: model_pb2.ModelVersion,
        request_id: str,
        creator: str,
        facts: artifacts.Facts,
    ) -> model_pb2.ModelVersion:
        """Register a version in the caller's transaction (the API's, or an event handler's)."""
        target = f"{parent}/versions/{version_id}"
        earlier = await earlier_result(s, request_id, "CreateModelVersion", target)
        if earlier:
            return await self._get_version(s, earlier)
        m = await family.get_parent(MODELS, s, parent)
        created = await self._add_version(s, m, version_id, given, creator, facts)
        await s.publish(REGISTERED, events_pb2.ModelVersionCreated(model_version=created))
        await remember(s, request_id, "CreateModelVersion", target, created.name)
        return created

    async def _add_version(
        self,
        s: Store,
        m: Stored[model_pb2.Model],
        version_id: str,
        given: model_pb2.ModelVersion,
        creator: str,
        facts: artifacts.Facts,
    ) -> model_pb2.ModelVersion:
        check_same_workspace(given.source_job, m.name, "model_version.source_job")
        check_same_workspace(given.base_model_version, m.name, "model_version.base_model_version")
        for i, ds in enumerate(given.training_datasets):
            check_same_workspace(ds, m.name, f"model_version.training_datasets[{i}]")
            if not await self.datasets.exists(s, ds):
                raise NotFound(
                    "DATASET_VERSION_NOT_FOUND",
                    f"training_datasets[{i}]: {ds} does not exist",
                    dataset_version=ds,
                )
        if given.base_model_version:
            await family.get_version(MODELS, s, given.base_model_version)
        name = await family.new_version_name(MODELS, s, m.name, version_id)
        now = utcnow()
        new = Version(
            name=name,
            uid=str(uuid.uuid4()),
            display_name=given.display_name,
            description=given.description,
            labels=dict(given.labels),
            artifact_uri=given.artifact_uri,
            framework=given.framework or m.msg.framework,
            format=given.format,
            size_bytes=facts.size_bytes,
            checksum=facts.checksum,
            metrics=dict(given.metrics),
            params=dict(given.params),
            source_job=given.source_job,
            training_datasets=list(given.training_datasets),
            base_model_version=given.base_model_version,
            state=Version.ACTIVE,
            creator=creator,
            create_time=ts(now),
            update_time=ts(now),
        )
        if given.HasField("signature"):
            new.signature.CopyFrom(given.signature)
        stored = await family.add_version(MODELS, s, m, new, now)
        await self._record_edges(s, new)
        return stored.msg

    async def _record_edges(self, s: Store, v: model_pb2.ModelVersion) -> None:
        """The version's own lineage: the job that produced it, what it was trained on or made from."""
        mv = graph.MODEL_VERSION
        ws = graph.workspace_of(v.name) or ""

        async def edge(source: str, source_kind: str, type_: str, target: str, target_kind: str) -> None:
            await recording.record_edge(
                s, ws, source, source_kind, type_, target, target_kind,
                origin=recording.EVENT, recorder=REGISTERED,
            )  # fmt: skip

        if v.source_job:
            await edge(v.source_job, graph.JOB, graph.PRODUCED, v.name, mv)
        for ds in v.training_datasets:
            if v.source_job:
                await edge(ds, graph.DATASET_VERSION, graph.CONSUMED_BY, v.source_job, graph.JOB)
            else:
                await edge(ds, graph.DATASET_VERSION, graph.DERIVED_INTO, v.name, mv)
        if v.base_model_version:
            await edge(v.base_model_version, mv, graph.DERIVED_INTO, v.name, mv)

    async def get_version(self, name: str) -> model_pb2.ModelVersion:
        async with self._uow.reading() as s:
            return await self._get_version(s, name)

    async def _get_version(self, s: Store, name: str) -> model_pb2.ModelVersion:
        found = await family.get_version(MODELS, s, await aliases.resolve(s, name))
        return await aliases.with_aliases(s, found.msg)

    async def list_versions(self, parent: str) -> list[model_pb2.ModelVersion]:
        async with self._uow.reading() as s:
            m = await family.get_parent(MODELS, s, parent)
            return [aliases.shown(m.msg, v.msg) for v in await family.versions_of(MODELS, s, parent)]

    async def update_version(self, given: model_pb2.ModelVersion, fields: set[str]) -> model_pb2.ModelVersion:
        async with self._uow() as uow:
            v = await family.update_version(MODELS, uow.store, given, fields)
            await aliases.with_aliases(uow.store, v.msg)
            await uow.store.publish(family.event_of(MODELS, "updated"), MODELS.version_updated(v.msg))
            await uow.commit()
        return v.msg

    async def delete_version(self, name: str, etag: str) -> None:
        async with self._uow() as uow:
            v = await family.version_to_change(MODELS, uow.store, name, etag)
            await aliases.check_none_at(uow.store, name)
            await family.drop_version(MODELS, uow.store, v)
            await family.refresh_parent_of(MODELS, uow.store, name)
            await uow.commit()

    async def change_state(self, name: str, etag: str, target: int) -> model_pb2.ModelVersion:
        """Archive (refused while an alias points at the version) or unarchive."""
        state_name: Callable[[int], str] = Version.State.Name  # type: ignore[assignment]
        async with self._uow() as uow:
            s = uow.store
            v = await family.version_to_change(MODELS, s, name, etag)
            if target == Version.ARCHIVED and v.msg.state == Version.ACTIVE:
                await aliases.check_none_at(s, name)
            previous = await family.set_state(MODELS, s, v, target, state_name)
            await aliases.with_aliases(s, v.msg)
            await s.publish(family.event_of(MODELS, "state_changed"), MODELS.state_changed(v.msg, previous))
            await uow.commit()
        return v.msg
