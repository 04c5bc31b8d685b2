"""What every stored dlc resource has: a name, a row version behind its etag, and the check of a
caller's etag before a change (AIP-154)."""

from __future__ import annotations

from pai_common import etags


class Versioned:
    """Mixed into the Job and the Sweep (dataclasses with `name` and `version`; version 0: not stored yet)."""

    name: str
    version: int

    @property
    def etag(self) -> str:
        return etags.etag_of(self.version)

    def check_etag(self, given: str) -> None:
        """ABORTED when `given` is set and is not the current etag."""
        etags.check_etag(given, self.etag, resource=self.name)
