"""Endpoint routes derived from the facts eas and dsw publish.

The control plane replays `pai.eas.>` and `pai.dsw.>` from the start of the `PAI` stream on
every start (an ordered consumer: no state of its own to lose), so the routes it derives are
always those the history implies. eas: `TrafficChanged` (the resolved split, newest
`traffic_generation` wins), `ReplicaReady` / `ReplicaRemoved` (replica addresses),
`ServiceDeleted`. dsw: `NotebookStateChanged` (a RUNNING notebook with an internal endpoint
is routed at its `access_path`; any other state removes the route), `NotebookDeleted`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from pai.dsw.v1 import events_pb2 as dsw_events
from pai.dsw.v1 import notebook_pb2
from pai.eas.v1 import events_pb2 as eas_events
from pai_gateway.control import ControlPlane
from pai_gateway.model import EndpointRoute, InvalidRoute, Revision

log = logging.getLogger(__name__)
SUBJECTS = ("pai.eas.>", "pai.dsw.>")


@dataclass
class _Service:
    generation: int = -1
    traffic: dict[str, int] = field(default_factory=dict)  # revision id -> percent
    replicas: dict[str, dict[str, str]] = field(default_factory=dict)  # revision id -> replica -> address


def _last(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _service_of(name: str) -> str:
    """`workspaces/w/services/s` of a service or revision name."""
    return "/".join(name.split("/")[:4])


class RouteProjection:
    """Applies eas and dsw facts to the control plane's endpoint routes."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._services: dict[str, _Service] = {}

    def apply(self, message: Message) -> None:
        """Fold one fact into the routes; unknown facts are ignored (forward compatible)."""
        if isinstance(message, eas_events.TrafficChanged):
            svc = self._services.setdefault(message.service.name, _Service())
            if message.service.traffic_generation < svc.generation:
                return  # a stale snapshot, delivered late
            svc.generation = message.service.traffic_generation
            svc.traffic = {
                _last(t.revision): t.percent for t in message.service.resolved_traffic if t.revision
            }
            self._route(message.service.name)
        elif isinstance(message, (eas_events.ReplicaReady, eas_events.ReplicaRemoved)):
            service = _service_of(message.revision.name)
            svc = self._services.setdefault(service, _Service())
            replicas = svc.replicas.setdefault(_last(message.revision.name), {})
            if isinstance(message, eas_events.ReplicaReady) and message.replica.http_address:
                replicas[message.replica.name] = message.replica.http_address
            else:
                replicas.pop(message.replica.name, None)
            self._route(service)
        elif isinstance(message, eas_events.ServiceDeleted):
            self._services.pop(message.service.name, None)
            if self._owner_of("predict", _last(message.service.name)) == message.service.name:
                self._control.remove_route("predict", _last(message.service.name))
        elif isinstance(message, dsw_events.NotebookStateChanged):
            self._notebook(message.notebook)
        elif isinstance(message, dsw_events.NotebookDeleted):
            self._control.remove_route("dsw", message.notebook.uid)

    def _route(self, service: str) -> None:
        svc = self._services[service]
        revisions = tuple(
            Revision(rev, percent, tuple(sorted(svc.replicas.get(rev, {}).values())))
            for rev, percent in sorted(svc.traffic.items())
            if svc.replicas.get(rev)
        )
        route = EndpointRoute("predict", _last(service), revisions, resource=service)
        owner = self._owner_of("predict", route.name)
        if owner not in ("", service):
            # `/api/predict/{id}` is one namespace for every workspace: the first service keeps it.
            log.error("%s cannot take /api/predict/%s/: %s already serves there", service, route.name, owner)
            return
        try:
            route.validate()
        except InvalidRoute:
            # Nothing routable yet (no ready replica of a revision with traffic): not served.
            self._control.remove_route("predict", route.name)
            return
        self._control.set_route(route)

    def _owner_of(self, kind: str, name: str) -> str:
        """The resource that currently owns a route name, or ''."""
        for r in self._control.config.routes:
            if (r.kind, r.name) == (kind, name):
                return r.resource
        return ""

    def _notebook(self, notebook: notebook_pb2.Notebook) -> None:
        uid = notebook.uid
        if notebook.state != notebook_pb2.Notebook.RUNNING or not notebook.internal_endpoint:
            self._control.remove_route("dsw", uid)
            return
        base = f"/dsw/{uid}/"  # the route's own prefix; the server serves under it
        self._control.set_route(
            EndpointRoute(
                "dsw",
                uid,
                (Revision("server", 100, (notebook.internal_endpoint,), health_path=f"{base}api"),),
                resource=notebook.name,
                owner=notebook.owner,
                websocket=True,
            )
        )


async def follow(
    js: object, projection: RouteProjection, stream: str = "PAI", caught_up: asyncio.Event | None = None
) -> list[object]:
    """Replay, then follow, eas and dsw facts; returns the subscriptions (unsubscribe to stop).

    `caught_up` is set once the history that existed at the start has been applied, so a
    restarted control plane serves Envoy the routes history implies, not a state from halfway.
    """
    from nats.aio.msg import Msg
    from nats.js.api import DeliverPolicy
    from nats.js.client import JetStreamContext

    from pai_common.consumer import decode

    assert isinstance(js, JetStreamContext)

    behind: set[str] = set()

    def check(subject: str, pending: int) -> None:
        if pending == 0:
            behind.discard(subject)
        if caught_up is not None and not behind:
            caught_up.set()

    def handler(subject: str) -> Callable[[Msg], Awaitable[None]]:
        async def handle(msg: Msg) -> None:
            try:
                event = decode(msg)
                if event.message is not None:
                    projection.apply(event.message)
            except Exception:
                log.exception("could not apply the event on %s", msg.subject)
            check(subject, msg.metadata.num_pending)

        return handle

    subs: list[object] = []
    for subject in SUBJECTS:
        info = await js.stream_info(stream, subjects_filter=subject)
        if info.state.subjects:  # something to replay on this subject
            behind.add(subject)
        subs.append(
            await js.subscribe(
                subject,
                stream=stream,
                cb=handler(subject),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
        )
    check("", 1)
    return subs
