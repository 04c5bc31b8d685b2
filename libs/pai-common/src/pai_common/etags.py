"""Etags (AIP-154): weak, from a row's version counter (and the identity of what the row holds), or
from the content itself where there is no counter; checked before a change."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pai_common.errors import Aborted


def etag_of(version: int, identity: str = "") -> str:
    """The etag of a resource whose row is at `version`: `W/"<version>"`, or `W/"<id>-<version>"`
    with the first 8 characters of `identity` (a uid) so that a resource deleted and created again
    under the same name never matches an etag of the one before."""
    return f'W/"{identity[:8]}-{version}"' if identity else f'W/"{version}"'


def content_etag(content: str) -> str:
    """The etag of a resource kept without a version counter: a digest of its content."""
    return 'W/"' + hashlib.sha256(content.encode()).hexdigest()[:16] + '"'


def check_etag(given: str, current: str, *, resource: str = "") -> None:
    """A stale `given` etag (when set) is ABORTED: the caller read an older version of `resource`.

    The current etag is not in the error: a client must read what changed before it writes again."""
    if given and given != current:
        what = resource or "the resource"
        raise Aborted("ETAG_MISMATCH", f"{what} changed since etag {given}; read it again", resource=resource)


class Versioned:
    """Mixed into domain records with a `name` and a row `version` (0: not stored yet): their etag,
    and the check of a caller's etag before a change."""

    if TYPE_CHECKING:  # a field or a property of the record; nothing here at run time, for dataclasses

        @property
        def name(self) -> str: ...

        @property
        def version(self) -> int: ...

    @property
    def etag(self) -> str:
        return etag_of(self.version)

    def check_etag(self, given: str) -> None:
        """ABORTED when `given` is set and is not the current etag."""
        check_etag(given, self.etag, resource=self.name)
