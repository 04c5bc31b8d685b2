"""The Authorizer every service but auth uses: ask auth, verify tokens locally, cache briefly."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping

import grpc

from pai.api.v1 import annotations_pb2
from pai.auth.v1 import authorization_pb2, authorization_pb2_grpc, identity_pb2
from pai_common import tokens
from pai_common.errors import PermissionDenied, Unauthenticated, Unavailable
from pai_common.principal import Principal

_Deny = authorization_pb2.AuthorizeResponse


def principal_from(message: authorization_pb2.Principal, token: str = "") -> Principal:
    """The chassis principal of auth's wire principal."""
    return Principal(
        name=message.name,
        platform_admin=message.platform_admin,
        roles={r.workspace: identity_pb2.Role.Name(r.role) for r in message.workspace_roles},
        token=token,
    )


def raise_denial(response: authorization_pb2.AuthorizeResponse) -> None:
    """Turn a denial into UNAUTHENTICATED or PERMISSION_DENIED."""
    reason = _Deny.DenialReason.Name(response.denial_reason)
    if response.denial_reason in (
        _Deny.CREDENTIAL_MISSING,
        _Deny.CREDENTIAL_INVALID,
        _Deny.PRINCIPAL_DISABLED,
    ):
        raise Unauthenticated(reason, response.message)
    raise PermissionDenied("PERMISSION_DENIED", response.message, principal=response.principal.name)


class RemoteAuthorizer:
    """Asks auth's Authorize for every decision, caching allowed ones for a few seconds."""

    def __init__(self, channel: grpc.aio.Channel, cache_seconds: float = 5.0) -> None:
        self._stub = authorization_pb2_grpc.AuthorizationServiceStub(channel)
        self._ttl = cache_seconds
        self._cache: dict[tuple[str, str, int, str], tuple[float, Principal]] = {}
        self.verifier = tokens.TokenVerifier(self._jwks)

    async def _jwks(self) -> list[Mapping[str, str]]:
        response = await self._stub.GetJwks(authorization_pb2.GetJwksRequest(), timeout=5)
        return [{"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg} for k in response.keys]

    async def authorize(self, credential: str, rule: annotations_pb2.AuthzRule, resource: str) -> Principal:
        if tokens.looks_like_token(credential):
            try:
                await self.verifier.verify(credential)  # forged or expired tokens never reach auth
            except tokens.InvalidToken as exc:
                raise Unauthenticated("CREDENTIAL_INVALID", f"invalid token: {exc}") from exc
        key = (
            hashlib.sha256(credential.encode()).hexdigest(),
            rule.permission,
            rule.scope,
            resource,
        )
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            response = await self._stub.Authorize(
                authorization_pb2.AuthorizeRequest(
                    credential=credential,
                    permission=rule.permission,
                    scope=rule.scope,
                    resource=resource,
                    issue_token=True,
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable("AUTH_UNAVAILABLE", f"cannot reach auth: {exc.code().name}") from exc
        if not response.allowed:
            raise_denial(response)
        principal = principal_from(response.principal, response.token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, principal)
        return principal
