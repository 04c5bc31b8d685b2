"""Logging a failure that repeats: once with its traceback, then quietly until it heals.

A loop that retries (a relay, a consumer, a controller pass) would otherwise write the same ERROR and
traceback every second for as long as a dependency is down, burying everything else.
"""

from __future__ import annotations

import logging
import time


class Streak:
    """A run of failures of one repeating action: the first is logged as an ERROR with its traceback,
    the rest at DEBUG, and the end of the run once at WARNING (how long and how many)."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._count = 0
        self._since = 0.0

    def failed(self, error: BaseException) -> None:
        """Call in the `except` block of a failed try."""
        self._count += 1
        if self._count == 1:
            self._since = time.monotonic()
            self._log.error("%s failed: %s", self._what, error, exc_info=error)
        else:
            self._log.debug("%s failed again (%d in a row): %s", self._what, self._count, error)

    def ended(self) -> None:
        """Call after a try that succeeded; says so once if failures came before."""
        if self._count:
            seconds = time.monotonic() - self._since
            self._log.warning("%s works again after %d failures in %.0f s", self._what, self._count, seconds)
            self._count = 0
