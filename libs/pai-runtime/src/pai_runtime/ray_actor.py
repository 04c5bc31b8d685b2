"""What runs on a Ray node for the Ray backend: a replica's actor, and the task that kills orphans.

Both run a `LocalBackend` on their node, so a replica there is the same supervised process group as
with the local backend, in a session of its own, as a child of its actor. These classes and functions
are pickled by reference: every node's Ray workers must be able to import `pai_runtime`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from pai_runtime.local import LocalBackend
from pai_runtime.types import GangLaunch, ReplicaExit, ReplicaHandle


class ReplicaActor:
    """A replica's agent on its node (a Ray actor): starts the replica there, watches it, stops it."""

    def __init__(self) -> None:
        self._backend = LocalBackend()
        self._starting: asyncio.Future[list[ReplicaHandle]] | None = None
        self._handle: ReplicaHandle | None = None

    def where(self) -> tuple[str, int]:
        """This node's IP and a port free on it."""
        import ray.util

        node_ip: Callable[[], str] = ray.util.get_node_ip_address
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))  # free on every address of the node
            port: int = s.getsockname()[1]
        return node_ip(), port

    async def start(self, gang: GangLaunch) -> ReplicaHandle:
        """Starts the one replica of `gang` and returns once its command runs."""
        self._starting = asyncio.ensure_future(self._backend.launch(gang))
        (self._handle,) = await self._starting
        return self._handle

    def poll(self, handle: ReplicaHandle) -> list[ReplicaExit]:
        return self._backend.poll([handle])

    async def kill(self, handle: ReplicaHandle, grace: float) -> list[ReplicaExit]:
        await self._backend.kill([handle], grace)
        return self._backend.poll([handle])

    async def stop(self) -> None:
        """Kills the replica at once, if one started (its launch failed elsewhere in the gang)."""
        starting = self._starting
        if starting is not None:
            # A start still under way ends first: it kills what it started itself if it fails.
            await asyncio.wait([starting])
            if self._handle is None and not starting.cancelled() and starting.exception() is None:
                (self._handle,) = starting.result()
        if self._handle is not None:
            await self._backend.kill([self._handle], 0)


def kill_on_node(handles: list[ReplicaHandle], grace: float) -> list[ReplicaExit]:
    """A Ray task on the replicas' node: kills them when their actor is gone (found by pid and start time)."""
    backend = LocalBackend()

    async def kill() -> list[ReplicaExit]:
        await backend.kill(handles, grace)
        return backend.poll(handles)

    return asyncio.run(kill())
