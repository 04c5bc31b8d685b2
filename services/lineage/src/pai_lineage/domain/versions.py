"""Rules of datasets, models and their versions: version ids, states, aliases, immutability."""

from __future__ import annotations

from collections.abc import Iterable

from pai_common.errors import FailedPrecondition, bad_request

ACTIVE = "ACTIVE"
ARCHIVED = "ARCHIVED"
LATEST = "latest"
RESERVED_ALIASES = frozenset({LATEST})

# What an Update may change on a version; every other field is fixed at registration.
VERSION_MUTABLE = ("display_name", "description", "labels")


def next_version_id(existing: Iterable[str]) -> str:
    """One more than the highest numeric id so far (`1` for the first); chosen ids like `2024-06` do
    not count."""
    numbers = [int(v) for v in existing if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def transition(current: str, target: str, name: str) -> str:
    """Archive (ACTIVE -> ARCHIVED) or unarchive (ARCHIVED -> ACTIVE); the previous state is returned."""
    allowed = {(ACTIVE, ARCHIVED), (ARCHIVED, ACTIVE)}
    if (current, target) not in allowed:
        raise FailedPrecondition(
            "ILLEGAL_STATE_TRANSITION",
            f"{name} is {current}; it cannot become {target}",
            resource=name,
            state=current,
        )
    return current


def check_alias(alias: str) -> None:
    """`latest` names the newest ACTIVE version and cannot be set."""
    if alias in RESERVED_ALIASES:
        raise bad_request("alias", f"alias {alias!r} is reserved", "ALIAS_RESERVED", alias=alias)


def check_version_mask(paths: Iterable[str], known: Iterable[str], resource: str) -> set[str]:
    """The fields an UpdateXVersion may change: the mask's, or all mutable ones when empty. Naming an
    immutable field is VERSION_IMMUTABLE; naming no field of the version at all is INVALID_UPDATE_MASK."""
    wanted = [p for p in paths]
    if not wanted or wanted == ["*"]:
        return set(VERSION_MUTABLE)
    known_set = set(known)
    unknown = [p for p in wanted if p not in known_set and p not in VERSION_MUTABLE]
    if unknown:
        message = f"unknown or output-only fields: {', '.join(unknown)}"
        raise bad_request("update_mask", message, "INVALID_UPDATE_MASK")
    fixed = [p for p in wanted if p not in VERSION_MUTABLE]
    if fixed:
        message = f"{', '.join(fixed)} cannot change once registered; register a new version"
        raise bad_request("update_mask", message, "VERSION_IMMUTABLE", resource=resource)
    return set(wanted)


def aliases_of(aliases: dict[str, str], version_id: str) -> list[str]:
    """The aliases that point at `version_id`, sorted."""
    return sorted(a for a, v in aliases.items() if v == version_id)
