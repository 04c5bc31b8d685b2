"""Etags (AIP-154) from a row's version counter: weak, `W/"<version>"`, and checked before a change."""

from __future__ import annotations

from pai_common.errors import Aborted


def etag_of(version: int) -> str:
    """The etag of a resource whose row is at `version`."""
    return f'W/"{version}"'


def check_etag(name: str, current: str, given: str) -> None:
    """A stale etag (`given`, when set) is ABORTED: the caller read an older version of `name`."""
    if given and given != current:
        raise Aborted("ETAG_MISMATCH", f"{name} changed since etag {given}; read it again", resource=name)
