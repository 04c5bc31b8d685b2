"""What the resource builders share: resource names, packing, durations, addresses, and the memo
that rebuilds a resource only when its inputs change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from envoy.config.core.v3 import address_pb2, config_source_pb2
from google.protobuf import any_pb2, duration_pb2

from pai_gateway.model import EndpointRoute, Revision

LISTENER_NAME = "pai_public"
OTEL_CLUSTER = "otel_collector"
ROUTE_NAME = "pai_routes"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
REVISION_HEADER = "x-pai-revision"

ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


def pack(message: object) -> any_pb2.Any:
    out = any_pb2.Any()
    # Deterministic bytes: map order must not change a resource's digest across restarts.
    out.Pack(message, deterministic=True)  # type: ignore[arg-type]
    return out


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


def address(host_port: str) -> address_pb2.Address:
    host, _, port = host_port.rpartition(":")
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=int(port)))


def service_cluster(name: str) -> str:
    return f"svc_{name}"


def revision_cluster(route: EndpointRoute, revision: Revision) -> str:
    return f"ep_{route.kind}_{route.name}_{revision.name}"


V = TypeVar("V")


class Memo:
    """Built resources by name, rebuilt only when their inputs change. Unbounded by count (an
    LRU of fixed size falls off a cliff once there are more clusters than it holds); names gone
    from the configuration are dropped after each build."""

    def __init__(self) -> None:
        self._items: dict[object, tuple[object, Any]] = {}

    def get(self, name: object, key: object, make: Callable[[], V]) -> V:
        hit = self._items.get(name)
        if hit is not None and hit[0] == key:
            return cast(V, hit[1])
        value = make()
        self._items[name] = (key, value)
        return value

    def keep_only(self, names: set[object]) -> None:
        for name in [n for n in self._items if n not in names]:
            del self._items[name]
