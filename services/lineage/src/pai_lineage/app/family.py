"""What datasets and models have in common: a parent resource with immutable, archivable versions.

A `Family` names the tables, graph kind and events of one of them (its errors follow from its
subject: `DATASET_NOT_FOUND`, `MODEL_VERSION_ALREADY_EXISTS`, ...); the functions here are the
steps both use cases take the same way (each in the caller's transaction). What differs (a model's
aliases, a dataset's checksum rules) stays in `datasets.py`, `models.py` and `aliases.py`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from pai_common import fieldmask
from pai_common.clock import utcnow
from pai_common.errors import AlreadyExists, FailedPrecondition, NotFound
from pai_common.etags import check_etag
from pai_common.wire import ts
from pai_lineage.app import recording
from pai_lineage.db.store import Records, Store, Stored
from pai_lineage.domain import versions

P = TypeVar("P", bound=Message)  # the parent: Dataset or Model
V = TypeVar("V", bound=Message)  # its version: DatasetVersion or ModelVersion
ACTIVE = 1  # the ACTIVE value of both versions' State enums


@dataclass(frozen=True)
class Family(Generic[P, V]):
    parents: Callable[[Store], Records[P]]
    versions: Callable[[Store], Records[V]]
    kind: str  # the versions' graph kind
    updated: Callable[[P], Message]  # the parent's `...Updated` event
    deleted: Callable[[P], Message]  # and its `...Deleted` event
    version_updated: Callable[[V], Message]
    version_deleted: Callable[[V], Message]
    state_changed: Callable[[V, int], Message]
    attributes: Callable[[V], dict[str, str]]  # the version's graph node attributes
    subject: str  # `pai.lineage.<subject>.*` of the parent; versions are `<subject>_version`

    def parent_not_found(self, name: str) -> NotFound:
        return not_found(self.subject, name)

    def version_not_found(self, name: str) -> NotFound:
        return not_found(f"{self.subject}_version", name)

    def parent_exists(self, name: str) -> AlreadyExists:
        return already_exists(self.subject, name)

    def version_exists(self, name: str) -> AlreadyExists:
        return already_exists(f"{self.subject}_version", name)

    def children(self, s: Store, parent: str) -> dict[str, str]:
        """The key prefix of a parent's versions."""
        key = self.parents(s).key(parent)
        return {"workspace": key["workspace"], self.subject: key["id"]}


def not_found(what: str, name: str) -> NotFound:
    """`<WHAT>_NOT_FOUND` (`what`: dataset, dataset_version, model or model_version)."""
    return NotFound(f"{what.upper()}_NOT_FOUND", f"{name} does not exist", **_about(what, name))


def already_exists(what: str, name: str) -> AlreadyExists:
    return AlreadyExists(f"{what.upper()}_ALREADY_EXISTS", f"{name} already exists", **_about(what, name))


def _about(what: str, name: str) -> dict[str, Any]:
    """An error's metadata naming the resource it is about (`dataset_version=...`)."""
    return {what: name}


def parent_of(version_name: str) -> str:
    """`workspaces/w/datasets/d/versions/v` -> `workspaces/w/datasets/d` (models alike)."""
    return version_name.rsplit("/versions/", 1)[0]


async def get_parent(f: Family[P, V], s: Store, name: str) -> Stored[P]:
    found = await f.parents(s).get(name)
    if found is None:
        raise f.parent_not_found(name)
    return found


async def get_version(f: Family[P, V], s: Store, name: str) -> Stored[V]:
    found = await f.versions(s).get(name)
    if found is None:
        raise f.version_not_found(name)
    return found


async def version_to_change(f: Family[P, V], s: Store, name: str, etag: str) -> Stored[V]:
    """The version a change names, if the caller's etag (when given) is its current one."""
    v = await get_version(f, s, name)
    check_etag(etag, str(getattr(v.msg, "etag")), resource=name)  # noqa: B009
    return v


async def list_parents(f: Family[P, V], s: Store, workspace: str) -> list[P]:
    """Every parent in `workspaces/{w}`, by id."""
    return [p.msg for p in await f.parents(s).under({"workspace": workspace.split("/")[1]})]


async def versions_of(f: Family[P, V], s: Store, parent: str) -> list[Stored[V]]:
    """A parent's versions, newest first."""
    return await f.versions(s).under(f.children(s, parent), newest_first=True)


async def parent_to_delete(
    f: Family[P, V], s: Store, name: str, etag: str, force: bool
) -> tuple[Stored[P], list[Stored[V]]]:
    """The parent a Delete names, and its versions; while it has versions only `force` deletes it."""
    p = await get_parent(f, s, name)
    check_etag(etag, str(getattr(p.msg, "etag")), resource=name)  # noqa: B009
    children = await f.versions(s).under(f.children(s, name))
    if children and not force:
        raise FailedPrecondition(
            f"{f.subject.upper()}_HAS_VERSIONS",
            f"{name} has {len(children)} versions; delete them or set force",
            **_about(f.subject, name),
        )
    return p, children


async def delete_parent(f: Family[P, V], s: Store, p: Stored[P]) -> None:
    """Delete the parent (its versions dropped already), with its event."""
    await f.parents(s).delete(p.name)
    await s.publish(f"pai.lineage.{f.subject}.deleted", f.deleted(p.msg))


def shown_name(f: Family[P, V], v: V) -> str:
    """What a version's graph node is called: its display name, else `qa:1`."""
    name = str(getattr(v, "name"))  # noqa: B009
    return str(getattr(v, "display_name")) or recording.default_display_name(name, f.kind)  # noqa: B009


async def new_version_name(f: Family[P, V], s: Store, parent: str, chosen: str) -> str:
    """The name of a parent's next version: `chosen`, or one more than the highest numeric id."""
    ids = await f.versions(s).ids(f.children(s, parent))
    vid = chosen or versions.next_version_id(ids)
    name = f"{parent}/versions/{vid}"
    if vid in ids:
        raise f.version_exists(name)
    return name


async def add_version(f: Family[P, V], s: Store, p: Stored[P], v: V, now: dt.datetime) -> Stored[V]:
    """Store a new version, its graph node, and the parent's view of its versions."""
    stored = Stored(v, 0)
    await f.versions(s).insert(stored, now)
    await recording.put_node(
        s, stored.name, f.kind, display_name=shown_name(f, v), attributes=f.attributes(v), deleted=False
    )
    await refresh(f, s, p)
    return stored


async def update_parent(f: Family[P, V], s: Store, given: P, fields: set[str]) -> P:
    """An Update of the parent's masked fields, with its event."""
    p = await get_parent(f, s, str(getattr(given, "name")))  # noqa: B009
    check_etag(str(getattr(given, "etag")), str(getattr(p.msg, "etag")), resource=p.name)  # noqa: B009
    fieldmask.apply(p.msg, given, fields)
    getattr(p.msg, "update_time").CopyFrom(ts(utcnow()))  # noqa: B009
    await f.parents(s).save(p)
    await s.publish(f"pai.lineage.{f.subject}.updated", f.updated(p.msg))
    return p.msg


async def refresh(f: Family[P, V], s: Store, p: Stored[P]) -> None:
    """The parent's view of its versions: the newest ACTIVE one and how many there are."""
    every = await versions_of(f, s, p.name)
    latest = next((v.name for v in every if getattr(v.msg, "state") == ACTIVE), "")  # noqa: B009
    setattr(p.msg, "latest_version", latest)  # noqa: B010
    setattr(p.msg, "version_count", len(every))  # noqa: B010
    getattr(p.msg, "update_time").CopyFrom(ts(utcnow()))  # noqa: B009
    await f.parents(s).save(p)


async def refresh_parent_of(f: Family[P, V], s: Store, version_name: str) -> None:
    p = await f.parents(s).get(parent_of(version_name))
    if p is not None:
        await refresh(f, s, p)


async def update_version(f: Family[P, V], s: Store, given: V, fields: set[str]) -> Stored[V]:
    """An Update of a version's display name, description or labels (its node follows the name).
    The caller publishes the event, once the version is as it should be shown."""
    v = await version_to_change(f, s, str(getattr(given, "name")), str(getattr(given, "etag")))  # noqa: B009
    fieldmask.apply(v.msg, given, fields)
    getattr(v.msg, "update_time").CopyFrom(ts(utcnow()))  # noqa: B009
    await f.versions(s).save(v)
    if "display_name" in fields:
        await recording.put_node(s, v.name, f.kind, display_name=shown_name(f, v.msg))
    return v


async def drop_version(f: Family[P, V], s: Store, v: Stored[V]) -> None:
    """Delete a version's registration; its graph node stays, marked deleted."""
    await f.versions(s).delete(v.name)
    await recording.mark_deleted(s, v.name, f.kind)
    await s.publish(f"pai.lineage.{f.subject}_version.deleted", f.version_deleted(v.msg))


async def set_state(
    f: Family[P, V], s: Store, v: Stored[V], target: int, state_name: Callable[[int], str]
) -> int:
    """ACTIVE <-> ARCHIVED (ILLEGAL_STATE_TRANSITION otherwise), the node and the parent's latest
    version following; returns the previous state. The caller publishes the event."""
    previous = int(getattr(v.msg, "state"))  # noqa: B009
    versions.transition(state_name(previous), state_name(target), v.name)
    setattr(v.msg, "state", target)  # noqa: B010
    getattr(v.msg, "update_time").CopyFrom(ts(utcnow()))  # noqa: B009
    await f.versions(s).save(v)
    await recording.put_node(s, v.name, f.kind, attributes=f.attributes(v.msg))
    await refresh_parent_of(f, s, v.name)
    return previous


def event_of(f: Family[P, V], verb: str) -> str:
    """The subject of a version event: `pai.lineage.<subject>_version.<verb>`."""
    return f"pai.lineage.{f.subject}_version.{verb}"
