"""The per-replica log file: what a replica printed, in order, with when and on which stream.

One record per line, `<unix time in ns> <O|E|S> <text>\\n`: O is the command's stdout, E its stderr,
S a line the replica's supervisor wrote about the process ("started pid 123: ...", "exited with code
1"). The text never contains a newline: it is one line of output without its newline, a piece of at
most `MAX_TEXT_BYTES` of a longer line, or the last unterminated line at the end of the output;
invalid UTF-8 is replaced. Lines are appended whole (one `write` each, to a file opened with
O_APPEND), so a reader that keeps the byte offset of the next record can follow the file; a last line
without its newline is still being written and is left for the next read.

The writer is `pai_runtime.supervisor`, which cannot import this module (it runs isolated, on the
standard library only), so it repeats the few constants below; the tests check that they agree.
Readers are the owners (dlc's log API and metrics, the hang detector) and the backends (the tail of
stderr in a failure's details).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

MAX_TEXT_BYTES = 64 * 1024  # longer lines are split into several records
TAG_STREAMS = {b"O": "stdout", b"E": "stderr", b"S": "system"}
STREAM_TAGS = {stream: tag.decode() for tag, stream in TAG_STREAMS.items()}

_READ_BLOCK = 1024 * 1024  # forward reads
_TAIL_BLOCK = 64 * 1024  # backward reads


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line of a replica's log; `next_offset` is where a follower reads next."""

    offset: int  # byte offset of the record's line in the file
    next_offset: int  # byte offset just after its newline
    time_ns: int
    stream: str  # "stdout", "stderr" or "system"
    text: str


def format_record(time_ns: int, stream: str, text: str) -> bytes:
    """The line for one record (for tests and tools; the supervisor has its own copy)."""
    if "\n" in text:
        raise ValueError("a log record's text cannot contain a newline")
    return f"{time_ns} {STREAM_TAGS[stream]} {text}\n".encode(errors="replace")


def read_records(
    path: str | os.PathLike[str], offset: int = 0, max_records: int | None = None
) -> list[LogRecord]:
    """The complete records from byte `offset` on (at most `max_records`); [] if the file is missing.

    A last line without its newline is not returned: continue from the last record's `next_offset`.
    Lines that are not records (a torn write after a full disk) are skipped.
    """
    if max_records is not None and max_records <= 0:
        return []
    try:
        with open(path, "rb") as f:
            return _read(f, offset, max_records)
    except FileNotFoundError:
        return []


def _read(f: BinaryIO, offset: int, max_records: int | None) -> list[LogRecord]:
    records: list[LogRecord] = []
    f.seek(offset)
    pending = b""  # the start of a line whose newline is in a later block
    start = offset  # file offset of `pending`
    while True:
        block = f.read(_READ_BLOCK)
        if not block:
            return records
        data = pending + block
        end = data.rfind(b"\n") + 1
        pos = 0
        while pos < end:
            nl = data.index(b"\n", pos)
            record = _parse(data[pos:nl], start + pos, start + nl + 1)
            if record is not None:
                records.append(record)
                if max_records is not None and len(records) >= max_records:
                    return records
            pos = nl + 1
        pending = data[end:]
        start += end


def tail_records(
    path: str | os.PathLike[str], n: int, *, stream: str | None = None, max_bytes: int | None = None
) -> list[LogRecord]:
    """The last `n` complete records (of `stream` only, if given), oldest first.

    Reads backwards from the end in blocks, so the cost follows what is returned, not the file's
    size; it looks at most `max_bytes` back from the end, if given (few records may match `stream`).
    """
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            return _tail(f, n, stream, max_bytes)
    except FileNotFoundError:
        return []


def _tail(f: BinaryIO, n: int, stream: str | None, max_bytes: int | None) -> list[LogRecord]:
    found: list[LogRecord] = []  # newest first
    size = f.seek(0, os.SEEK_END)
    pos = size  # `head` holds the file's bytes from `pos` on, up to the last newline seen
    head = b""
    seen_newline = False
    while pos > 0 and len(found) < n:
        room = pos if max_bytes is None else min(pos, max_bytes - (size - pos))
        if room <= 0:
            break
        step = min(_TAIL_BLOCK, room)
        pos -= step
        f.seek(pos)
        head = f.read(step) + head
        if not seen_newline:
            cut = head.rfind(b"\n")
            if cut < 0:
                continue  # still inside the unterminated last line
            head = head[: cut + 1]
            seen_newline = True
        # Lines start after a newline, or at the start of the file; the first line in `head`
        # may begin in a block not read yet.
        first = 0 if pos == 0 else head.index(b"\n") + 1
        lines: list[LogRecord] = []
        at = first
        while at < len(head):
            nl = head.index(b"\n", at)
            record = _parse(head[at:nl], pos + at, pos + nl + 1)
            if record is not None and (stream is None or record.stream == stream):
                lines.append(record)
            at = nl + 1
        found.extend(reversed(lines))
        head = head[:first]
    del found[n:]
    found.reverse()
    return found


def last_write_ns(path: str | os.PathLike[str]) -> int | None:
    """When the log was last written (its mtime, in ns), for hang detection; None if it is missing."""
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _parse(line: bytes, offset: int, next_offset: int) -> LogRecord | None:
    parts = line.split(b" ", 2)
    if len(parts) < 2:
        return None
    stream = TAG_STREAMS.get(parts[1])
    if stream is None or not parts[0].isdigit():
        return None
    text = parts[2].decode("utf-8", "replace") if len(parts) == 3 else ""
    return LogRecord(offset, next_offset, int(parts[0]), stream, text)
