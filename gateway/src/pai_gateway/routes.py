"""The one route table: health, gRPC by package prefix, the serving endpoints, then a JSON 404.

An endpoint's routes are cached by what they depend on, and the table by its routing, so a
change of replica addresses (EDS) rebuilds no route.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, wrappers_pb2

from pai_gateway.model import EndpointRoute, Revision, Upstream
from pai_gateway.xds import (
    EXT_AUTHZ,
    REVISION_HEADER,
    ROUTE_NAME,
    Memo,
    pack,
    revision_cluster,
    seconds,
    service_cluster,
)

Route = route_components_pb2.Route
ENDPOINT_ROUTES = Memo()  # by (kind, name): one endpoint's routes
_TABLE = Memo()

_JSON = base_pb2.HeaderValueOption(
    header=base_pb2.HeaderValue(key="content-type", value="application/json"),
    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
)


def _disable_authz() -> dict[str, any_pb2.Any]:
    return {EXT_AUTHZ: pack(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))}


def _json_reply(status: int, code: int, message: str) -> route_components_pb2.DirectResponseAction:
    body = f'{{"code": {code}, "message": "{message}", "details": []}}'
    return route_components_pb2.DirectResponseAction(
        status=status, body=base_pb2.DataSource(inline_string=body)
    )


def _previous_hosts() -> object:
    from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

    return previous_hosts_pb2.PreviousHostsPredicate()


def _action(route: EndpointRoute) -> dict[str, Any]:
    """What every route of an endpoint does with a request besides choosing the cluster."""
    return dict(
        # Model servers see their own paths; a notebook's server lives under its access path.
        prefix_rewrite="/" if route.kind == "predict" else "",
        timeout=seconds(0),  # streaming responses and long inferences are not cut off
        retry_policy=route_components_pb2.RetryPolicy(
            # Model inference is a pure function of its inputs, so a request cut off by a dying
            # replica is retried on another; notebook calls (code execution) only when nothing
            # reached the server.
            retry_on="connect-failure,refused-stream,"
            + ("reset" if route.kind == "predict" else "reset-before-request"),
            num_retries=wrappers_pb2.UInt32Value(value=2),
            retry_host_predicate=[
                route_components_pb2.RetryPolicy.RetryHostPredicate(
                    name="envoy.retry_host_predicates.previous_hosts",
                    typed_config=pack(_previous_hosts()),
                )
            ],
            host_selection_retry_max_attempts=3,
        ),
    )


def _authz(route: EndpointRoute) -> dict[str, any_pb2.Any]:
    """Who may call is decided by auth on the owning resource, carried to ext_authz per route."""
    return {
        EXT_AUTHZ: pack(
            ext_authz_pb2.ExtAuthzPerRoute(
                check_settings=ext_authz_pb2.CheckSettings(
                    # The decision needs no body: inference inputs and uploads are not buffered.
                    disable_request_body_buffering=True,
                    context_extensions={
                        "pai.permission": route.required_permission,
                        "pai.resource": route.resource,
                        **({"pai.owner": route.owner} if route.owner else {}),
                    },
                )
            )
        )
    }


def _endpoint_routes(route: EndpointRoute) -> list[route_components_pb2.Route]:
    """Pinned routes first (`x-pai-revision: <name>`), then the weighted split."""
    action, authz = _action(route), _authz(route)
    upgrades = (
        [route_components_pb2.RouteAction.UpgradeConfig(upgrade_type="websocket")] if route.websocket else []
    )
    routes = [
        Route(
            name=f"{route.kind}/{route.name}/{revision.name}",
            match=_pinned_to(route, revision),
            route=route_components_pb2.RouteAction(
                cluster=revision_cluster(route, revision), upgrade_configs=upgrades, **action
            ),
            typed_per_filter_config=authz,
        )
        for revision in route.revisions
    ]
    # A pin to a revision this endpoint does not have is an error, not a silent split.
    routes.append(
        Route(
            name=f"{route.kind}/{route.name}/unknown-revision",
            match=route_components_pb2.RouteMatch(
                prefix=route.prefix,
                headers=[route_components_pb2.HeaderMatcher(name=REVISION_HEADER, present_match=True)],
            ),
            direct_response=_json_reply(404, 5, f"no such revision of {route.name}"),
            typed_per_filter_config=_disable_authz(),
            response_headers_to_add=[_JSON],
        )
    )
    weighted = [
        route_components_pb2.WeightedCluster.ClusterWeight(
            name=revision_cluster(route, r), weight=wrappers_pb2.UInt32Value(value=r.weight)
        )
        for r in route.revisions
        if r.weight > 0
    ]
    routes.append(
        Route(
            name=f"{route.kind}/{route.name}",
            match=route_components_pb2.RouteMatch(prefix=route.prefix),
            route=route_components_pb2.RouteAction(
                weighted_clusters=route_components_pb2.WeightedCluster(clusters=weighted),
                upgrade_configs=upgrades,
                **action,
            ),
            typed_per_filter_config=authz,
        )
    )
    return routes


def _pinned_to(route: EndpointRoute, revision: Revision) -> route_components_pb2.RouteMatch:
    """The endpoint's requests that name `revision` in `x-pai-revision`."""
    return route_components_pb2.RouteMatch(
        prefix=route.prefix,
        headers=[
            route_components_pb2.HeaderMatcher(
                name=REVISION_HEADER,
                string_match=string_pb2.StringMatcher(exact=revision.name),
            )
        ],
    )


def routing_key(route: EndpointRoute) -> tuple[object, ...]:
    """What a route's entries depend on: not its replica addresses (those live in EDS)."""
    return (
        route.kind,
        route.name,
        route.resource,
        route.required_permission,
        route.websocket,
        route.owner,
        tuple((r.name, r.weight) for r in route.revisions),
    )


def route_configuration(upstreams: tuple[Upstream, ...], routes: tuple[EndpointRoute, ...]) -> any_pb2.Any:
    """The route table, rebuilt only when routing changes (an address change leaves it alone)."""
    ENDPOINT_ROUTES.keep_only({(r.kind, r.name) for r in routes})  # forget routes that are gone
    key = (tuple(u.name for u in upstreams), tuple(routing_key(r) for r in routes))
    return _TABLE.get(ROUTE_NAME, key, partial(_route_configuration, upstreams, routes))


def _route_configuration(upstreams: tuple[Upstream, ...], routes: tuple[EndpointRoute, ...]) -> any_pb2.Any:
    """The one route table: health, gRPC by package prefix, endpoint routes, then a JSON 404."""
    table = [
        Route(
            name="healthz",
            match=route_components_pb2.RouteMatch(path="/healthz"),
            direct_response=route_components_pb2.DirectResponseAction(
                status=200, body=base_pb2.DataSource(inline_string="ok\n")
            ),
            typed_per_filter_config=_disable_authz(),
        )
    ]
    for upstream in upstreams:
        table.append(
            Route(
                name=f"grpc/{upstream.name}",
                match=route_components_pb2.RouteMatch(prefix=f"/pai.{upstream.name}.v1."),
                route=route_components_pb2.RouteAction(
                    cluster=service_cluster(upstream.name),
                    timeout=seconds(0),  # server streams (logs) stay open
                ),
            )
        )
    for route in routes:
        table.extend(
            ENDPOINT_ROUTES.get(
                (route.kind, route.name), routing_key(route), partial(_endpoint_routes, route)
            )
        )
    table.append(
        Route(
            name="not-found",
            match=route_components_pb2.RouteMatch(prefix="/"),
            direct_response=_json_reply(404, 5, "no such route"),
            typed_per_filter_config=_disable_authz(),
            response_headers_to_add=[_JSON],
        )
    )
    config = route_pb2.RouteConfiguration(
        name=ROUTE_NAME,
        virtual_hosts=[route_components_pb2.VirtualHost(name="pai", domains=["*"], routes=table)],
    )
    return pack(config)
