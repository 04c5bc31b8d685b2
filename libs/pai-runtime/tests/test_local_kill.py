"""The local backend killing replicas, failing launches, and re-attaching after its owner restarted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from pai_runtime.local import LocalBackend
from pai_runtime.logfile import read_records
from pai_runtime.types import BackendError, ReplicaHandle

from .conftest import PY, SLEEPER, Gang, alive, group_alive, printed_pid, running_in, script, wait_record

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
    await gang.backend.kill([handle], grace=0.3)
    assert 0.3 <= time.monotonic() - start < 3
    assert not any(alive(pid) for pid in [handle.pid, *pids])
    assert not group_alive(handle.pgid)
    assert gang.backend.poll([handle])[0].lost  # SIGKILLed supervisors record nothing


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
    await gang.backend.kill(handles, grace=10)
    assert time.monotonic() - start < 3
    assert not any(alive(pid) for pid in pids)
    for handle in handles:
        assert [r.text for r in read_records(handle.log_path) if r.stream == "stdout"][1:] == ["got SIGTERM"]
    assert {e.exit_code for e in gang.backend.poll(handles)} == {0}


async def test_kill_of_ended_replicas_returns_at_once(gang: Gang) -> None:
    handles = await gang.launch(script("pass"))
    await gang.exits(handles)
    start = time.monotonic()
    await gang.backend.kill(handles, grace=5)
    await gang.backend.kill(handles, grace=5)
    assert time.monotonic() - start < 1


# Failures.


async def test_a_missing_executable_fails_the_launch(gang: Gang) -> None:
    """Launch raises BackendError (all or none): the replica that did start is killed."""
    launch = gang.launch_of(SLEEPER, ("/nonexistent/bin/train", "--epochs", "1"))
    with pytest.raises(
        BackendError, match=r"worker-1 did not start: cannot run /nonexistent/bin/train: No such file"
    ):
        await gang.backend.launch(launch)
    run_dir = Path(launch.run_dir)
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
    (ended,) = gang.backend.poll([handle])
    assert ended.exit_code == 127
    assert ended.message == "exit code 127: cannot run /nonexistent/bin/train: No such file or directory"


async def test_a_missing_working_directory_fails_the_launch(gang: Gang, tmp_path: Path) -> None:
    launch = gang.launch_of(SLEEPER)
    replica = dataclasses.replace(launch.replicas[0], cwd=str(tmp_path / "missing"))
    with pytest.raises(BackendError, match=r"master-0 did not start: cannot change to directory .*missing"):
        await gang.backend.launch(dataclasses.replace(launch, replicas=(replica,)))


async def test_a_supervisor_that_cannot_be_spawned_fails_the_launch(gang: Gang) -> None:
    backend = LocalBackend(python="/nonexistent/bin/python3")
    with pytest.raises(BackendError, match=r"cannot start the supervisor of master-0: .*No such file"):
        await backend.launch(gang.launch_of(SLEEPER))


async def test_bad_replica_names_and_empty_commands_are_refused(gang: Gang) -> None:
    launch = gang.launch_of(SLEEPER)
    for replica in [
        dataclasses.replace(launch.replicas[0], replica="../x"),
        dataclasses.replace(launch.replicas[0], command=()),
    ]:
        with pytest.raises(BackendError):
            await gang.backend.launch(dataclasses.replace(launch, replicas=(replica,)))


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


# The owner restarted: handles from another backend.


async def test_a_new_backend_polls_and_kills_handles_of_another(gang: Gang) -> None:
    go = gang.root / "go"
    waiter = script(
        f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\nsys.exit(5)"
    )
    handles = await gang.launch(waiter, SLEEPER)
    pid = await printed_pid(handles[1])
    other = LocalBackend()
    assert other.poll(handles) == []
    go.touch()
    ended = await Gang(other, gang.root).exits(handles[:1])
    assert ended["master-0"].exit_code == 5
    await other.kill(handles[1:], grace=1)
    assert not alive(pid) and not group_alive(handles[1].pgid)


async def test_replicas_outlive_the_process_that_launched_them(gang: Gang) -> None:
    """Supervisors launched by a process that has exited since are not our children; still found."""
    launch = gang.launch_of(SLEEPER, script("import sys; sys.exit(4)"))
    launcher = """
        import asyncio, dataclasses, json, sys
        from pai_runtime.local import LocalBackend
        from pai_runtime.types import GangLaunch, ReplicaLaunch
        doc = json.loads(sys.argv[1])
        replicas = tuple(ReplicaLaunch(**{**r, "command": tuple(r["command"])}) for r in doc["replicas"])
        gang = GangLaunch(**{**doc, "replicas": replicas})
        handles = asyncio.run(LocalBackend().launch(gang))
        print(json.dumps([dataclasses.asdict(h) for h in handles]))
    """
    result = await asyncio.to_thread(
        subprocess.run,
        [PY, "-c", textwrap.dedent(launcher), json.dumps(dataclasses.asdict(launch))],
        capture_output=True,
        text=True,
        check=True,
    )
    handles = [ReplicaHandle.from_dict(h) for h in json.loads(result.stdout)]
    gang.handles += handles
    ended = await gang.exits(handles[1:])
    assert ended["worker-1"].exit_code == 4
    pid = await printed_pid(handles[0])
    assert gang.backend.poll(handles[:1]) == []
    await gang.backend.kill(handles[:1], grace=1)
    assert not alive(pid) and not group_alive(handles[0].pgid)


async def test_a_reused_pid_is_not_taken_for_the_supervisor(gang: Gang) -> None:
    (handle,) = await gang.launch(SLEEPER)
    pid = await printed_pid(handle)
    impostor = dataclasses.replace(handle, engine_ref=f"pid {handle.pid} start 1")
    (ended,) = gang.backend.poll([impostor])
    assert ended.lost
    await gang.backend.kill([impostor], grace=0)  # not ours: nothing is signalled
    assert alive(handle.pid) and alive(pid)
    # Without a start time, the supervisor is recognised by its command line.
    assert gang.backend.poll([dataclasses.replace(handle, engine_ref=f"pid {handle.pid}")]) == []
