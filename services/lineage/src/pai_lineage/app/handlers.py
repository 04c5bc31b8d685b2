"""What lineage does with dlc's events: jobs become nodes, their data sources CONSUMED_BY edges, and a
succeeded job's output model a new model version.

Each handler writes in the inbox transaction it is given, so the event is marked handled exactly when
its effects commit. Redelivery of the same event is dropped by the inbox; a second event about the
same job (another id) finds the version by its request id (the job's uid) and registers nothing.
A permanent problem (a missing model directory, an unknown dataset) is logged and skipped: an event
that can never succeed must not block the ones behind it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from pai.dlc.v1 import events_pb2 as dlc_events
from pai.dlc.v1 import job_pb2, job_spec_pb2
from pai.lineage.v1 import events_pb2, model_pb2
from pai_common.consumer import Event
from pai_common.errors import Aborted, DomainError, Unavailable
from pai_lineage.app import artifacts, recording
from pai_lineage.app.datasets import Datasets
from pai_lineage.app.models import Models
from pai_lineage.db.store import Store
from pai_lineage.domain import graph

log = logging.getLogger(__name__)
SUBJECTS = ["pai.dlc.job.>"]
MODEL = re.compile(r"^workspaces/[a-z]([a-z0-9-]{0,61}[a-z0-9])?/models/[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
Job = job_pb2.Job


def registrable(event: dlc_events.JobSucceeded) -> bool:
    """Whether the event asks for a model lineage can hold: `workspaces/{w}/models/{m}` of the job's
    own workspace, with an artifact to register."""
    return bool(
        MODEL.match(event.model)
        and graph.workspace_of(event.model) == graph.workspace_of(event.job.name)
        and event.model_artifact_uri
    )


def job_time(job: job_pb2.Job) -> dt.datetime | None:
    return job.update_time.ToDatetime(dt.UTC) if job.HasField("update_time") else None


class JobEvents:
    """The handler of lineage's consumer (durable `lineage`, subjects `pai.dlc.job.>`)."""

    def __init__(self, datasets: Datasets, models: Models) -> None:
        self.datasets = datasets
        self.models = models

    async def handle(self, event: Event, conn: AsyncConnection) -> None:
        message: Message | None = event.message
        store = Store(conn)
        verb = event.subject.rsplit(".", 1)[-1]
        if verb == "created" and isinstance(message, dlc_events.JobCreated):
            await self.job_created(store, message.job, event.subject)
        elif verb == "state_changed" and isinstance(message, dlc_events.JobStateChanged):
            await self.put_job(store, message.job)
        elif verb == "succeeded" and isinstance(message, dlc_events.JobSucceeded):
            await self.put_job(store, message.job)
            await self.job_succeeded(store, message, event.prepared)
        elif verb == "deleted" and isinstance(message, dlc_events.JobDeleted):
            await recording.put_node(store, message.job.name, graph.JOB, deleted=True)

    async def put_job(self, store: Store, job: job_pb2.Job) -> bool:
        """The JOB node from a snapshot, unless a newer one was applied already."""
        ws = recording.node_workspace(job.name, "")
        node = await store.node(ws, job.name)
        seen = job_time(job)
        if (
            node is not None
            and node.observed_time is not None
            and seen is not None
            and seen < node.observed_time
        ):
            return False
        state = Job.State.Name(job.state)
        await recording.put_node(
            store, job.name, graph.JOB,
            display_name=f"{job.name.rsplit('/', 1)[1]} ({state})",
            attributes={
                "job_kind": job_spec_pb2.JobSpec.Kind.Name(job.spec.kind),
                "state": state,
                "uid": job.uid,
                "creator": job.creator,
            },
            observed=seen,
        )  # fmt: skip
        return True

    async def job_created(self, store: Store, job: job_pb2.Job, subject: str) -> None:
        await self.put_job(store, job)
        ws = graph.workspace_of(job.name) or ""
        when = job.create_time.ToDatetime(dt.UTC) if job.HasField("create_time") else None
        for i, source in enumerate(job.spec.data_sources):
            attributes = {"index": str(i)}
            if source.env_var:
                attributes["env_var"] = source.env_var
            if source.mount_path:
                attributes["mount_path"] = source.mount_path
            which = source.WhichOneof("source")
            if which == "dataset_version":
                name = await self._dataset_version(store, source.dataset_version)
                if name is None:
                    log.warning("job %s: data source %s is no dataset version lineage knows; skipped",
                                job.name, source.dataset_version)  # fmt: skip
                    continue
                kind = graph.DATASET_VERSION
            elif which == "uri":
                name, kind = source.uri, graph.EXTERNAL
                await recording.ensure_node(store, name, kind, ws)
            else:
                continue
            await recording.record_edge(
                store, ws, name, kind, graph.CONSUMED_BY, job.name, graph.JOB,
                origin=recording.EVENT, recorder=subject, attributes=attributes, event_time=when,
            )  # fmt: skip

    async def _dataset_version(self, store: Store, name: str) -> str | None:
        """The canonical name of a job's dataset version (`@latest` resolved), if it names one."""
        if name.endswith("/versions/@latest"):
            try:
                return (await self.datasets.version_in(store, name)).name
            except DomainError:
                return None
        return name if graph.NAME_PATTERNS[graph.DATASET_VERSION].match(name) else None

    async def prepare(self, event: Event) -> artifacts.Facts | None:
        """Before the handler's transaction: size and checksum of a succeeded job's model directory.
        Hashing a large model inside the transaction would hold lineage's write lock (SQLite) for as
        long as it reads."""
        message = event.message
        if not isinstance(message, dlc_events.JobSucceeded) or not registrable(message):
            return None
        try:
            return await self.models.files.complete(
                message.model_artifact_uri, 0, 0, "", field="model_artifact_uri", missing_ok=True
            )
        except DomainError as error:  # e.g. an unsupported URI: the handler logs and skips it
            log.warning("job %s: cannot inspect %s: %s", message.job.name, message.model_artifact_uri, error)
            return None

    async def job_succeeded(
        self, store: Store, event: dlc_events.JobSucceeded, facts: artifacts.Facts | None
    ) -> None:
        """Register the job's output as the next version of its model, all or nothing.

        A refusal that will never change (a malformed or foreign model name, a missing directory, a
        request id used for something else) is logged and the event is done; a conflict with a
        concurrent write (ABORTED) or an unavailable database is raised, so the event comes again.
        The savepoint keeps a refused registration from leaving half of itself behind.
        """
        if not event.model:
            return
        job = event.job
        try:
            async with store.conn.begin_nested():
                await self._register(store, event, facts)
        except (Aborted, Unavailable):
            raise
        except DomainError as error:
            log.error("job %s: could not register a version of %s: %s (%s)",
                      job.name, event.model, error.message, error.reason)  # fmt: skip

    async def _register(
        self, store: Store, event: dlc_events.JobSucceeded, facts: artifacts.Facts | None
    ) -> None:
        job = event.job
        if not registrable(event):
            log.error("job %s: output model %r is not a model of its workspace, or there is no artifact",
                      job.name, event.model)  # fmt: skip
            return
        datasets: list[str] = []
        for source in job.spec.data_sources:
            if source.WhichOneof("source") != "dataset_version":
                continue
            name = await self._dataset_version(store, source.dataset_version)
            if (
                name is not None
                and name not in datasets
                and graph.workspace_of(name) == graph.workspace_of(job.name)
                and await self.datasets.exists(store, name)
            ):
                datasets.append(name)
        given = model_pb2.ModelVersion(
            artifact_uri=event.model_artifact_uri,
            metrics=dict(event.final_metrics),
            params=dict(job.spec.hyperparameters),
            source_job=job.name,
            training_datasets=datasets,
        )
        if facts is None:  # no prepare step ran (a consumer built without it)
            facts = await self.models.facts(given, "model_artifact_uri", missing_ok=True)
        if facts.size_bytes == 0 and not facts.checksum:
            log.warning("job %s: nothing at %s; registered with size 0", job.name, event.model_artifact_uri)
        if await store.models.get(event.model) is None:
            framework = (
                model_pb2.PYTORCH
                if job.spec.kind in (job_spec_pb2.JobSpec.PYTORCH, job_spec_pb2.JobSpec.KIND_UNSPECIFIED)
                else model_pb2.MODEL_FRAMEWORK_UNSPECIFIED
            )
            model = model_pb2.Model(framework=framework)
            m = await self.models.insert_model(store, event.model, model, job.creator)
            await store.publish("pai.lineage.model.created", events_pb2.ModelCreated(model=m.msg))
        # keyed by the job's uid, in a namespace API callers' ids do not share by accident
        request_id = f"job:{job.uid}"
        version = await self.models.register(store, event.model, "", given, request_id, job.creator, facts)
        log.info("job %s registered %s", job.name, version.name)
