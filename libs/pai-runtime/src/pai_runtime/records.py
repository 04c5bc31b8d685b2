"""How a replica ended, from the files its supervisor leaves in the run directory.

Per replica, in the run directory: `<replica>.log` (`pai_runtime.logfile`), `<replica>.exit.json` (the
exit record, written once and atomically by `pai_runtime.supervisor`), the error file the replica may
write (TORCHELASTIC_ERROR_FILE, torchelastic's JSON shape) and `<replica>.supervisor.log` (the
supervisor's own output: empty unless the supervisor itself failed). Used by the local backend, and by
the Ray backend, whose supervisors write the same files on a file system the owner shares.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from pai_runtime import supervisor
from pai_runtime.logfile import read_records, tail_records
from pai_runtime.processes import read_text
from pai_runtime.types import ReplicaExit, ReplicaHandle

LOST_MESSAGE = "replica supervisor vanished without recording an exit"
STDERR_LINES = 20  # stderr lines in the details of a failure without an error file
_STDERR_SCAN_BYTES = 4 * 1024 * 1024  # how far back in the log to look for them
_STARTED_SCAN_BYTES = 64 * 1024 * 1024  # how far back to look for the latest supervisor of a replica
_MAX_ERROR_FILE_BYTES = 1024 * 1024
_CACHED_EXITS = 4096
_SUPERVISOR_PID = "(supervisor pid "


def stderr_tail(handle: ReplicaHandle) -> str:
    """The last STDERR_LINES lines the replica wrote to stderr, for a failure's details."""
    records = tail_records(handle.log_path, STDERR_LINES, stream="stderr", max_bytes=_STDERR_SCAN_BYTES)
    return "\n".join(record.text for record in records)


def lost(handle: ReplicaHandle, message: str = LOST_MESSAGE) -> ReplicaExit:
    """A replica gone without an exit record."""
    return ReplicaExit(handle.replica, None, message=message, details=stderr_tail(handle), lost=True)


def exit_from_record(handle: ReplicaHandle) -> ReplicaExit:
    """How the replica ended, from its exit record (and its error file or stderr when it failed)."""
    try:
        record = json.loads(read_text(handle.exit_path))
        exit_code, sig = record["exit_code"], record.get("signal", 0)
        if not (exit_code is None or type(exit_code) is int) or type(sig) is not int:
            raise ValueError(f"unexpected values {exit_code!r}, {sig!r}")
    except (ValueError, TypeError, KeyError) as e:
        return lost(handle, f"the exit record {handle.exit_path} is unreadable: {e}")
    message = supervisor.describe_status(exit_code, sig)
    when = record.get("time_ns", 0)
    when = when if type(when) is int else 0
    if exit_code == 0:
        return ReplicaExit(handle.replica, 0, message=message, time_ns=when)
    details = ""
    reason = record.get("message")  # the supervisor's, when the command could not start
    error = _read_error_file(handle.error_path)
    if error is not None:
        reason = reason or error[0]
        details = error[1]
    if isinstance(reason, str) and reason.strip():
        message += ": " + first_line(reason)
    return ReplicaExit(handle.replica, exit_code, sig, message, details or stderr_tail(handle), time_ns=when)


def _read_error_file(path: str) -> tuple[str, str] | None:
    """(message, callstack) from a torchelastic error file, if there is one of that shape."""
    text = read_text(path, _MAX_ERROR_FILE_BYTES)
    if not text:
        return None
    try:
        return error_file_message(json.loads(text))
    except ValueError:
        return None


def error_file_message(doc: Any) -> tuple[str, str] | None:
    """(message, callstack) from a parsed torchelastic error file; None if `doc` is not of that shape."""
    message = doc.get("message") if isinstance(doc, dict) else None
    if isinstance(message, str):
        return message, ""
    if isinstance(message, dict) and isinstance(message.get("message"), str):
        extra = message.get("extraInfo")
        stack = extra.get("py_callstack") if isinstance(extra, dict) else None
        return message["message"], stack if isinstance(stack, str) else ""
    return None


def first_line(text: str, limit: int = 500) -> str:
    """The first non-blank line of `text`, shortened to `limit` characters."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def bounded_put(cache: dict[Any, Any], key: Any, value: Any, size: int = _CACHED_EXITS) -> None:
    """`cache[key] = value`, dropping the oldest entry first when a new key would exceed `size`."""
    if key not in cache and len(cache) >= size:
        del cache[next(iter(cache))]
    cache[key] = value


class ExitRecords:
    """Reads exit records, each once: a record is written once, so its (inode, mtime) names it."""

    def __init__(self) -> None:
        self._exits: dict[tuple[str, str], tuple[tuple[int, int], ReplicaExit]] = {}

    def get(self, handle: ReplicaHandle) -> ReplicaExit | None:
        """How the replica ended, from its exit record; None while there is none."""
        if not handle.exit_path:  # a backend that keeps no files here
            return None
        try:
            st = pathlib.Path(handle.exit_path).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        key, version = (handle.exit_path, handle.replica), (st.st_ino, st.st_mtime_ns)
        cached = self._exits.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        result = exit_from_record(handle)
        bounded_put(self._exits, key, (version, result))
        return result


def _supervisor_pid(text: str) -> int | None:
    """The supervisor's pid in its first line, `started pid N (supervisor pid M): ...`."""
    if not text.startswith(supervisor.STARTED) or _SUPERVISOR_PID not in text:
        return None
    try:
        pid = int(text.split(_SUPERVISOR_PID, 1)[1].split(")", 1)[0])
    except ValueError:
        return None
    return pid if pid > 1 else None  # 0 would be the owner's own group


def supervisors_in(run_dir: pathlib.Path, attempt: int) -> list[ReplicaHandle]:
    """Handles for the replica supervisors an attempt's logs name (`started pid N (supervisor pid M)`).

    Per log, the supervisor of its first line (the replica as launched) and the latest one found in
    the log's last 64 MiB (a replacement, see `LocalBackend.replace`). The handles have no start
    time: `kill` recognises each supervisor by its command line before signalling it.
    """
    out = []
    run_dir = run_dir.absolute()  # as the supervisors' command lines name their files
    for log_file in sorted(run_dir.glob("*.log")):
        if log_file.name.endswith(".supervisor.log"):
            continue
        path = str(log_file)
        named = [
            *read_records(path, 0, max_records=1),
            *tail_records(path, 2, stream="system", max_bytes=_STARTED_SCAN_BYTES),
        ]
        pids = [pid for r in named if r.stream == "system" and (pid := _supervisor_pid(r.text)) is not None]
        base = path[: -len(".log")]
        for pid in dict.fromkeys(pids):
            out.append(
                ReplicaHandle(
                    replica=log_file.stem, rank=0, attempt=attempt, pid=pid, pgid=pid, log_path=path,
                    exit_path=f"{base}.exit.json", error_path=f"{base}.error.json",
                )
            )  # fmt: skip
    return out
