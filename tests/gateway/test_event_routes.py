"""Routes derived from eas and dsw facts on JetStream. The facts are published here by the test
(a stand-in producer: eas and dsw are built by later issues); the stream, the gateway's
projection, Envoy and auth are real."""

from __future__ import annotations

import asyncio
import collections
import uuid

import aiohttp
import nats
from google.protobuf.message import Message

from pai.auth.v1 import identity_pb2, identity_pb2_grpc, workspace_pb2, workspace_pb2_grpc
from pai.dsw.v1 import events_pb2 as dsw_events
from pai.dsw.v1 import notebook_pb2
from pai.eas.v1 import events_pb2 as eas_events
from pai.eas.v1 import revision_pb2, service_pb2
from pai_common import events
from pai_common.clock import utcnow
from pai_common.grpc_client import channel
from pai_common.testing import NatsServer
from pai_gateway.projection import RouteProjection, follow

from .conftest import Gateway, standins
from .test_traffic import Tally, load

SERVICE = "workspaces/default/services/qa"


async def publish(js: object, subject: str, message: Message) -> None:
    event_id = uuid.uuid4().hex
    headers = events.cloudevent_headers(event_id, "//eas.pai.dev", message.DESCRIPTOR.full_name, utcnow(), {})
    await js.publish(subject, message.SerializeToString(), headers=headers)  # type: ignore[attr-defined]


def traffic(generation: int, **percent: int) -> eas_events.TrafficChanged:
    service = service_pb2.Service(name=SERVICE, traffic_generation=generation)
    for rev, p in percent.items():
        service.resolved_traffic.append(
            service_pb2.TrafficTarget(revision=f"{SERVICE}/revisions/{rev}", percent=p)
        )
    return eas_events.TrafficChanged(service=service)


def ready(rev: str, replica: str, address: str) -> eas_events.ReplicaReady:
    return eas_events.ReplicaReady(
        revision=revision_pb2.Revision(name=f"{SERVICE}/revisions/{rev}"),
        replica=revision_pb2.ReplicaStatus(name=replica, http_address=address),
    )


async def until_routed(gw: Gateway, path: str, want: int, key: str | None = None) -> None:
    headers = {"authorization": f"Bearer {key or gw.admin_key}"}
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(f"{gw.url}{path}", headers=headers) as resp:
                if resp.status == want:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never answered {want}")


async def test_eas_facts_become_weighted_routes(gateway: Gateway, nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await events.ensure_stream(js)
    with standins(("r1", "a"), ("r2", "a")) as ups:
        (a1, _), (a2, _) = ups
        # Facts published before the gateway follows are replayed from the stream.
        await publish(js, "pai.eas.replica.ready", ready("r1", "r1-0", a1))
        await publish(js, "pai.eas.service.traffic_changed", traffic(1, r1=100))
        subs = await follow(js, RouteProjection(gateway.plane.control))
        try:
            await until_routed(gateway, "/api/predict/qa/v2/health/ready", 200)
            await publish(js, "pai.eas.replica.ready", ready("r2", "r2-0", a2))
            await publish(js, "pai.eas.service.traffic_changed", traffic(3, r1=50, r2=50))
            await publish(js, "pai.eas.service.traffic_changed", traffic(2, r1=100))  # stale: ignored
            await asyncio.sleep(0.5)
            await gateway.plane.ads.wait_applied(await gateway.plane.control.flush(), 10)
            split = Tally()
            await load(gateway, split, 1000)
            assert not split.failures and abs(split.share("r1") - 50) <= 7, split.revisions

            await publish(
                js,
                "pai.eas.service.deleted",
                eas_events.ServiceDeleted(service=service_pb2.Service(name=SERVICE)),
            )
            await until_routed(gateway, "/api/predict/qa/x", 404)
        finally:
            for sub in subs:
                await sub.unsubscribe()  # type: ignore[attr-defined]
            await nc.close()


async def test_running_notebooks_are_routed_to_their_owner_only(
    gateway: Gateway, nats_server: NatsServer
) -> None:
    ch = channel(gateway.target, gateway.admin_key)
    ids = identity_pb2_grpc.IdentityServiceStub(ch)
    keys = {}
    for user in ("nora", "dev"):
        await ids.CreateUser(identity_pb2.CreateUserRequest(user_id=user, user=identity_pb2.User()))
        await workspace_pb2_grpc.WorkspaceServiceStub(ch).CreateMember(
            workspace_pb2.CreateMemberRequest(
                parent="workspaces/default",
                member=workspace_pb2.Member(user=f"users/{user}", role=identity_pb2.DEVELOPER),
            )
        )
        keys[user] = (await ids.CreateApiKey(identity_pb2.CreateApiKeyRequest(parent=f"users/{user}"))).secret
    await ch.close()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await events.ensure_stream(js)
    with standins(("nb", "a")) as ups:
        ((address, _),) = ups
        notebook = notebook_pb2.Notebook(
            name="workspaces/default/notebooks/dev1",
            uid="u123",
            owner="users/nora",
            state=notebook_pb2.Notebook.RUNNING,
            access_path="/dsw/u123/",
            internal_endpoint=address,
        )
        subs = await follow(js, RouteProjection(gateway.plane.control))
        try:
            await publish(
                js, "pai.dsw.notebook.state_changed", dsw_events.NotebookStateChanged(notebook=notebook)
            )
            await until_routed(gateway, "/dsw/u123/lab", 200, keys["nora"])
            async with aiohttp.ClientSession() as http:
                seen = collections.Counter()
                for who in ("nora", "dev"):
                    async with http.get(
                        f"{gateway.url}/dsw/u123/lab", headers={"authorization": f"Bearer {keys[who]}"}
                    ) as r:
                        seen[who] = r.status
                        if who == "nora":
                            assert (await r.json())["path"] == "/dsw/u123/lab"  # forwarded unchanged
            assert seen == {"nora": 200, "dev": 403}  # a developer of the same workspace is not the owner
            notebook.state = notebook_pb2.Notebook.STOPPED
            await publish(
                js, "pai.dsw.notebook.state_changed", dsw_events.NotebookStateChanged(notebook=notebook)
            )
            await until_routed(gateway, "/dsw/u123/lab", 404, keys["nora"])
        finally:
            for sub in subs:
                await sub.unsubscribe()  # type: ignore[attr-defined]
            await nc.close()
