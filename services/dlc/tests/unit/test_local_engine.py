"""The local engine with real processes (small Python scripts), and the replica log format."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pai_dlc.engine import logfile, supervisor
from pai_dlc.engine.base import AttemptLaunch, EngineError, ReplicaExit, ReplicaHandle, ReplicaLaunch
from pai_dlc.engine.local import LOST_MESSAGE, LocalEngine
from pai_dlc.engine.logfile import LogRecord, format_record, last_write_ns, read_records, tail_records

PY = sys.executable


def script(code: str) -> tuple[str, ...]:
    return (PY, "-u", "-c", textwrap.dedent(code))


SLEEPER = script("import os, time; print('pid', os.getpid()); time.sleep(60)")


def alive(pid: int) -> bool:
    """Whether the process runs: a zombie only waits for its parent (here, a lazy init) to reap it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def group_alive(pgid: int) -> bool:
    """Whether a process of the group runs (os.killpg(pgid, 0) also counts zombies not reaped yet)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
    return False


def exit_record(handle: ReplicaHandle) -> dict[str, Any]:
    with open(handle.exit_path, encoding="utf-8") as f:
        record: dict[str, Any] = json.load(f)
    return record


def running_in(directory: Path) -> list[int]:
    """The processes that run with `directory` as their working directory."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd == str(directory) and alive(int(entry)):
                found.append(int(entry))
    return found


class Gang:
    """Launches attempts in a temporary directory and kills whatever is left at the end of a test."""

    def __init__(self, engine: LocalEngine, root: Path) -> None:
        self.engine = engine
        self.root = root
        self.handles: list[ReplicaHandle] = []
        self.attempts = 0

    def attempt(self, *commands: tuple[str, ...]) -> AttemptLaunch:
        self.attempts += 1
        names = ["master-0", *(f"worker-{i}" for i in range(1, len(commands)))]
        replicas = tuple(
            ReplicaLaunch(name, rank, command, {"RANK": str(rank)})
            for rank, (name, command) in enumerate(zip(names, commands, strict=True))
        )
        run_dir = self.root / f"run-{self.attempts}"
        return AttemptLaunch("jobs/demo", "uid-1", 0, str(run_dir), replicas)

    async def launch(self, *commands: tuple[str, ...]) -> list[ReplicaHandle]:
        handles = await self.engine.launch(self.attempt(*commands))
        self.handles += handles
        return handles

    async def exits(self, handles: list[ReplicaHandle], timeout: float = 10.0) -> dict[str, ReplicaExit]:
        """Polls until every replica in `handles` has ended."""
        deadline = time.monotonic() + timeout
        while True:
            ended = {e.replica: e for e in self.engine.poll(handles)}
            if len(ended) == len(handles):
                return ended
            assert time.monotonic() < deadline, (
                f"still running: {set(h.replica for h in handles) - set(ended)}"
            )
            await asyncio.sleep(0.02)


@pytest.fixture
async def gang(tmp_path: Path) -> AsyncIterator[Gang]:
    g = Gang(LocalEngine(), tmp_path)
    yield g
    await LocalEngine().kill(g.handles, grace=0)
    for handle in g.handles:
        assert not group_alive(handle.pgid), f"{handle.replica} left processes behind"


async def wait_record(path: str, match: Callable[[LogRecord], bool], timeout: float = 10.0) -> LogRecord:
    deadline = time.monotonic() + timeout
    while True:
        found = [record for record in read_records(path) if match(record)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no such record in {path}: {read_records(path)}"
        await asyncio.sleep(0.02)


async def printed_pid(handle: ReplicaHandle) -> int:
    """The pid the command printed as "pid N"."""
    record = await wait_record(handle.log_path, lambda r: r.stream == "stdout" and r.text.startswith("pid "))
    return int(record.text.split()[1])


# Running replicas.


async def test_replicas_log_their_streams_and_exit_codes(gang: Gang) -> None:
    replica = """
        import os, sys
        print("rank", os.environ["RANK"], "cwd", os.getcwd())
        print("error file", os.environ["TORCHELASTIC_ERROR_FILE"])
        print("rank", os.environ["RANK"], "complains", file=sys.stderr)
        sys.exit({code})
    """
    handles = await gang.launch(script(replica.format(code=0)), script(replica.format(code=3)))
    run_dir = gang.root / "run-1"
    assert [h.replica for h in handles] == ["master-0", "worker-1"]
    for rank, handle in enumerate(handles):
        assert (handle.rank, handle.attempt, handle.pgid, handle.node) == (
            rank,
            0,
            handle.pid,
            gang.engine.info.node,
        )
        assert handle.engine_ref.startswith(f"pid {handle.pid} ")
        assert handle.log_path == str(run_dir / f"{handle.replica}.log")
        assert handle.exit_path == str(run_dir / f"{handle.replica}.exit.json")
        assert handle.error_path == str(run_dir / f"{handle.replica}.error.json")

    ended = await gang.exits(handles)
    first = ended["master-0"]
    assert first.time_ns > 0  # when the command ended, from the exit record
    assert dataclasses.replace(first, time_ns=0) == ReplicaExit("master-0", 0, message="exit code 0")
    assert ended["master-0"].succeeded
    failed = ended["worker-1"]
    assert (failed.exit_code, failed.signal, failed.message, failed.lost) == (3, 0, "exit code 3", False)
    assert failed.details == "rank 1 complains"
    assert not failed.succeeded

    for rank, handle in enumerate(handles):
        records = read_records(handle.log_path)
        streams = [(r.stream, r.text) for r in records]
        assert streams[0][0] == "system" and streams[0][1].startswith(supervisor.STARTED)
        assert ("stdout", f"rank {rank} cwd {run_dir}") in streams
        assert ("stdout", f"error file {handle.error_path}") in streams
        assert ("stderr", f"rank {rank} complains") in streams
        assert streams[-1] == ("system", f"exited with code {3 if rank else 0}")
        assert all(a.next_offset == b.offset for a, b in itertools.pairwise(records)), records
        assert exit_record(handle)["exit_code"] == (3 if rank else 0)
        assert os.stat(handle.log_path.removesuffix(".log") + ".supervisor.log").st_size == 0


async def test_env_cwd_and_error_file_of_the_replica_win(gang: Gang, tmp_path: Path) -> None:
    code = script("import os; print(os.getcwd(), os.environ['TORCHELASTIC_ERROR_FILE'], os.environ['EXTRA'])")
    attempt = gang.attempt(code)
    replica = dataclasses.replace(
        attempt.replicas[0], cwd=str(tmp_path), env={"EXTRA": "yes", "TORCHELASTIC_ERROR_FILE": "err.json"}
    )
    handles = await gang.engine.launch(dataclasses.replace(attempt, replicas=(replica,)))
    gang.handles += handles
    await gang.exits(handles)
    assert handles[0].error_path == str(tmp_path / "err.json")
    lines = [r.text for r in read_records(handles[0].log_path) if r.stream == "stdout"]
    assert lines == [f"{tmp_path} err.json yes"]


async def test_long_lines_are_split_and_bad_utf8_replaced(gang: Gang) -> None:
    code = script("""
        import sys
        sys.stdout.buffer.write(("é" * 70000).encode() + b"\\n" + b"bad \\xff byte\\n" + b"no newline")
    """)
    (handle,) = await gang.launch(code)
    await gang.exits([handle])
    texts = [r.text for r in read_records(handle.log_path) if r.stream == "stdout"]
    assert "".join(texts[:-2]) == "é" * 70000
    assert all(len(t.encode()) <= logfile.MAX_TEXT_BYTES for t in texts)
    assert texts[-2:] == ["bad \ufffd byte", "no newline"]


async def test_a_command_killed_by_a_signal(gang: Gang) -> None:
    (handle,) = await gang.launch(SLEEPER)
    assert gang.engine.poll([handle]) == []
    os.kill(await printed_pid(handle), signal.SIGKILL)
    ended = (await gang.exits([handle]))["master-0"]
    assert (ended.exit_code, ended.signal, ended.lost) == (None, 9, False)
    assert ended.message == "killed by signal SIGKILL (9)"
    assert exit_record(handle)["signal"] == 9
    assert read_records(handle.log_path)[-1].text == "killed by signal SIGKILL (9)"


async def test_a_supervisor_that_vanishes_is_lost(gang: Gang) -> None:
    (handle,) = await gang.launch(SLEEPER)
    pid = await printed_pid(handle)
    os.kill(handle.pid, signal.SIGKILL)
    ended = (await gang.exits([handle]))["master-0"]
    assert (ended.exit_code, ended.lost, ended.message) == (None, True, LOST_MESSAGE)
    assert alive(pid)  # the command itself is still there until the gang is killed
    await gang.engine.kill([handle], grace=1)
    assert not alive(pid)


# Killing.


async def test_kill_sigkills_what_ignores_sigterm(gang: Gang) -> None:
    code = script("""
        import os, signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "60"])  # ignores SIGTERM too: it inherits SIG_IGN
        print("pid", os.getpid(), child.pid)
        time.sleep(60)
    """)
    (handle,) = await gang.launch(code)
    record = await wait_record(handle.log_path, lambda r: r.text.startswith("pid "))
    pids = [int(pid) for pid in record.text.split()[1:]]
    start = time.monotonic()
    await gang.engine.kill([handle], grace=0.3)
    assert 0.3 <= time.monotonic() - start < 3
    assert not any(alive(pid) for pid in [handle.pid, *pids])
    assert not group_alive(handle.pgid)
    assert gang.engine.poll([handle])[0].lost  # SIGKILLed supervisors record nothing


async def test_kill_lets_a_command_stop_gracefully(gang: Gang) -> None:
    code = script("""
        import os, signal, sys, time
        def stop(signum, frame):
            print("got", signal.Signals(signum).name)
            time.sleep(0.2)  # a second SIGTERM would arrive while it cleans up
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("pid", os.getpid())
        time.sleep(60)
    """)
    handles = await gang.launch(code, code)
    pids = [await printed_pid(handle) for handle in handles]
    start = time.monotonic()
    await gang.engine.kill(handles, grace=10)
    assert time.monotonic() - start < 3
    assert not any(alive(pid) for pid in pids)
    for handle in handles:
        assert [r.text for r in read_records(handle.log_path) if r.stream == "stdout"][1:] == ["got SIGTERM"]
    assert {e.exit_code for e in gang.engine.poll(handles)} == {0}


async def test_kill_of_ended_replicas_returns_at_once(gang: Gang) -> None:
    handles = await gang.launch(script("pass"))
    await gang.exits(handles)
    start = time.monotonic()
    await gang.engine.kill(handles, grace=5)
    await gang.engine.kill(handles, grace=5)
    assert time.monotonic() - start < 1


# Failures.


async def test_a_missing_executable_fails_the_launch(gang: Gang) -> None:
    """Launch raises EngineError (all or none): the replica that did start is killed."""
    attempt = gang.attempt(SLEEPER, ("/nonexistent/bin/train", "--epochs", "1"))
    with pytest.raises(
        EngineError, match=r"worker-1 did not start: cannot run /nonexistent/bin/train: No such file"
    ):
        await gang.engine.launch(attempt)
    run_dir = Path(attempt.run_dir)
    assert running_in(run_dir) == []  # master-0, started or not, is gone
    # What the failed replica's supervisor recorded, as poll reports it.
    handle = ReplicaHandle(
        "worker-1",
        1,
        0,
        pid=0,
        pgid=0,
        log_path=str(run_dir / "worker-1.log"),
        exit_path=str(run_dir / "worker-1.exit.json"),
        error_path=str(run_dir / "worker-1.error.json"),
    )
    (ended,) = gang.engine.poll([handle])
    assert ended.exit_code == 127
    assert ended.message == "exit code 127: cannot run /nonexistent/bin/train: No such file or directory"


async def test_a_missing_working_directory_fails_the_launch(gang: Gang, tmp_path: Path) -> None:
    attempt = gang.attempt(SLEEPER)
    replica = dataclasses.replace(attempt.replicas[0], cwd=str(tmp_path / "missing"))
    with pytest.raises(EngineError, match=r"master-0 did not start: cannot change to directory .*missing"):
        await gang.engine.launch(dataclasses.replace(attempt, replicas=(replica,)))


async def test_a_supervisor_that_cannot_be_spawned_fails_the_launch(gang: Gang) -> None:
    engine = LocalEngine(python="/nonexistent/bin/python3")
    with pytest.raises(EngineError, match=r"cannot start the supervisor of master-0: .*No such file"):
        await engine.launch(gang.attempt(SLEEPER))


async def test_bad_replica_names_and_empty_commands_are_refused(gang: Gang) -> None:
    attempt = gang.attempt(SLEEPER)
    for replica in [
        dataclasses.replace(attempt.replicas[0], replica="../x"),
        dataclasses.replace(attempt.replicas[0], command=()),
    ]:
        with pytest.raises(EngineError):
            await gang.engine.launch(dataclasses.replace(attempt, replicas=(replica,)))


async def test_error_files_surface_in_message_and_details(gang: Gang) -> None:
    writer = """
        import json, os, sys
        print("plain stderr", file=sys.stderr)
        with open(os.environ["TORCHELASTIC_ERROR_FILE"], "w") as f:
            f.write({content!r})
        sys.exit(1)
    """
    nested = {
        "message": {"message": "ValueError: boom\nmore", "extraInfo": {"py_callstack": "Traceback: here"}}
    }
    flat = {"message": "RuntimeError: flat"}
    handles = await gang.launch(
        script(writer.format(content=json.dumps(nested))),
        script(writer.format(content=json.dumps(flat))),
        script(writer.format(content="not json")),
    )
    ended = await gang.exits(handles)
    assert (ended["master-0"].message, ended["master-0"].details) == (
        "exit code 1: ValueError: boom",
        "Traceback: here",
    )
    assert (ended["worker-1"].message, ended["worker-1"].details) == (
        "exit code 1: RuntimeError: flat",
        "plain stderr",
    )
    assert (ended["worker-2"].message, ended["worker-2"].details) == ("exit code 1", "plain stderr")


# dlc restarted: handles from another engine.


async def test_a_new_engine_polls_and_kills_handles_of_another(gang: Gang) -> None:
    go = gang.root / "go"
    waiter = script(
        f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\nsys.exit(5)"
    )
    handles = await gang.launch(waiter, SLEEPER)
    pid = await printed_pid(handles[1])
    other = LocalEngine()
    assert other.poll(handles) == []
    go.touch()
    ended = await Gang(other, gang.root).exits(handles[:1])
    assert ended["master-0"].exit_code == 5
    await other.kill(handles[1:], grace=1)
    assert not alive(pid) and not group_alive(handles[1].pgid)


async def test_replicas_outlive_the_process_that_launched_them(gang: Gang) -> None:
    """Supervisors launched by a process that has exited since are not our children; still found."""
    attempt = gang.attempt(SLEEPER, script("import sys; sys.exit(4)"))
    launcher = """
        import asyncio, dataclasses, json, sys
        from pai_dlc.engine.base import AttemptLaunch, ReplicaLaunch
        from pai_dlc.engine.local import LocalEngine
        doc = json.loads(sys.argv[1])
        replicas = tuple(ReplicaLaunch(**{**r, "command": tuple(r["command"])}) for r in doc["replicas"])
        attempt = AttemptLaunch(**{**doc, "replicas": replicas})
        handles = asyncio.run(LocalEngine().launch(attempt))
        print(json.dumps([dataclasses.asdict(h) for h in handles]))
    """
    result = await asyncio.to_thread(
        subprocess.run,
        [PY, "-c", textwrap.dedent(launcher), json.dumps(dataclasses.asdict(attempt))],
        capture_output=True,
        text=True,
        check=True,
    )
    handles = [ReplicaHandle(**h) for h in json.loads(result.stdout)]
    gang.handles += handles
    ended = await gang.exits(handles[1:])
    assert ended["worker-1"].exit_code == 4
    pid = await printed_pid(handles[0])
    assert gang.engine.poll(handles[:1]) == []
    await gang.engine.kill(handles[:1], grace=1)
    assert not alive(pid) and not group_alive(handles[0].pgid)


async def test_a_reused_pid_is_not_taken_for_the_supervisor(gang: Gang) -> None:
    (handle,) = await gang.launch(SLEEPER)
    pid = await printed_pid(handle)
    impostor = dataclasses.replace(handle, engine_ref=f"pid {handle.pid} start 1")
    (ended,) = gang.engine.poll([impostor])
    assert ended.lost
    await gang.engine.kill([impostor], grace=0)  # not ours: nothing is signalled
    assert alive(handle.pid) and alive(pid)
    # Without a start time, the supervisor is recognised by its command line.
    assert gang.engine.poll([dataclasses.replace(handle, engine_ref=f"pid {handle.pid}")]) == []


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


async def test_replicas_never_see_dlcs_own_settings(gang: Gang, monkeypatch: pytest.MonkeyPatch) -> None:
    # dlc's credential toward the scheduler, its database URL: none of it reaches user code
    monkeypatch.setenv("PAI_DLC_API_KEY", "pai_secret_key")
    monkeypatch.setenv("PAI_DLC_DATABASE_URL", "postgresql://u:password@db/dlc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "token")
    monkeypatch.setenv("HARMLESS", "kept")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    code = (
        "import os, shutil, sys; print(sorted(k for k in os.environ if k.startswith(('PAI_', 'OTEL_', 'HARMLESS'))));"
        "print(os.path.realpath(shutil.which('python') or '') == os.path.realpath(sys.executable))"
    )
    (handle,) = await gang.launch(script(code))
    ended = await gang.exits([handle])
    assert ended[handle.replica].succeeded
    printed = [r.text for r in read_records(handle.log_path) if r.stream == "stdout"]
    assert printed == ["['HARMLESS']", "True"]  # and `python` is the platform's interpreter
