"""A delta Aggregated Discovery Service: versioned snapshots pushed to Envoy, make-before-break.

One snapshot serves every connected Envoy. A resource's version is a digest of its bytes, so a
change rebuilds and resends only the resources it touched, and an Envoy that reconnects (after a
control-plane restart) is sent only what it lacks. Pushes are gated on ACKs: new clusters first,
then listeners and routes, and stale clusters last. A NACKed snapshot is recorded and never
retried; Envoy keeps serving its last good configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from pai_gateway import resources as r

log = logging.getLogger(__name__)
Resources = dict[str, dict[str, any_pb2.Any]]


@dataclass(frozen=True)
class Snapshot:
    """Every resource with its content version, and the snapshot's own number."""

    version: int
    items: dict[str, dict[str, tuple[str, any_pb2.Any]]]

    @staticmethod
    def of(version: int, built: Resources, previous: Snapshot | None = None) -> Snapshot:
        """Version each resource by a digest of its bytes; an unchanged (same, cached) resource
        object keeps its previous digest without being serialized again."""
        items: dict[str, dict[str, tuple[str, any_pb2.Any]]] = {}
        for t, named in built.items():
            before = previous.items.get(t, {}) if previous is not None else {}
            out = {}
            for name, res in named.items():
                old = before.get(name)
                if old is not None and old[1] is res:
                    out[name] = old
                else:
                    out[name] = (hashlib.sha256(res.SerializeToString()).hexdigest()[:16], res)
            items[t] = out
        return Snapshot(version, items)


@dataclass
class TypeStatus:
    """What one Envoy last did with one resource type."""

    acked_version: str = ""
    acked_at: float = 0.0
    nacked_version: str = ""
    nack_message: str = ""
    nacked_at: float = 0.0


@dataclass
class NodeStatus:
    """One connected (or last connected) Envoy."""

    node_id: str
    connected: bool = True
    synced_version: int = 0  # the newest snapshot this Envoy holds completely
    types: dict[str, TypeStatus] = field(default_factory=lambda: {t: TypeStatus() for t in r.TYPES})


@dataclass
class _Stream:
    node: NodeStatus
    subscribed: dict[str, set[str]] = field(default_factory=dict)  # explicit names per type
    wildcard: set[str] = field(default_factory=set)
    sent: dict[str, dict[str, str]] = field(default_factory=lambda: {t: {} for t in r.TYPES})
    # type -> (nonce, snapshot version, {name: version Envoy held before, or None})
    pending: dict[str, tuple[str, int, dict[str, str | None]]] = field(default_factory=dict)


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """The xDS server. `publish` a new set of resources; every stream pushes the difference."""

    def __init__(self) -> None:
        self.snapshot = Snapshot(0, {t: {} for t in r.TYPES})
        self.nodes: dict[str, NodeStatus] = {}
        self.rejections: list[str] = []  # control-plane validation refusals, newest last
        # Resource versions some Envoy refused: never sent again (no retry loop); a later
        # change of the resource gives it a new version, which is tried.
        self.rejected: dict[tuple[str, str], str] = {}
        self._wakeups: set[asyncio.Queue[Any]] = set()
        self._acked = asyncio.Condition()

    def publish(self, built: Resources) -> int:
        """Install a new snapshot and wake every stream; returns its version."""
        self.snapshot = Snapshot.of(self.snapshot.version + 1, built, self.snapshot)
        for queue in self._wakeups:
            queue.put_nowait(None)
        return self.snapshot.version

    async def wait_applied(self, version: int, timeout: float = 10.0) -> bool:
        """Until some Envoy has ACKed every type at `version` or later (tests and benchmarks)."""

        def applied() -> bool:
            return any(node.synced_version >= version for node in self.nodes.values() if node.connected)

        async with self._acked:
            try:
                await asyncio.wait_for(self._acked.wait_for(applied), timeout)
            except TimeoutError:
                return False
        return True

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._wakeups.add(queue)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    queue.put_nowait(request)
            finally:
                queue.put_nowait(StopAsyncIteration)

        reader = asyncio.create_task(read())
        stream: _Stream | None = None
        try:
            while True:
                item = await queue.get()
                if item is StopAsyncIteration:
                    return
                if isinstance(item, discovery_pb2.DeltaDiscoveryRequest):
                    if stream is None:
                        node = NodeStatus(item.node.id or "unknown")
                        self.nodes[node.node_id] = node
                        stream = _Stream(node)
                        log.info("envoy %s connected", node.node_id)
                    await self._receive(stream, item)
                if stream is not None:
                    for response in self._next(stream):
                        yield response
        finally:
            self._wakeups.discard(queue)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if stream is not None:
                stream.node.connected = False
                log.info("envoy %s disconnected", stream.node.node_id)

    async def _receive(self, stream: _Stream, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        t = request.type_url
        if t not in r.TYPES:
            return
        if request.initial_resource_versions:  # a reconnecting Envoy says what it already holds
            stream.sent[t].update(request.initial_resource_versions)
        names = stream.subscribed.setdefault(t, set())
        for name in request.resource_names_subscribe:
            if name == "*":
                stream.wildcard.add(t)
            else:
                names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                stream.wildcard.discard(t)
            names.discard(name)
            stream.sent[t].pop(name, None)
        if (
            t in (r.CLUSTER, r.LISTENER)
            and not request.resource_names_subscribe
            and not request.response_nonce
        ):
            stream.wildcard.add(t)  # the first LDS/CDS request with no names is a wildcard one
        pending = stream.pending.get(t)
        if pending is None or request.response_nonce != pending[0]:
            return
        del stream.pending[t]
        status = stream.node.types[t]
        now = time.time()
        if request.HasField("error_detail"):
            status.nacked_version = str(pending[1])
            status.nack_message = request.error_detail.message
            status.nacked_at = now
            for name, before in pending[2].items():
                sent_version = stream.sent[t].get(name)
                if sent_version is not None:
                    self.rejected[(t, name)] = sent_version
                # Envoy still holds what it had before: remember that, not what it refused.
                if before is None:
                    stream.sent[t].pop(name, None)
                else:
                    stream.sent[t][name] = before
            self.rejected = {
                k: v for k, v in self.rejected.items() if k[1] in self.snapshot.items.get(k[0], {})
            }
            log.error(
                "envoy %s rejected %s version %s: %s",
                stream.node.node_id,
                t.rsplit(".", 1)[1],
                pending[1],
                request.error_detail.message,
            )
        else:
            status.acked_version = str(pending[1])
            status.acked_at = now
        async with self._acked:
            self._acked.notify_all()

    def _wants(self, stream: _Stream, t: str, name: str) -> bool:
        return t in stream.wildcard or name in stream.subscribed.get(t, set())

    def _delta(
        self, stream: _Stream, t: str, upserts: bool, removals: bool
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        snapshot = self.snapshot
        current = snapshot.items.get(t, {})
        sent = stream.sent[t]
        out = discovery_pb2.DeltaDiscoveryResponse(type_url=t, system_version_info=str(snapshot.version))
        before: dict[str, str | None] = {}
        if upserts:
            for name, (version, resource) in current.items():
                if (
                    self._wants(stream, t, name)
                    and sent.get(name) != version
                    and self.rejected.get((t, name)) != version
                ):
                    out.resources.append(
                        discovery_pb2.Resource(name=name, version=version, resource=resource)
                    )
                    before[name] = sent.get(name)
                    sent[name] = version
        if removals:
            for name in [n for n in sent if n not in current]:
                out.removed_resources.append(name)
                del sent[name]
        if not out.resources and not out.removed_resources:
            return None
        out.nonce = uuid.uuid4().hex
        stream.pending[t] = (out.nonce, snapshot.version, before)
        return out

    def _refused_now(self, types: tuple[str, ...]) -> bool:
        """Whether the current snapshot holds a resource of these types that Envoy refused."""
        return any(
            self.rejected.get((t, name)) == version
            for t in types
            for name, (version, _) in self.snapshot.items.get(t, {}).items()
        )

    def _next(self, stream: _Stream) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        """The responses allowed now, in make-before-break order."""
        out = self._phases(stream)
        if not out and not stream.pending and self._holds_all(stream):
            stream.node.synced_version = self.snapshot.version
            self._notify()
        return out

    def _holds_all(self, stream: _Stream) -> bool:
        """Whether Envoy has ACKed every resource of the snapshot at its current version."""
        if self._refused_now(r.TYPES):
            return False
        return all(
            stream.sent[t].get(name) == version
            for t, named in self.snapshot.items.items()
            for name, (version, _) in named.items()
        )

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._acked:
                self._acked.notify_all()

        asyncio.get_running_loop().create_task(wake())

    def _phases(self, stream: _Stream) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        out = []
        if r.ENDPOINT not in stream.pending and (eds := self._delta(stream, r.ENDPOINT, True, False)):
            out.append(eds)  # endpoints never break anything: always current
        if r.CLUSTER in stream.pending:
            return out
        if cds := self._delta(stream, r.CLUSTER, True, False):
            return [*out, cds]  # new clusters must be ACKed before routes may name them
        if self._refused_now((r.CLUSTER, r.ENDPOINT)) and stream.sent[r.ROUTE]:
            # A refused cluster must not be named by new routes: an Envoy with a last good
            # route table keeps it. A fresh Envoy gets the rest, which beats serving nothing.
            return out
        for t in (r.LISTENER, r.ROUTE):
            if t not in stream.pending and (resp := self._delta(stream, t, True, True)):
                out.append(resp)
        if r.LISTENER in stream.pending or r.ROUTE in stream.pending:
            return out
        if cds_removed := self._delta(stream, r.CLUSTER, False, True):
            out.append(cds_removed)  # stale clusters go last, when no route names them
        return out
