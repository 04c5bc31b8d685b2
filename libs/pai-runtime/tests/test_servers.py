"""Server replicas on the local backend: readiness, replacing one replica, re-attaching, the sandbox seam.

Each server is a tiny Python HTTP server (a real process on a free port): GET /healthz answers 200
with the server's pid, anything else 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from pai_runtime.local import LocalBackend
from pai_runtime.logfile import read_records
from pai_runtime.probe import free_port, probe
from pai_runtime.types import BackendError, GangLaunch, Readiness, ReplicaHandle, ReplicaLaunch

from .conftest import SLEEPER, Gang, alive, group_alive, printed_pid, script, stdout

SERVER = script(
    """
    import http.server, os, pathlib, sys, time
    port, wait_for = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""
    while wait_for and not pathlib.Path(wait_for).exists():  # not listening until told
        time.sleep(0.02)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = str(os.getpid()).encode()
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("pid", os.getpid(), flush=True)
    server.serve_forever()
    """
)


def server(name: str, rank: int, port: int, *args: str, path: str = "/healthz") -> ReplicaLaunch:
    return ReplicaLaunch(name, rank, (*SERVER, str(port), *args), {}, readiness=Readiness(port, path))


def servers(root: Path, *replicas: ReplicaLaunch) -> GangLaunch:
    return GangLaunch("services/demo/revisions/1", "uid-s", 0, str(root / "run"), replicas)


def answer(port: int) -> str:
    """What the server on `port` answers at /healthz (its pid)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return str(response.read().decode())


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def until_ready(
    backend: LocalBackend, handles: Sequence[ReplicaHandle], names: set[str], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while (ready := await backend.ready(handles)) != names:
        assert time.monotonic() < deadline, f"ready: {ready}, expected {names}"
        await asyncio.sleep(0.05)


async def test_two_servers_one_replaced_alone_then_the_gang_killed(gang: Gang, tmp_path: Path) -> None:
    """The acceptance test: ready on their ports, one restarted alone, all killed cleanly."""
    ports = [free_port(), free_port()]
    launch = servers(tmp_path, server("server-0", 0, ports[0]), server("server-1", 1, ports[1]))
    handles = await gang.start(launch)
    await until_ready(gang.backend, handles, {"server-0", "server-1"})
    pids = [int(answer(port)) for port in ports]
    assert pids == [await printed_pid(h) for h in handles]

    new = await gang.backend.replace(launch, handles[0], grace=5)
    gang.handles.append(new)
    assert (new.replica, new.rank, new.readiness) == ("server-0", 0, handles[0].readiness)
    assert new.pid != handles[0].pid and not alive(handles[0].pid) and not alive(pids[0])
    assert not group_alive(handles[0].pgid)
    assert gang.backend.poll([new, handles[1]]) == []
    await until_ready(gang.backend, [new, handles[1]], {"server-0", "server-1"})
    assert int(answer(ports[0])) not in pids  # a new server process
    assert answer(ports[1]) == str(pids[1]) and alive(handles[1].pid)  # the other one untouched
    assert stdout(new)[-1] == f"pid {answer(ports[0])}"  # its log goes on in the same file

    await gang.backend.kill([new, handles[1]], grace=5)
    for handle in (new, handles[1]):
        assert not group_alive(handle.pgid) and not alive(handle.pid)
    assert not any(alive(pid) for pid in pids)
    assert not any(listening(port) for port in ports)
    assert await gang.backend.ready([new, handles[1]]) == set()
    ended = await gang.exits([new, handles[1]])
    assert {e.signal for e in ended.values()} == {15}  # SIGTERM, passed on once by each supervisor


async def test_ready_needs_a_readiness_and_a_listening_port(gang: Gang, tmp_path: Path) -> None:
    go = tmp_path / "go"
    late, missing = free_port(), free_port()
    launch = servers(
        tmp_path,
        server("server-0", 0, late, str(go)),  # listens once `go` exists
        server("server-1", 1, missing, path="/missing"),  # listens, but answers 404 there
        ReplicaLaunch("batch-0", 2, SLEEPER, {}),  # no readiness at all
        dataclasses.replace(server("tcp-0", 3, free_port()), readiness=None),  # listens, no readiness
    )
    handles = await gang.start(launch)
    await asyncio.sleep(0.5)  # long enough for a server to listen, had it been told to
    assert await gang.backend.ready(handles) == set()
    assert listening(missing)
    go.touch()
    await until_ready(gang.backend, handles, {"server-0"})
    tcp = dataclasses.replace(handles[1], readiness=Readiness(missing))  # a TCP connect is enough
    assert await gang.backend.ready([tcp]) == {"server-1"}


async def test_a_probe_gives_up_on_a_server_that_never_answers() -> None:
    with socket.socket() as s:  # accepts connections (the kernel does), never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert await probe(Readiness(port), timeout=1)
        started = time.monotonic()
        assert not await probe(Readiness(port, "/healthz"), timeout=0.3)
        assert time.monotonic() - started < 2
    assert not await probe(Readiness(port))


async def test_a_handle_survives_its_owner(gang: Gang, tmp_path: Path) -> None:
    """A handle stored as a dict (`dataclasses.asdict`) and read back by a new backend (the owner
    restarted) is polled, probed and killed as the original."""
    port = free_port()
    (handle,) = await gang.start(servers(tmp_path, server("server-0", 0, port)))
    await until_ready(gang.backend, [handle], {"server-0"})
    stored = json.loads(json.dumps(dataclasses.asdict(handle)))
    again = ReplicaHandle.from_dict(stored)
    assert again == handle and again.readiness == Readiness(port, "/healthz")
    other = LocalBackend()
    assert other.poll([again]) == []
    assert await other.ready([again]) == {"server-0"}
    await other.kill([again], grace=5)
    assert not group_alive(handle.pgid) and not listening(port)
    (ended,) = other.poll([again])
    assert ended.signal == 15 and not ended.lost


async def test_unrecorded_finds_a_replacement(gang: Gang, tmp_path: Path) -> None:
    """An owner that stopped before it stored a replacement's handle finds and kills it."""
    launch = servers(tmp_path, server("server-0", 0, free_port()))
    (first,) = await gang.start(launch)
    new = await gang.backend.replace(launch, first, grace=5)
    gang.handles.append(new)
    found = await LocalBackend().unrecorded(launch.run_dir, 0)
    assert {h.pid for h in found} == {first.pid, new.pid}  # the first is gone: kill checks each
    await LocalBackend().kill(found, grace=5)
    assert not group_alive(new.pgid)


async def test_replace_refuses_an_unknown_replica_and_reports_a_failed_start(
    gang: Gang, tmp_path: Path
) -> None:
    launch = servers(tmp_path, server("server-0", 0, free_port()))
    (handle,) = await gang.start(launch)
    with pytest.raises(BackendError, match="no replica server-9 to replace"):
        await gang.backend.replace(launch, dataclasses.replace(handle, replica="server-9"), grace=1)
    assert alive(handle.pid)  # nothing was killed
    broken = dataclasses.replace(
        launch, replicas=(dataclasses.replace(launch.replicas[0], command=("/nonexistent",)),)
    )
    with pytest.raises(BackendError, match="server-0 did not start: cannot run /nonexistent"):
        await gang.backend.replace(broken, handle, grace=1)
    assert not group_alive(handle.pgid)


class EnvSandbox:
    """A stand-in sandbox: runs the command through `env`, marking its environment."""

    def __init__(self) -> None:
        self.wrapped: list[str] = []

    def wrap(self, gang: GangLaunch, replica: ReplicaLaunch, argv: Sequence[str]) -> list[str]:
        self.wrapped.append(replica.replica)
        return ["/usr/bin/env", "SANDBOXED=yes", *argv]


async def test_a_sandbox_wraps_each_command(tmp_path: Path) -> None:
    sandbox = EnvSandbox()
    g = Gang(LocalBackend(sandbox=sandbox), tmp_path)
    handles = await g.launch(script("import os; print(os.environ['SANDBOXED'])"), script("pass"))
    ended = await g.exits(handles)
    assert all(e.succeeded for e in ended.values()) and sandbox.wrapped == ["master-0", "worker-1"]
    assert stdout(handles[0]) == ["yes"]
    # The supervisor itself runs outside the sandbox, and logs the wrapped command it started.
    assert "/usr/bin/env SANDBOXED=yes" in read_records(handles[0].log_path)[0].text
