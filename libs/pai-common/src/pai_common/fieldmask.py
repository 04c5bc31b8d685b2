"""Update masks (AIP-134): which fields an Update may change."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.message import Message

from pai_common.errors import bad_request


def paths(
    mask_paths: Sequence[str], allowed: Iterable[str], default: Iterable[str] | None = None
) -> set[str]:
    """The fields to update: the mask's paths, each checked.

    An empty mask means `default` (every allowed field unless given): sensitive fields can be
    left out of the default so that they change only when named.
    """
    allowed_set = set(allowed)
    if not mask_paths:
        return set(default) if default is not None else allowed_set
    if list(mask_paths) == ["*"]:
        return allowed_set
    unknown = [p for p in mask_paths if p not in allowed_set]
    if unknown:
        message = f"cannot update {', '.join(unknown)}; updatable: {', '.join(sorted(allowed_set))}"
        raise bad_request("update_mask", message, "INVALID_UPDATE_MASK")
    return set(mask_paths)


def apply(target: Message, given: Message, fields: Iterable[str]) -> None:
    """Copy the named top-level fields of `given` onto `target` (an Update after `paths`): maps and
    repeated fields are replaced whole, messages copied, scalars set."""
    for name in fields:
        descriptor = target.DESCRIPTOR.fields_by_name[name]
        value = getattr(given, name)
        if _is_map(descriptor):
            field = getattr(target, name)
            field.clear()
            field.update(value)
        elif descriptor.is_repeated:
            del getattr(target, name)[:]
            getattr(target, name).extend(value)
        elif descriptor.message_type is not None:
            if given.HasField(name):
                getattr(target, name).CopyFrom(value)
            else:
                target.ClearField(name)
        else:
            setattr(target, name, value)


DESCRIPTIVE = ("display_name", "description", "labels")


def assign(target: object, given: Message, fields: Iterable[str], names: Iterable[str] = DESCRIPTIVE) -> None:
    """Set each of `names` that an Update names in `fields` on a domain object from the request's
    message (an Update after `paths`): maps become dicts, repeated fields lists, scalars as they are."""
    chosen = set(fields)
    for name in names:
        if name not in chosen:
            continue
        descriptor = given.DESCRIPTOR.fields_by_name[name]
        value = getattr(given, name)
        if _is_map(descriptor):
            value = dict(value)
        elif descriptor.is_repeated:
            value = list(value)
        setattr(target, name, value)


def _is_map(descriptor: Any) -> bool:
    """Whether a field descriptor (of the pure-Python or the upb protobuf) is a map."""
    return descriptor.message_type is not None and bool(descriptor.message_type.GetOptions().map_entry)
