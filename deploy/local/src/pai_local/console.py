"""The supervisor's terminal: every line carries the name of whoever wrote it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

SUPERVISOR = "pai-local"


class Console:
    """Writes `name | text` lines, names padded so the columns line up."""

    def __init__(self, names: Iterable[str] = (), stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._width = max([len(SUPERVISOR), *(len(name) for name in names)])
        self._broken = False

    def line(self, name: str, text: str) -> None:
        """Write one line as `name`."""
        if self._broken:
            return
        try:
            self._stream.write(f"{name:<{self._width}} | {text}\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            # Nobody reads our stdout any more (`| head`, closed terminal): keep supervising.
            self._broken = True

    def say(self, text: str = "") -> None:
        """Write one line as the supervisor."""
        self.line(SUPERVISOR, text)
