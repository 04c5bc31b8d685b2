"""A model's aliases (`production` -> a version id) in the caller's transaction: setting and removing
them, `@alias` and `@latest` resolved, the aliases a version shows, the refusal to archive or delete
a version an alias points at, and the `ModelAliasChanged` event of every set, move and removal.
"""

from __future__ import annotations

from pai.lineage.v1 import events_pb2, model_pb2
from pai_common.clock import utcnow
from pai_common.errors import FailedPrecondition, NotFound
from pai_common.etags import check_etag
from pai_common.wire import ts
from pai_lineage.app import family
from pai_lineage.db.store import Store, Stored
from pai_lineage.domain import versions

CHANGED = "pai.lineage.model.alias_changed"


def _alias_not_found(model: str, alias: str) -> NotFound:
    return NotFound("ALIAS_NOT_FOUND", f"{model} has no alias {alias!r}", model=model, alias=alias)


async def announce(
    s: Store, m: model_pb2.Model, alias: str, version_id: str, previous_version_id: str
) -> None:
    """The event of an alias set (`version_id`), moved, or removed (no `version_id`)."""
    await s.publish(
        CHANGED,
        events_pb2.ModelAliasChanged(
            model=m, alias=alias, version_id=version_id, previous_version_id=previous_version_id
        ),
    )


async def set_alias(s: Store, name: str, alias: str, version_id: str, etag: str) -> model_pb2.Model:
    """Point `alias` of model `name` at an ACTIVE version; setting it where it points changes nothing."""
    m = await _model(s, name, etag)
    target = f"{name}/versions/{version_id}"
    v = await s.model_versions.get(target)
    if v is None:
        raise family.not_found("model_version", target)
    if v.msg.state != model_pb2.ModelVersion.ACTIVE:
        raise FailedPrecondition(
            "VERSION_ARCHIVED", f"{target} is ARCHIVED; unarchive it first", model_version=target
        )
    previous = m.msg.aliases.get(alias, "")
    if previous == version_id:
        return m.msg
    m.msg.aliases[alias] = version_id
    m.msg.update_time.CopyFrom(ts(utcnow()))
    await s.models.save(m)
    await announce(s, m.msg, alias, version_id, previous)
    return m.msg


async def delete_alias(s: Store, name: str, alias: str, etag: str) -> model_pb2.Model:
    m = await _model(s, name, etag)
    if alias not in m.msg.aliases:
        raise _alias_not_found(name, alias)
    previous = m.msg.aliases.pop(alias)
    m.msg.update_time.CopyFrom(ts(utcnow()))
    await s.models.save(m)
    await announce(s, m.msg, alias, "", previous)
    return m.msg


async def _model(s: Store, name: str, etag: str) -> Stored[model_pb2.Model]:
    m = await s.models.get(name)
    if m is None:
        raise family.not_found("model", name)
    check_etag(etag, m.msg.etag, resource=name)
    return m


async def resolve(s: Store, name: str) -> str:
    """The canonical name of `.../versions/{id}`, `@latest` or `@{alias}`."""
    model, _, ref = name.rpartition("/versions/")
    if not ref.startswith("@"):
        return name
    m = await s.models.get(model)
    if ref == "@latest":
        if m is None or not m.msg.latest_version:
            raise NotFound("MODEL_VERSION_NOT_FOUND", f"{model} has no ACTIVE version", model_version=name)
        return m.msg.latest_version
    if m is None:
        raise family.not_found("model", model)
    alias = ref[1:]
    if alias not in m.msg.aliases:
        raise _alias_not_found(model, alias)
    return f"{model}/versions/{m.msg.aliases[alias]}"


def shown(m: model_pb2.Model, v: model_pb2.ModelVersion) -> model_pb2.ModelVersion:
    """`v` with the aliases of `m` that point at it (and no others)."""
    del v.aliases[:]
    v.aliases.extend(versions.aliases_of(dict(m.aliases), v.name.rsplit("/", 1)[1]))
    return v


async def with_aliases(s: Store, v: model_pb2.ModelVersion) -> model_pb2.ModelVersion:
    """`v` with the aliases its model has for it now."""
    m = await s.models.get(family.parent_of(v.name))
    if m is None:
        del v.aliases[:]
        return v
    return shown(m.msg, v)


async def check_none_at(s: Store, name: str) -> None:
    """A version an alias points at cannot be archived or deleted (VERSION_HAS_ALIASES)."""
    m = await s.models.get(family.parent_of(name))
    if m is None:
        return
    held = versions.aliases_of(dict(m.msg.aliases), name.rsplit("/", 1)[1])
    if held:
        raise FailedPrecondition(
            "VERSION_HAS_ALIASES",
            f"{name} is {', '.join('@' + a for a in held)}; move or delete the aliases first",
            model_version=name,
            aliases=",".join(held),
        )
