"""Attacks through the run directory: replicas can write there (it is their working directory when
they have no code directory), so a log file there may be a forgery naming any pid. After an owner
restart, `unrecorded` + `kill` act on what the logs name; they must never signal the owner's own
group, an orphaned group of someone else, or a live process that is not a replica's supervisor. And
a replica names its own error file: the owner must not read (and publish) a file elsewhere."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pai_runtime.logfile import format_record

from .conftest import Gang, alive, script

OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from pai_runtime.local import LocalBackend

    async def main():
        backend = LocalBackend()
        found = await backend.unrecorded(sys.argv[1], 0)
        await backend.kill(found, grace=0.2)
        print("survived", [h.pid for h in found], flush=True)

    asyncio.run(main())
    """
)


def forge(run_dir: Path, name: str, pid: int) -> None:
    """A log whose first line claims that `pid` is the replica's supervisor."""
    line = f"started pid {pid + 1} (supervisor pid {pid}): python train.py"
    (run_dir / f"{name}.log").write_bytes(format_record(time.time_ns(), "system", line))


def owner_after_restart(run_dir: Path) -> subprocess.CompletedProcess[str]:
    """An owner in a session of its own (so a wrong signal ends only it) that kills what `unrecorded` finds."""
    return subprocess.run(
        [sys.executable, "-c", OWNER, str(run_dir)], capture_output=True, text=True, timeout=60,
        start_new_session=True,
    )  # fmt: skip


def test_a_log_naming_pid_0_does_not_make_the_owner_signal_its_own_group(tmp_path: Path) -> None:
    forge(tmp_path, "worker-0", 0)
    forge(tmp_path, "worker-1", -5)
    done = owner_after_restart(tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("survived []"), (done.returncode, done.stderr)


def test_a_log_naming_an_orphaned_group_or_a_stranger_kills_neither(tmp_path: Path) -> None:
    # an orphaned group: its leader has exited, a member lives on (a daemon that double-forked)
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\nif os.fork(): os._exit(0)\nprint(os.getpid(), flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert orphan.stdout is not None
    member = int(orphan.stdout.readline())
    orphan.wait()
    leader = orphan.pid
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert os.getpgid(member) == leader and not alive(leader)
        forge(tmp_path, "worker-0", leader)
        forge(tmp_path, "worker-1", stranger.pid)
        done = owner_after_restart(tmp_path)
        assert done.returncode == 0, done.stderr
        assert alive(member) and stranger.poll() is None
    finally:
        os.kill(member, signal.SIGKILL)
        stranger.kill()
        stranger.wait()


async def test_an_error_file_named_outside_the_replicas_directories_is_not_read(
    gang: Gang, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "someone-elses" / "error.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text('{"message": "a secret of another job"}')
    launch = gang.launch_of(script("raise SystemExit(3)"))
    replica = launch.replicas[0]
    env = {**replica.env, "TORCHELASTIC_ERROR_FILE": str(elsewhere)}
    launch = dataclasses.replace(launch, replicas=(dataclasses.replace(replica, env=env),))
    (handle,) = await gang.start(launch)
    ended = (await gang.exits([handle]))[handle.replica]
    assert ended.exit_code == 3 and "secret" not in ended.message + ended.details
    assert handle.error_path != str(elsewhere)
