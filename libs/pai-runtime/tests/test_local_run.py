"""The local backend running replicas: logs, exit codes, error files, signals, the environment."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
from pathlib import Path

import pytest

from pai_runtime import logfile, supervisor
from pai_runtime.local import LOST_MESSAGE
from pai_runtime.logfile import read_records
from pai_runtime.types import ReplicaExit

from .conftest import SLEEPER, Gang, alive, exit_record, printed_pid, script

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
            gang.backend.info.node,
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
    launch = gang.launch_of(code)
    replica = dataclasses.replace(
        launch.replicas[0], cwd=str(tmp_path), env={"EXTRA": "yes", "TORCHELASTIC_ERROR_FILE": "err.json"}
    )
    handles = await gang.backend.launch(dataclasses.replace(launch, replicas=(replica,)))
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
    assert gang.backend.poll([handle]) == []
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
    await gang.backend.kill([handle], grace=1)
    assert not alive(pid)


async def test_replicas_never_see_their_owners_settings(gang: Gang, monkeypatch: pytest.MonkeyPatch) -> None:
    # an owner's credential toward the scheduler, its database URL: none of it reaches user code
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
