"""Unit tests of the gateway's model and resource building: no Envoy, no I/O."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from pai_gateway import resources
from pai_gateway.ads import Snapshot
from pai_gateway.model import EndpointRoute, GatewayConfig, InvalidRoute, Revision, Upstream
from pai_gateway.store import RouteStore


def route(name: str, *weights: int) -> EndpointRoute:
    revisions = tuple(Revision(f"r{i}", w, (f"127.0.0.1:{9000 + i}",)) for i, w in enumerate(weights))
    return EndpointRoute("predict", name, revisions, resource=f"workspaces/w/services/{name}")


BASE = GatewayConfig(
    upstreams=(Upstream("auth", ("127.0.0.1:50051",)),), routes=(route("a", 90, 10), route("b", 100))
)


def versions(config: GatewayConfig) -> dict[str, dict[str, str]]:
    snap = Snapshot.of(1, resources.build(config))
    return {t: {n: v for n, (v, _) in named.items()} for t, named in snap.items.items()}


def test_one_change_changes_only_what_depends_on_it() -> None:
    before = versions(BASE)
    changed = dataclasses.replace(BASE, routes=(route("a", 50, 50), route("b", 100)))
    after = versions(changed)
    assert before[resources.CLUSTER] == after[resources.CLUSTER]  # weights live in routes only
    assert before[resources.LISTENER] == after[resources.LISTENER]
    assert before[resources.ROUTE] != after[resources.ROUTE]
    moved = dataclasses.replace(
        BASE,
        routes=(
            route("a", 90, 10),
            EndpointRoute(
                "predict",
                "b",
                (Revision("r0", 100, ("127.0.0.1:9999",)),),
                resource="workspaces/w/services/b",
            ),
        ),
    )
    after = versions(moved)
    diff = {
        n
        for n in before[resources.ENDPOINT]
        if before[resources.ENDPOINT][n] != after[resources.ENDPOINT].get(n)
    }
    assert diff == {"ep_predict_b_r0"}  # only the moved replica's endpoints


def test_every_pai_api_is_routed_even_without_a_running_service() -> None:
    names = set(versions(BASE)[resources.CLUSTER])
    for svc in ("auth", "scheduler", "dlc", "eas", "dsw", "lineage", "gateway"):
        assert f"svc_{svc}" in names


@pytest.mark.parametrize(
    "bad,message",
    [
        (route("a", 0, 0), "add up to 0"),
        (route("a", -1, 5), "negative"),
        (EndpointRoute("predict", "a", (), resource="workspaces/w/services/a"), "at least one revision"),
        (
            EndpointRoute("predict", "a", (Revision("r", 1, ()),), resource="workspaces/w/services/a"),
            "replica",
        ),
        (dataclasses.replace(route("a", 1), resource=""), "owning resource"),
        (dataclasses.replace(route("a", 1), kind="ftp"), "unknown route kind"),
    ],
)
def test_invalid_routes_are_refused(bad: EndpointRoute, message: str) -> None:
    with pytest.raises(InvalidRoute, match=message):
        bad.validate()


def test_route_store_round_trip(tmp_path: pathlib.Path) -> None:
    store = RouteStore(tmp_path / "routes.json")
    assert store.load() == ()
    store.save(BASE.routes)
    assert store.load() == BASE.routes
