"""What the gateway should route: plain data, from which every Envoy resource is derived."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

SERVICES = ("auth", "scheduler", "dlc", "eas", "dsw", "lineage", "gateway")


class InvalidRoute(ValueError):
    """A route the control plane refuses before Envoy ever sees it."""


def check_address(address: str, where: str) -> None:
    """Replica addresses are `ip:port` (Envoy's endpoints take IP literals, not host names)."""
    host, sep, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        valid = bool(sep) and 0 < int(port) < 65536
    except ValueError:
        valid = False
    if not valid:
        raise InvalidRoute(f"{where}: replica address {address!r} is not ip:port")


@dataclass(frozen=True)
class Upstream:
    """One pai gRPC service and the addresses (host:port) of its replicas."""

    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Revision:
    """One revision of a serving endpoint: its traffic weight and its replicas."""

    name: str
    weight: int
    addresses: tuple[str, ...]
    health_path: str = "/v2/health/ready"


@dataclass(frozen=True)
class EndpointRoute:
    """`/api/predict/{service}/...` (or `/dsw/{id}/...`) spread over revisions by weight."""

    kind: str  # "predict" or "dsw"
    name: str
    revisions: tuple[Revision, ...]
    resource: str = ""  # the owning resource, e.g. workspaces/w/services/s: who may call is decided on it
    permission: str = ""  # e.g. eas.services.predict; the default follows the kind
    websocket: bool = False
    owner: str = ""  # when set (notebooks), only this principal (or a platform admin) gets in

    @property
    def required_permission(self) -> str:
        return self.permission or (
            "eas.services.predict" if self.kind == "predict" else "dsw.notebooks.connect"
        )

    def validate(self) -> None:
        if self.kind not in ("predict", "dsw"):
            raise InvalidRoute(f"unknown route kind {self.kind!r}")
        if not self.name or "/" in self.name:
            raise InvalidRoute(f"route name {self.name!r} must be one path segment")
        if not self.resource.startswith("workspaces/"):
            raise InvalidRoute(f"{self.name}: the owning resource (workspaces/...) is required")
        if not self.revisions:
            raise InvalidRoute(f"{self.name}: a route needs at least one revision")
        names = [r.name for r in self.revisions]
        if len(set(names)) != len(names):
            raise InvalidRoute(f"{self.name}: revision names repeat")
        for r in self.revisions:
            if r.weight < 0:
                raise InvalidRoute(f"{self.name}/{r.name}: weight must not be negative")
            if not r.addresses:
                raise InvalidRoute(f"{self.name}/{r.name}: a revision needs at least one replica")
            for address in r.addresses:
                check_address(address, f"{self.name}/{r.name}")
        if sum(r.weight for r in self.revisions) <= 0:
            raise InvalidRoute(f"{self.name}: weights add up to 0; at least one revision must get traffic")

    @property
    def prefix(self) -> str:
        return f"/api/predict/{self.name}/" if self.kind == "predict" else f"/dsw/{self.name}/"


@dataclass(frozen=True)
class GatewayConfig:
    """Everything one Envoy serves."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    upstreams: tuple[Upstream, ...] = ()
    routes: tuple[EndpointRoute, ...] = field(default_factory=tuple)
    descriptor_set: bytes = b""
    grpc_services: tuple[str, ...] = ()  # full names the transcoder serves as HTTP/JSON
    access_log_path: str = "/dev/stdout"
    otlp_endpoint: str = ""  # host:port of an OTLP/gRPC collector: Envoy's spans go where the services' go
