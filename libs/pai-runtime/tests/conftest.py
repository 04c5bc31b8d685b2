"""Helpers for the local backend's tests: real processes (small Python scripts), never mocks."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pai_runtime.local import LocalBackend
from pai_runtime.logfile import LogRecord, read_records
from pai_runtime.testing import exits
from pai_runtime.types import GangLaunch, ReplicaExit, ReplicaHandle, ReplicaLaunch

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
    """Launches gangs in a temporary directory and kills whatever is left at the end of a test."""

    def __init__(self, backend: LocalBackend, root: Path) -> None:
        self.backend = backend
        self.root = root
        self.handles: list[ReplicaHandle] = []
        self.attempts = 0

    def launch_of(self, *commands: tuple[str, ...]) -> GangLaunch:
        self.attempts += 1
        names = ["master-0", *(f"worker-{i}" for i in range(1, len(commands)))]
        replicas = tuple(
            ReplicaLaunch(name, rank, command, {"RANK": str(rank)})
            for rank, (name, command) in enumerate(zip(names, commands, strict=True))
        )
        run_dir = self.root / f"run-{self.attempts}"
        return GangLaunch("jobs/demo", "uid-1", 0, str(run_dir), replicas)

    async def launch(self, *commands: tuple[str, ...]) -> list[ReplicaHandle]:
        return await self.start(self.launch_of(*commands))

    async def start(self, gang: GangLaunch) -> list[ReplicaHandle]:
        handles = await self.backend.launch(gang)
        self.handles += handles
        return handles

    async def exits(self, handles: list[ReplicaHandle], timeout: float = 10.0) -> dict[str, ReplicaExit]:
        """Polls until every replica in `handles` has ended."""
        return await exits(self.backend, handles, timeout, every=0.02)


@pytest.fixture
async def gang(tmp_path: Path) -> AsyncIterator[Gang]:
    g = Gang(LocalBackend(), tmp_path)
    yield g
    await LocalBackend().kill(g.handles, grace=0)
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
    """The pid the command printed as "pid N" (the first such line of the replica's log)."""
    record = await wait_record(handle.log_path, lambda r: r.stream == "stdout" and r.text.startswith("pid "))
    return int(record.text.split()[1])


def stdout(handle: ReplicaHandle) -> list[str]:
    return [r.text for r in read_records(handle.log_path) if r.stream == "stdout"]
