"""The replica log format: what the supervisor writes and `pai_runtime.logfile` reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_runtime import logfile, supervisor
from pai_runtime.logfile import LogRecord, format_record, last_write_ns, read_records, tail_records

# The log format.


def test_the_supervisor_writes_the_format_logfile_reads() -> None:
    assert supervisor.MAX_TEXT_BYTES == logfile.MAX_TEXT_BYTES
    streams = {tag.decode(): stream for tag, stream in logfile.TAG_STREAMS.items()}
    assert streams == {supervisor.STDOUT: "stdout", supervisor.STDERR: "stderr", supervisor.SYSTEM: "system"}


def test_read_records_follows_offsets_and_leaves_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    assert read_records(path) == []
    assert last_write_ns(path) is None
    first, second = format_record(1, "stdout", "one"), format_record(2, "stderr", "two words ")
    path.write_bytes(first + second + b"3 S par")
    records = read_records(path)
    assert records == [
        LogRecord(0, len(first), 1, "stdout", "one"),
        LogRecord(len(first), len(first + second), 2, "stderr", "two words "),
    ]
    assert read_records(path, max_records=1) == records[:1]
    assert read_records(path, records[0].next_offset) == records[1:]
    assert read_records(path, records[1].next_offset) == []
    with path.open("ab") as f:
        f.write(b"tial\n4 O\nnot a record\n5 X bad tag\n6 O \n")
    tail = read_records(path, records[1].next_offset)
    assert [(r.time_ns, r.stream, r.text) for r in tail] == [
        (3, "system", "partial"),
        (4, "stdout", ""),
        (6, "stdout", ""),
    ]
    assert tail[0].offset == records[1].next_offset
    assert last_write_ns(path) == path.stat().st_mtime_ns
    with pytest.raises(ValueError):
        format_record(1, "stdout", "two\nlines")


def test_tail_records_reads_backwards_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    assert tail_records(path, 5) == []
    lines = [
        format_record(i, "stderr" if i % 10 == 0 else "stdout", f"line {i} " + "x" * 200) for i in range(3000)
    ]
    path.write_bytes(b"".join(lines) + b"99 O unterminated")  # ~650 KB: many 64 KiB blocks
    everything = read_records(path)
    assert len(everything) == 3000
    assert tail_records(path, 3) == everything[-3:]
    assert tail_records(path, 0) == []
    assert tail_records(path, 5000) == everything
    assert tail_records(path, 4, stream="stderr") == [r for r in everything if r.stream == "stderr"][-4:]
    assert tail_records(path, 4, stream="system") == []
    assert tail_records(path, 4, stream="stderr", max_bytes=2500) == [everything[-10]]
    assert tail_records(path, 4, stream="stderr", max_bytes=2000) == []
    path.write_bytes(b"no newline at all")
    assert tail_records(path, 2) == []
