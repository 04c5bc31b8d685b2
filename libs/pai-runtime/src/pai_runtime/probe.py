"""Readiness probes of server replicas: one short look each, on the event loop, never blocking it.

A replica with a `Readiness` is ready when a TCP connection to its port is accepted, or, when the
readiness has a `path`, when an HTTP GET of that path answers with a 2xx status. Each probe gives up
after `timeout` seconds (a server that accepts and never answers is not ready). asyncio streams do
the I/O, so many probes run at once and none holds the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence

from pai_runtime.types import Readiness, ReplicaHandle

PROBE_TIMEOUT = 1.0  # seconds for one probe: connect, and the status line of an HTTP answer


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at `host` now (for a replica to listen on; "" is every interface)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def probe(readiness: Readiness, host: str | None = None, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the server answers now at `host` (default: the readiness's own) and its port."""
    host = host or readiness.host
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, readiness.port)
            try:
                if not readiness.path:
                    return True
                writer.write(_request(host, readiness))
                await writer.drain()
                status = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        return False
    return _is_2xx(status)


def _request(host: str, readiness: Readiness) -> bytes:
    path = readiness.path if readiness.path.startswith("/") else "/" + readiness.path
    authority = f"[{host}]" if ":" in host else host
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {authority}:{readiness.port}",
        "User-Agent: pai-runtime-probe",
        "Accept: */*",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii", "replace")


def _is_2xx(status_line: bytes) -> bool:
    parts = status_line.split()
    return (
        len(parts) >= 2
        and parts[0].startswith(b"HTTP/")
        and len(parts[1]) == 3
        and parts[1].isdigit()
        and parts[1].startswith(b"2")
    )


async def ready_replicas(
    handles: Sequence[ReplicaHandle],
    host_of: Callable[[ReplicaHandle], str | None] = lambda handle: None,
    timeout: float = PROBE_TIMEOUT,
) -> set[str]:
    """The replicas among `handles` with a readiness whose probe passes, probed all at once;
    `host_of` says where a replica's server is (None: its readiness's host)."""
    servers = [h for h in handles if h.readiness is not None]
    results = await asyncio.gather(
        *(probe(h.readiness, host_of(h), timeout) for h in servers if h.readiness is not None)
    )
    return {h.replica for h, ok in zip(servers, results, strict=True) if ok}
