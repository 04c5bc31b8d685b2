"""Following a job or a sweep until it ends (`--wait`, `pai job wait`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from pai_cli.commands.common import Context
from pai_cli.errors import ApiError
from pai_cli.output import Column

M = TypeVar("M", bound=Message)
UNREACHABLE_PATIENCE = 60.0  # seconds `--wait` rides out an unreachable dlc (a restart) before giving up


def follow(
    ctx: Context,
    read: Callable[[], M],
    line: Callable[[M], str],
    done: Callable[[M], bool | None],
    columns: Sequence[Column],
) -> int:
    """Poll `read()` until `done` says how it ended (True: succeeded); each new `line` of progress
    goes to stderr, the result to stdout; exit 0 on success, 1 otherwise. dlc being unreachable
    (a restart mid-run) is ridden out for up to a minute."""
    seen = ""
    unreachable_since: float | None = None
    while True:
        try:
            current = read()
        except ApiError as e:
            if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            clock = time.monotonic()
            unreachable_since = unreachable_since or clock
            if clock - unreachable_since > UNREACHABLE_PATIENCE:
                raise
            ctx.output.note(f"(dlc unreachable, retrying: {e.message})")
            time.sleep(1.0)
            continue
        unreachable_since = None
        if (progress := line(current)) != seen:
            ctx.output.note(progress)
            seen = progress
        outcome = done(current)
        if outcome is not None:
            ctx.output.resource(current, columns)
            return 0 if outcome else 1
        time.sleep(0.5)
