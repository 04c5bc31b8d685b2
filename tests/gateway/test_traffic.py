"""Endpoint traffic through the real Envoy: weighted splits, live changes, pinning, dead replicas,
control-plane restarts and rejected updates. The upstreams are stand-in model servers
(separate processes); Envoy, the control plane and auth are real."""

from __future__ import annotations

import asyncio
import collections
import io
import os
import signal
from dataclasses import dataclass, field

import aiohttp
import pytest

from pai_gateway import resources
from pai_gateway.app import serve
from pai_gateway.model import EndpointRoute, InvalidRoute, Revision

from .conftest import Gateway, standins

RESOURCE = "workspaces/default/services/qa"


def route(*revisions: Revision) -> EndpointRoute:
    return EndpointRoute("predict", "qa", revisions, resource=RESOURCE)


@dataclass
class Tally:
    revisions: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.revisions.values()) + len(self.failures)

    def share(self, revision: str) -> float:
        return 100.0 * self.revisions[revision] / max(1, sum(self.revisions.values()))


async def load(
    gw: Gateway, tally: Tally, count: int, concurrency: int = 12, headers: dict[str, str] | None = None
) -> None:
    """`count` inference calls through the gateway, `concurrency` at a time."""
    sent = 0
    hdrs = {"authorization": f"Bearer {gw.admin_key}", **(headers or {})}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def worker() -> None:
            nonlocal sent
            while sent < count:
                sent += 1
                try:
                    async with http.post(
                        f"{gw.url}/api/predict/qa/v2/models/m/infer", json={"inputs": []}, headers=hdrs
                    ) as resp:
                        if resp.status != 200:
                            tally.failures.append(f"{resp.status} {await resp.text()}"[:200])
                            continue
                        tally.revisions[(await resp.json())["revision"]] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    tally.failures.append(repr(exc))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def apply(gw: Gateway, r: EndpointRoute) -> None:
    gw.plane.control.set_route(r)
    version = await gw.plane.control.flush()
    assert await gw.plane.ads.wait_applied(version, 15), "Envoy did not apply the change"


async def test_weighted_split_live_change_and_pinning(gateway: Gateway) -> None:
    with standins(("r1", "a"), ("r2", "a")) as ups:
        (a1, _), (a2, _) = ups
        await apply(gateway, route(Revision("r1", 90, (a1,)), Revision("r2", 10, (a2,))))
        first = Tally()
        await load(gateway, first, 2000)
        assert not first.failures, first.failures[:5]
        assert abs(first.share("r1") - 90) <= 5, first.revisions

        during = Tally()
        loader = asyncio.create_task(load(gateway, during, 1500))
        await asyncio.sleep(0.5)
        await apply(gateway, route(Revision("r1", 50, (a1,)), Revision("r2", 50, (a2,))))
        await loader
        assert not during.failures, during.failures[:5]  # no request failed during the change

        after = Tally()
        await load(gateway, after, 2000)
        assert not after.failures
        assert abs(after.share("r1") - 50) <= 5, after.revisions

        pinned = Tally()
        await load(gateway, pinned, 200, headers={"x-pai-revision": "r2"})
        assert pinned.revisions == collections.Counter({"r2": 200})

        # The endpoint's own check: a viewer-less outsider key is refused at the gateway.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{gateway.url}/api/predict/qa/x",
                headers={"authorization": "Bearer pai_aaaaaaaa_" + "b" * 43},
            ) as resp,
        ):
            assert resp.status == 401
        async with aiohttp.ClientSession() as http, http.post(f"{gateway.url}/api/predict/qa/x") as resp:
            assert resp.status == 401


async def test_a_killed_replica_is_ejected_and_almost_nothing_fails(gateway: Gateway) -> None:
    with standins(("r1", "a"), ("r1", "b")) as ups:
        (a, _), (b, proc_b) = ups
        await apply(gateway, route(Revision("r1", 100, (a, b))))
        await asyncio.sleep(1.5)  # both replicas seen healthy
        tally = Tally()
        loader = asyncio.create_task(load(gateway, tally, 4000, concurrency=16))
        while tally.total < 800:  # noqa: ASYNC110 - polling a counter the load task advances
            await asyncio.sleep(0.02)
        os.kill(proc_b.pid, signal.SIGKILL)
        await loader
        assert tally.total == 4000
        assert len(tally.failures) < 4000 * 0.001, tally.failures[:5]  # under 0.1 %


async def test_traffic_survives_a_control_plane_restart_and_resyncs(gateway: Gateway) -> None:
    with standins(("r1", "a"), ("r2", "a")) as ups:
        (a1, _), (a2, _) = ups
        await apply(gateway, route(Revision("r1", 100, (a1,)), Revision("r2", 0, (a2,))))
        address = gateway.plane.address
        config = gateway.plane.control.config
        await gateway.plane.control.stop()
        await gateway.plane.server.stop(0)  # the control plane is gone

        while_down = Tally()
        await load(gateway, while_down, 500)
        assert not while_down.failures and while_down.revisions == collections.Counter({"r1": 500})

        async with serve(config, address) as restarted:  # back, with a change made meanwhile
            restarted.control.set_route(route(Revision("r1", 0, (a1,)), Revision("r2", 100, (a2,))))
            version = await restarted.control.flush()
            assert await restarted.ads.wait_applied(version, 20)
            after = Tally()
            await load(gateway, after, 300)
            assert not after.failures and after.revisions == collections.Counter({"r2": 300})


async def test_rejected_updates_leave_the_last_good_config_serving(gateway: Gateway) -> None:
    with standins(("r1", "a"), ("r2", "a")) as ups:
        (a1, _), (a2, _) = ups
        good = route(Revision("r1", 100, (a1,)), Revision("r2", 0, (a2,)))
        await apply(gateway, good)

        with pytest.raises(InvalidRoute, match="add up to 0"):  # refused by our own validation
            gateway.plane.control.set_route(route(Revision("r1", 0, (a1,)), Revision("r2", 0, (a2,))))
        assert "add up to 0" in gateway.plane.ads.rejections[-1]

        # Refused by Envoy: a route table naming no cluster at all (validation skipped on purpose).
        import dataclasses

        bad = dataclasses.replace(gateway.plane.control.config, routes=(route(Revision("r1", 0, (a1,))),))
        version = gateway.plane.control.force(bad)
        assert not await gateway.plane.ads.wait_applied(version, 3)
        node = next(iter(gateway.plane.ads.nodes.values()))
        assert node.types[resources.ROUTE].nacked_version == str(version)
        assert node.types[resources.ROUTE].nack_message
        still = Tally()
        await load(gateway, still, 200)
        assert not still.failures and still.revisions == collections.Counter({"r1": 200})

        fixed = dataclasses.replace(bad, routes=(good,))
        version = gateway.plane.control.force(fixed)
        assert await gateway.plane.ads.wait_applied(version, 10)  # a good change after a NACK applies


async def test_notebook_route_upgrades_websockets(gateway: Gateway) -> None:
    with standins(("nb", "a")) as ups:
        ((address, _),) = ups
        notebook = EndpointRoute(
            "dsw",
            "nb-1",
            (Revision("nb", 100, (address,)),),
            resource="workspaces/default/notebooks/nb-1",
            websocket=True,
        )
        await apply(gateway, notebook)
        headers = {"authorization": f"Bearer {gateway.admin_key}"}
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(
                f"{gateway.url}/dsw/nb-1/api/kernels/k/channels", headers=headers
            ) as ws:
                await ws.send_str("hello")
                assert (await ws.receive(timeout=5)).data == "nb:hello"
            async with http.get(f"{gateway.url}/dsw/nb-1/lab") as resp:
                assert resp.status == 401  # only callers allowed on the notebook get in


async def test_envoy_accepts_tracing_to_the_services_collector(gateway: Gateway) -> None:
    import dataclasses

    from pai_common.testing import free_port

    traced = dataclasses.replace(gateway.plane.control.config, otlp_endpoint=f"127.0.0.1:{free_port()}")
    version = gateway.plane.control.force(traced)
    assert await gateway.plane.ads.wait_applied(version, 10)  # ACKed: Envoy took the tracer config
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200


async def test_a_refused_cluster_is_not_retried_and_routes_do_not_name_it(gateway: Gateway) -> None:
    import dataclasses

    with standins(("r1", "a"), ("r2", "a")) as ups:
        (a1, _), (a2, _) = ups
        await apply(gateway, route(Revision("r1", 100, (a1,))))
        # An empty health-check path passes our model but not Envoy's validation of clusters.
        bad = route(Revision("r1", 50, (a1,)), Revision("r2", 50, (a2,), health_path=""))
        version = gateway.plane.control.force(
            dataclasses.replace(gateway.plane.control.config, routes=(bad,))
        )
        assert not await gateway.plane.ads.wait_applied(version, 3)
        node = next(iter(gateway.plane.ads.nodes.values()))
        assert node.types[resources.CLUSTER].nacked_version == str(version)
        refused = dict(gateway.plane.ads.rejected)
        assert (resources.CLUSTER, "ep_predict_qa_r2") in refused
        still = Tally()
        await load(gateway, still, 300)
        assert not still.failures and still.revisions == collections.Counter({"r1": 300})  # old routes kept

        # Another publish does not send the refused cluster again.
        again = gateway.plane.control.force(dataclasses.replace(gateway.plane.control.config, routes=(bad,)))
        assert not await gateway.plane.ads.wait_applied(again, 2)
        assert node.types[resources.CLUSTER].nacked_version == str(version)  # no new NACK: not resent

        # Fixing the cluster gives it a new version, which is applied with the routes that need it.
        good = route(Revision("r1", 50, (a1,)), Revision("r2", 50, (a2,)))
        await apply(gateway, good)
        split = Tally()
        await load(gateway, split, 600)
        assert not split.failures and set(split.revisions) == {"r1", "r2"}


async def test_big_bodies_unknown_pins_and_bad_addresses(gateway: Gateway) -> None:
    with standins(("r1", "a")) as ups:
        ((a1, _),) = ups
        await apply(gateway, route(Revision("r1", 100, (a1,))))
        headers = {"authorization": f"Bearer {gateway.admin_key}"}
        async with aiohttp.ClientSession() as http:
            body = b"x" * (3 << 20)  # 3 MiB of inference input: not buffered for the auth check
            async with http.post(
                f"{gateway.url}/api/predict/qa/v2/models/m/infer", data=io.BytesIO(body), headers=headers
            ) as resp:
                assert resp.status == 200 and (await resp.json())["bytes"] == len(body)
            async with http.get(
                f"{gateway.url}/api/predict/qa/x", headers={**headers, "x-pai-revision": "nope"}
            ) as resp:
                assert resp.status == 404 and (await resp.json())["code"] == 5
            async with http.get(
                f"{gateway.url}/api/predict/qa/x", headers={**headers, "x_pai_principal": "users/root"}
            ) as resp:
                assert resp.status == 400  # underscore twins of our headers are refused
        with pytest.raises(InvalidRoute, match="ip:port"):
            gateway.plane.control.set_route(route(Revision("r1", 100, ("nohost",))))
        # The control plane keeps publishing after a refused change.
        await apply(gateway, route(Revision("r1", 100, (a1,)), Revision("r2", 0, (a1,))))
