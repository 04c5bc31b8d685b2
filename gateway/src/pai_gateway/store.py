"""Declared endpoint routes on disk, so a restarted control plane serves what it served before.

One JSON file, written atomically (temp file + rename). Routes derived from other services'
events are rebuilt from the event stream instead; this holds what came through the API.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any

from pai_gateway.model import EndpointRoute, InvalidRoute, Revision

log = logging.getLogger(__name__)


def _route_to_json(route: EndpointRoute) -> dict[str, Any]:
    return {
        "kind": route.kind,
        "name": route.name,
        "resource": route.resource,
        "permission": route.permission,
        "websocket": route.websocket,
        "owner": route.owner,
        "revisions": [
            {"name": r.name, "weight": r.weight, "addresses": list(r.addresses), "health_path": r.health_path}
            for r in route.revisions
        ],
    }


def _route_from_json(data: dict[str, Any]) -> EndpointRoute:
    return EndpointRoute(
        kind=data["kind"],
        name=data["name"],
        resource=data.get("resource", ""),
        permission=data.get("permission", ""),
        websocket=bool(data.get("websocket", False)),
        owner=data.get("owner", ""),
        revisions=tuple(
            Revision(
                r["name"], int(r["weight"]), tuple(r["addresses"]), r.get("health_path", "/v2/health/ready")
            )
            for r in data["revisions"]
        ),
    )


class RouteStore:
    """Routes by (kind, name), saved to `path` after every change."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def load(self) -> tuple[EndpointRoute, ...]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return ()
        routes = []
        for item in data.get("routes", []):
            try:
                route = _route_from_json(item)
                route.validate()
            except (InvalidRoute, KeyError, TypeError, ValueError) as exc:
                log.error("ignoring a stored route that is no longer valid: %s", exc)
                continue
            routes.append(route)
        return tuple(routes)

    def save(self, routes: tuple[EndpointRoute, ...]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"routes": [_route_to_json(r) for r in routes]}, indent=2))
        os.replace(tmp, self.path)
