"""Who a request acts as, how the chassis asks whether it may, and where the answer is kept."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Protocol

from pai.api.v1 import annotations_pb2


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user or a service account, with its roles."""

    name: str
    platform_admin: bool = False
    roles: dict[str, str] = field(default_factory=dict)  # workspaces/{w} -> OWNER|ADMIN|...
    token: str = ""  # a signed token to forward to other services


ANONYMOUS = Principal(name="")
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "pai_principal", default=ANONYMOUS
)


def credential_from(authorization: str, api_key: str) -> str:
    """The caller's API key or token: `authorization: Bearer <x>` (any case of the scheme), else
    `x-api-key: <x>`. One parser for the services' interceptor and the gateway's ext_authz."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return api_key.strip()


def principal() -> Principal:
    """The principal of the request being served (ANONYMOUS for public methods)."""
    return current_principal.get()


class Authorizer(Protocol):
    """Decides whether a credential may use a method's rule on a resource.

    Raises Unauthenticated or PermissionDenied (pai_common.errors); returns the principal.
    """

    async def authorize(
        self, credential: str, rule: annotations_pb2.AuthzRule, resource: str
    ) -> Principal: ...
