"""What a call to a pai service declares and carries: the authorization rule its method declares in
the generated descriptors, its metadata (credential, resource field), and the `CallInfo` the server
interceptors share. Auth's ext_authz adapter reads the same rules for the calls Envoy asks about.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import Message

from pai.api.v1 import annotations_pb2
from pai_common.principal import ANONYMOUS, Principal, credential_from

# Infrastructure services every client may call without a credential.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
        # Envoy's ext_authz calls carry the caller's credential inside the request; the answer
        # is the same decision Authorize (public too) gives.
        "envoy.service.auth.v3.Authorization",
        # Envoy fetches its configuration without a credential; the control plane listens on
        # loopback (or a private network) only.
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
    }
)
_PUBLIC_RULE = annotations_pb2.AuthzRule(scope=annotations_pb2.AuthzRule.PUBLIC)


# Verbs of permissions that change nothing (besides `read*`): not audited, granted to viewers.
READ_VERBS = frozenset({"get", "list", "authorize"})


@dataclass
class CallInfo:
    """What every interceptor knows about the call being served."""

    method: str  # /package.Service/Method
    request_id: str
    rule: annotations_pb2.AuthzRule | None
    request: Any = None
    principal: Principal = ANONYMOUS
    resource: str = ""
    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""

    @property
    def service(self) -> str:
        return self.method.split("/")[1]

    @property
    def mutating(self) -> bool:
        """Whether the method changes state: its permission's verb is not a read verb."""
        verb = self.rule.permission.rsplit(".", 1)[-1] if self.rule and self.rule.permission else ""
        return bool(verb) and not (verb in READ_VERBS or verb.startswith("read"))


@cache
def authz_rule(method: str) -> annotations_pb2.AuthzRule | None:
    """The rule declared on a method in the generated descriptors (None if it has none)."""
    service, _, name = method.lstrip("/").partition("/")
    if service in PUBLIC_SERVICES:
        return _PUBLIC_RULE
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return None
    method_desc = descriptor.methods_by_name.get(name)
    if method_desc is None or not method_desc.GetOptions().HasExtension(annotations_pb2.authz):
        return None
    rule: annotations_pb2.AuthzRule = method_desc.GetOptions().Extensions[annotations_pb2.authz]
    return rule


def metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str:
    """One invocation metadata value, or ''."""
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return ""


def credential_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's API key or token: `authorization: Bearer <x>` or `x-api-key: <x>`."""
    return credential_from(metadata_value(context, "authorization"), metadata_value(context, "x-api-key"))


def field_value(message: Message, path: str) -> str:
    """The string at a dotted field path of a request (`service_account.name`)."""
    value: Any = message
    for part in path.split("."):
        if not isinstance(value, Message):
            return ""
        value = getattr(value, part, "")
    return value if isinstance(value, str) else ""
