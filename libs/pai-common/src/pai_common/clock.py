"""The one clock: timezone-aware UTC now (plain Python, so domain code may use it)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, timezone-aware (UTC)."""
    return dt.datetime.now(dt.UTC)
