"""Envoy's external authorization: the gateway asks auth about every request before routing it.

The decision is the one each service makes for itself (the `pai.api.v1.authz` rule of the
method, `AccessUseCases.authorize`), taken once at the edge. On allow, the caller's API key is
swapped for a short-lived signed token, so the services behind the gateway never see the key
(PUBLIC methods are forwarded untouched; IssueToken, see `KEY_EXCHANGE_METHODS`, needs the key).

Envoy runs the gRPC-JSON transcoder and the gRPC-Web filter first, so every request checked here
is already a gRPC request: path `/pai.<svc>.v1.<Service>/<Method>`, body one gRPC-framed message.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import pkgutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

# xds-protos ships no type stubs (unused-ignore: in case the mypy config learns to skip them)
from envoy.config.core.v3 import base_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.service.auth.v3 import (  # type: ignore[import-untyped, unused-ignore]
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from envoy.type.v3 import http_status_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import any_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

import pai
from pai.api.v1 import annotations_pb2
from pai_auth.app.access import AccessUseCases, Denied
from pai_common.calls import PUBLIC_SERVICES, authz_rule, field_value
from pai_common.principal import credential_from

log = logging.getLogger(__name__)

DOMAIN = "auth.pai.dev"
Rule = annotations_pb2.AuthzRule
# Endpoint paths of served models and notebooks: they carry no RPC rule; their per-endpoint
# token check arrives with eas and dsw, which extend `resolve`.
ENDPOINT_PREFIXES = ("/api/predict/", "/dsw/")
_FRAME_HEADER = struct.Struct(">BI")  # gRPC message frame: compressed flag, big-endian length
_UNAUTHENTICATED = frozenset({"CREDENTIAL_MISSING", "CREDENTIAL_INVALID", "PRINCIPAL_DISABLED"})
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_PUBLIC = Rule(scope=Rule.PUBLIC)
# Methods that exchange an API key for a token at auth itself: the key must reach auth (which
# holds it anyway), since a token cannot renew itself. Decided as usual, forwarded unswapped.
KEY_EXCHANGE_METHODS = frozenset({"/pai.auth.v1.AuthorizationService/IssueToken"})


@dataclass(frozen=True)
class MethodRoute:
    """A gRPC method the gateway may forward: its authorization rule and request type."""

    method: str
    rule: Rule | None
    request_type: type[Message] | None = None


@dataclass
class Rejection(Exception):
    """A request refused before or by the decision; becomes Envoy's denied response."""

    http: int  # an envoy.type.v3.StatusCode value
    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


def load_methods() -> dict[str, MethodRoute]:
    """Every pai RPC by path, from the generated modules (all imported here, once, at start-up).

    Importing them registers their descriptors, so `authz_rule` can answer for any service.
    """
    routes: dict[str, MethodRoute] = {}
    for module_info in pkgutil.walk_packages(pai.__path__, "pai."):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(module_info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                request_type = message_factory.GetMessageClass(method.input_type)
                routes[path] = MethodRoute(path, authz_rule(path), request_type)
    return routes


# Endpoint routes (`/api/predict/{service}/`, `/dsw/{id}/`) carry their rule in the route's
# ext_authz context extensions, set by the gateway control plane from the owning resource.
ENDPOINT_PERMISSION = "pai.permission"
ENDPOINT_RESOURCE = "pai.resource"
ENDPOINT_OWNER = "pai.owner"  # notebooks: only their owner (or a platform admin) gets in


def endpoint_rule(extensions: Mapping[str, str]) -> Rule | None:
    """The rule an endpoint route declares, or None for ordinary API paths."""
    permission = extensions.get(ENDPOINT_PERMISSION, "")
    if not permission or not extensions.get(ENDPOINT_RESOURCE, ""):
        return None
    return Rule(permission=permission, scope=Rule.RESOURCE)


def resolve(path: str, methods: Mapping[str, MethodRoute]) -> MethodRoute:
    """The route a request path (query string already removed) is checked against.

    Only exact, known method paths resolve: anything else is denied, never guessed at.
    """
    if path.startswith(ENDPOINT_PREFIXES):
        raise Rejection(
            http_status_pb2.Forbidden,
            grpc.StatusCode.PERMISSION_DENIED,
            "NO_RULE_FOR_PATH",
            f"no route rule is registered for {path}",
        )
    route = methods.get(path)
    if route is not None:
        return route
    service = path.lstrip("/").partition("/")[0]
    if service in PUBLIC_SERVICES:  # health and reflection, which every service serves openly
        return MethodRoute(path, _PUBLIC)
    raise Rejection(
        http_status_pb2.Forbidden,
        grpc.StatusCode.PERMISSION_DENIED,
        "RULE_MISSING",
        f"{path} is not a pai method with an authorization rule",
    )


def header(http: Any, name: str) -> str:
    """One request header as Envoy sent it (`headers`, or `header_map` with raw headers on)."""
    value = http.headers.get(name, "")
    if value:
        return str(value)
    for entry in http.header_map.headers:
        if entry.key == name:
            return str(entry.value or entry.raw_value.decode("utf-8", "replace"))
    return ""


def credential(http: Any) -> str:
    """The API key or token: `authorization: Bearer <x>` (any case of scheme) or `x-api-key`."""
    return credential_from(header(http, "authorization"), header(http, "x-api-key"))


def _invalid(message: str) -> Rejection:
    return Rejection(
        http_status_pb2.BadRequest, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", message
    )


def request_message(route: MethodRoute, body: bytes) -> Message:
    """The request message of a unary gRPC body: exactly one uncompressed frame."""
    assert route.request_type is not None, "only pai methods carry a resource"
    if len(body) < _FRAME_HEADER.size:
        raise _invalid(f"{route.method} needs its request message as the body (one gRPC frame)")
    compressed, length = _FRAME_HEADER.unpack_from(body)
    if compressed == 1:
        raise _invalid("compressed request messages cannot be authorized; send them uncompressed")
    if compressed != 0 or len(body) != _FRAME_HEADER.size + length:
        raise _invalid("the request body is not exactly one gRPC message frame")
    message = route.request_type()
    try:
        message.ParseFromString(body[_FRAME_HEADER.size :])
    except DecodeError as exc:
        raise _invalid(f"the request body is not a valid {message.DESCRIPTOR.full_name}") from exc
    return message


def _denied(rejection: Rejection) -> external_auth_pb2.CheckResponse:
    """Envoy's local reply: the google.rpc.Status as a JSON body, and as gRPC status headers.

    Seen with Envoy 1.40: HTTP/JSON callers get the HTTP status and this body as they are. gRPC
    callers get a trailers-only reply: `grpc-status` from our header (without it, 400 would read
    INTERNAL), `grpc-status-details-bin` carrying the ErrorInfo as the services' own errors do,
    and the body as `grpc-message`. gRPC-Web callers get `grpc-status` derived from the HTTP status.
    """
    code = rejection.code.value[0]
    info = error_details_pb2.ErrorInfo(reason=rejection.reason, domain=DOMAIN, metadata=rejection.metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=code, message=rejection.message, details=[packed])
    body = {
        "code": code,
        "message": rejection.message,
        "details": [
            {
                "@type": packed.type_url,
                "reason": rejection.reason,
                "domain": DOMAIN,
                "metadata": dict(rejection.metadata),
            }
        ],
    }
    headers = {
        "content-type": "application/json",
        "grpc-status": str(code),
        "grpc-status-details-bin": base64.b64encode(status.SerializeToString()).decode().rstrip("="),
    }
    if rejection.http == http_status_pb2.Unauthorized:
        headers["www-authenticate"] = 'Bearer realm="pai"'
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=rejection.message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=rejection.http),
            headers=_header_options(headers),
            body=json.dumps(body, separators=(",", ":")),
        ),
    )


def _header_options(headers: Mapping[str, str]) -> list[Any]:
    """Headers that replace any the client sent under the same name."""
    return [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=_OVERWRITE)
        for k, v in headers.items()
    ]


def _allowed(headers: Mapping[str, str], remove: tuple[str, ...]) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=_header_options(headers),
            headers_to_remove=list(remove),
        ),
    )


def _from_denied(denied: Denied) -> Rejection:
    if denied.reason in _UNAUTHENTICATED:
        return Rejection(
            http_status_pb2.Unauthorized, grpc.StatusCode.UNAUTHENTICATED, denied.reason, denied.message
        )
    return Rejection(
        http_status_pb2.Forbidden, grpc.StatusCode.PERMISSION_DENIED, denied.reason, denied.message
    )


class EnvoyAuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """`envoy.service.auth.v3.Authorization`: allow or deny each request at the gateway."""

    def __init__(self, access: AccessUseCases) -> None:
        self._access = access
        self._methods = load_methods()

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        path = http.path.partition("?")[0].partition("#")[0]
        try:
            return await self._check(path, http, request.attributes.context_extensions)
        except Rejection as rejection:
            log.info(
                "ext_authz denied %s: %s",
                path,
                rejection.reason,
                extra={"fields": {"path": path, "reason": rejection.reason}},
            )
            return _denied(rejection)
        except Exception:
            request_id = header(http, "x-request-id")
            log.exception("ext_authz check of %s failed (request id %s)", path, request_id)
            return _denied(
                Rejection(
                    http_status_pb2.ServiceUnavailable,
                    grpc.StatusCode.UNAVAILABLE,
                    "AUTHORIZATION_UNAVAILABLE",
                    f"authorization failed unexpectedly; retry later (request id {request_id})",
                    {"request_id": request_id},
                )
            )

    async def _check(
        self, path: str, http: Any, extensions: Mapping[str, str]
    ) -> external_auth_pb2.CheckResponse:
        endpoint = endpoint_rule(extensions)
        route = MethodRoute(path, endpoint) if endpoint is not None else resolve(path, self._methods)
        rule = route.rule
        if rule is None or rule.scope == Rule.SCOPE_UNSPECIFIED:
            raise Rejection(
                http_status_pb2.Forbidden,
                grpc.StatusCode.PERMISSION_DENIED,
                "RULE_MISSING",
                f"{path} declares no authorization rule",
            )
        if rule.scope == Rule.PUBLIC:
            # The principal header is ours alone: a caller must not hand one to the upstream.
            return _allowed({}, ("x-pai-principal",))
        presented = credential(http)
        if not presented:
            raise Rejection(
                http_status_pb2.Unauthorized,
                grpc.StatusCode.UNAUTHENTICATED,
                "CREDENTIAL_MISSING",
                "no credential: send `authorization: Bearer <api key or token>` or `x-api-key`",
            )
        resource = extensions.get(ENDPOINT_RESOURCE, "") if endpoint is not None else ""
        if endpoint is None and rule.scope == Rule.RESOURCE and rule.resource_field:
            resource = field_value(request_message(route, http.raw_body), rule.resource_field)
        exchange = path in KEY_EXCHANGE_METHODS
        try:
            grant = await self._access.authorize(
                presented, rule.scope, rule.permission, resource, issue_token=not exchange
            )
        except Denied as denied:
            raise _from_denied(denied) from denied
        owner = extensions.get(ENDPOINT_OWNER, "") if endpoint is not None else ""
        if owner and grant.principal.name != owner and not grant.principal.platform_admin:
            raise Rejection(
                http_status_pb2.Forbidden,
                grpc.StatusCode.PERMISSION_DENIED,
                "NOT_OWNER",
                f"only {owner} may open this endpoint",
            )
        log.debug("ext_authz allowed %s for %s", path, grant.principal.name)
        if exchange:
            return _allowed({"x-pai-principal": grant.principal.name}, ())
        if not grant.token:
            raise RuntimeError("an allowed decision came without a signed token")
        return _allowed(
            {"authorization": f"Bearer {grant.token}", "x-pai-principal": grant.principal.name},
            ("x-api-key",),
        )
