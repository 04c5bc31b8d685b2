"""The composition root: the only place that builds auth's parts and wires them together."""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pai_auth.api.caller import LocalAuthorizer
from pai_auth.api.ext_authz import EnvoyAuthorizationServicer
from pai_auth.api.servicers import (
    AuditServicer,
    AuthorizationServicer,
    IdentityServicer,
    WorkspaceServicer,
)
from pai_auth.app.access import AccessUseCases
from pai_auth.app.audit import AuditUseCases, audit_resource
from pai_auth.app.bootstrap import bootstrap
from pai_auth.app.identity import IdentityUseCases
from pai_auth.app.workspaces import WorkspaceUseCases
from pai_auth.db.rows import EVENTS
from pai_auth.db.uow import UnitOfWorkFactory
from pai_common import service
from pai_common.calls import CallInfo
from pai_common.config import Settings
from pai_common.grpc_server import GrpcServer, Servicer
from pai_common.interceptors import CompletionHook

log = logging.getLogger(__name__)
DOMAIN = "auth.pai.dev"
MIGRATIONS = pathlib.Path(__file__).parent / "db" / "migrations"


@dataclass
class AuthApp(service.Running):
    """The running service: its server, stores and workers, for `__main__` and the tests."""

    uow: UnitOfWorkFactory
    access: AccessUseCases
    admin_key: str | None  # set only on the first start, when a key was created


@contextlib.asynccontextmanager
async def build(settings: Settings, *, bootstrap_key: str = "") -> AsyncIterator[AuthApp]:
    """Start auth: migrate, connect NATS, bootstrap, serve; stop everything on exit."""
    async with contextlib.AsyncExitStack() as stack:
        base = await service.backbone(stack, settings, MIGRATIONS, EVENTS.outbox)
        engine, nc, relay = base.engine, base.nats, base.relay
        uow = UnitOfWorkFactory(engine, relay.notify)

        access = AccessUseCases(uow, settings.data_dir / "signing.kek")

        def committed() -> None:  # every committed change carries events
            relay.notify()
            access.forget()

        uow.on_commit = committed
        await access.load_keys()
        admin_key = await bootstrap(uow, bootstrap_key)

        audit = AuditUseCases(uow)
        server = GrpcServer(
            settings.listen,
            servicers(uow, access, audit),
            domain=DOMAIN,
            authorizer=LocalAuthorizer(access),
            completion_hooks=[audit_hook(audit)],
        )
        await relay.start()
        stack.push_async_callback(relay.stop)
        await server.start()
        stack.push_async_callback(server.stop)
        yield AuthApp(settings, server, relay, nc, uow, access, admin_key)


def servicers(uow: UnitOfWorkFactory, access: AccessUseCases, audit: AuditUseCases) -> list[Servicer]:
    """What auth serves: its own four services and Envoy's ext_authz."""
    return [
        Servicer.of(IdentityServicer(IdentityUseCases(uow))),
        Servicer.of(WorkspaceServicer(WorkspaceUseCases(uow))),
        Servicer.of(AuthorizationServicer(access)),
        Servicer.of(AuditServicer(audit)),
        Servicer.of(EnvoyAuthorizationServicer(access)),
    ]


def audit_hook(audit: AuditUseCases) -> CompletionHook:
    """Every mutating call, and every refusal of one, into the audit trail."""

    async def record(info: CallInfo) -> None:
        if not info.mutating or info.rule is None:
            return
        await audit.record(
            principal=info.principal.name,
            method=info.method,
            permission=info.rule.permission,
            resource=info.resource or audit_resource(info.request),
            result=info.code.name,
            reason=info.reason,
            request_id=info.request_id,
        )

    return record
