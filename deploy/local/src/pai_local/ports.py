"""Addresses and free ports on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

LOOPBACK = "127.0.0.1"


def split_address(address: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port` into host and port."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def dial_address(address: str) -> str:
    """The address a local client dials to reach a server listening on `address`."""
    host, port = split_address(address)
    if host in ("0.0.0.0", ""):
        return f"{LOOPBACK}:{port}"
    if host == "::":
        return f"[::1]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on host:port right now (OSError: not an address of ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like every server sets, so TIME_WAIT leftovers of a previous run do not
        # count as busy; no SO_REUSEPORT, so a live listener (even a gRPC one) does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on now (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def choose_address(default_port: int, host: str = LOOPBACK) -> str:
    """host:default_port when that port is free, otherwise host:<some free port>."""
    if default_port and port_is_free(default_port, host):
        return f"{host}:{default_port}"
    return f"{host}:{free_port(host)}"


async def can_connect(host: str, port: int, deadline: float = 1.0) -> bool:
    """Whether a TCP connection to host:port succeeds."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), deadline)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
