"""Server interceptors: tracing, request logging, error mapping, authentication and validation.

Each interceptor is one `scope` (an async context manager around the call) so the same code
serves unary and streaming methods. They run outermost first in the order
`Tracing → RequestLog → ErrorMapping → Completion → Authentication → Validation`, so the
audit hooks see denials too, and logs and spans see the final status code. What they know about
the call (`CallInfo`, the method's declared rule, its credential) comes from `calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import protovalidate
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from pai.api.v1 import annotations_pb2
from pai_common import telemetry
from pai_common.calls import (
    PUBLIC_SERVICES,
    CallInfo,
    authz_rule,
    credential_of,
    field_value,
    metadata_value,
)
from pai_common.errors import (
    DomainError,
    FieldViolation,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from pai_common.principal import Authorizer, Principal, current_principal

log = logging.getLogger("pai.rpc")
_tracer = trace.get_tracer("pai_common.grpc")


class Interceptor:
    """One concern around every call, as an async context manager."""

    def scope(
        self, info: CallInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError


class Tracing(Interceptor):
    """A server span per call, continuing the caller's trace (W3C traceparent)."""

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        carrier = {
            k: (v if isinstance(v, str) else v.decode()) for k, v in context.invocation_metadata() or ()
        }
        token = otel_context.attach(telemetry.extract(carrier))  # type: ignore[arg-type]
        try:
            with _tracer.start_as_current_span(info.method.lstrip("/"), kind=trace.SpanKind.SERVER) as span:
                span.set_attribute("rpc.system", "grpc")
                span.set_attribute("rpc.method", info.method)
                span.set_attribute("pai.request_id", info.request_id)
                try:
                    yield
                finally:
                    span.set_attribute("rpc.grpc.status_code", info.code.value[0])
                    if info.code not in (grpc.StatusCode.OK,):
                        span.set_status(Status(StatusCode.ERROR, info.code.name))
        finally:
            otel_context.detach(token)


class RequestLog(Interceptor):
    """One JSON log line per call: method, principal, status, reason, duration."""

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        token = telemetry.request_id_var.set(info.request_id)
        started = time.perf_counter()
        try:
            yield
        finally:
            fields = {
                "rpc.method": info.method,
                "rpc.code": info.code.name,
                "principal": info.principal.name,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            if info.reason:
                fields["reason"] = info.reason
            level = logging.INFO if info.code != grpc.StatusCode.INTERNAL else logging.ERROR
            if info.service in PUBLIC_SERVICES and info.code == grpc.StatusCode.OK:
                level = logging.DEBUG  # health probes every few seconds would drown the log
            log.log(level, "%s %s", info.method, info.code.name, extra={"fields": fields})
            telemetry.request_id_var.reset(token)


def to_status(error: DomainError, domain: str) -> status_pb2.Status:
    """A google.rpc.Status with ErrorInfo (and BadRequest for field violations)."""
    details = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        packed_bad = any_pb2.Any()
        packed_bad.Pack(bad)
        details.append(packed_bad)
    return status_pb2.Status(code=int(error.code), message=error.message, details=details)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> None:
    """Abort the call with a rich status (details in `grpc-status-details-bin`)."""
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    await context.abort(
        code,
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


class ErrorMapping(Interceptor):
    """Domain errors become rich statuses; anything unexpected becomes INTERNAL with a request id."""

    def __init__(self, domain: str) -> None:
        self._domain = domain

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        try:
            yield
        except DomainError as error:
            info.code, info.reason = grpc_code(error), error.reason
            await abort_with(context, to_status(error, self._domain))
        except grpc.aio.AbortError:
            info.code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except NotImplementedError:  # the generated base servicer's answer for a missing method
            info.code, info.reason = grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED"
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{info.method} is not implemented yet")
        except Exception:
            info.code, info.reason = grpc.StatusCode.INTERNAL, "INTERNAL"
            log.exception("unhandled error in %s", info.method)
            status = to_status(
                Internal(
                    "INTERNAL",
                    f"internal error (request id {info.request_id})",
                    request_id=info.request_id,
                ),
                self._domain,
            )
            await abort_with(context, status)


def grpc_code(error: DomainError) -> grpc.StatusCode:
    """The gRPC status of a domain error (both use the canonical `google.rpc.Code` names)."""
    return grpc.StatusCode[error.code.name]


class Authentication(Interceptor):
    """Deny by default: every method needs a declared rule, and a credential unless PUBLIC."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        rule = info.rule
        if rule is None or rule.scope == annotations_pb2.AuthzRule.SCOPE_UNSPECIFIED:
            raise _denied_no_rule(info.method)
        if rule.scope == annotations_pb2.AuthzRule.PUBLIC:
            yield
            return
        credential = credential_of(context)
        if not credential:
            raise Unauthenticated(
                "CREDENTIAL_MISSING",
                "no credential: send `authorization: Bearer <api key or token>` or `x-api-key`",
            )
        validate(request)
        if rule.resource_field:
            info.resource = field_value(request, rule.resource_field)
        try:
            info.principal = await self._authorizer.authorize(credential, rule, info.resource)
        except PermissionDenied as denied:
            # Denials name the (authenticated) caller, for the audit trail and the logs.
            info.principal = Principal(name=denied.metadata.get("principal", ""))
            raise
        token = current_principal.set(info.principal)
        try:
            yield
        finally:
            current_principal.reset(token)


def _denied_no_rule(method: str) -> DomainError:
    return PermissionDenied("PERMISSION_DENIED", f"{method} declares no authorization rule")


def validate(request: Any) -> None:
    """protovalidate constraints from the proto; violations become INVALID_ARGUMENT + BadRequest."""
    if not isinstance(request, Message):
        return
    violations = protovalidate.collect_violations(request)
    if violations:
        fields = []
        for v in violations:
            elements = v.proto.field.elements if v.proto.field is not None else []
            path = ".".join(e.field_name for e in elements) or "request"
            fields.append(FieldViolation(path, v.proto.message))
        summary = "; ".join(f"{f.field}: {f.description}" for f in fields)
        raise InvalidArgument("INVALID_ARGUMENT", summary, violations=fields)


class Validation(Interceptor):
    """Validate requests of PUBLIC methods too (others were validated before authorization)."""

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if info.rule is not None and info.rule.scope == annotations_pb2.AuthzRule.PUBLIC:
            validate(request)
        yield


CompletionHook = Callable[[CallInfo], Awaitable[None]]


class Completion(Interceptor):
    """Runs hooks after every call with its outcome (auth's audit trail uses this)."""

    def __init__(self, hooks: Sequence[CompletionHook]) -> None:
        self._hooks = list(hooks)

    @contextlib.asynccontextmanager
    async def scope(
        self, info: CallInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        try:
            yield
        except DomainError as error:
            info.code, info.reason = grpc_code(error), error.reason
            raise
        except grpc.aio.AbortError:
            raise
        except NotImplementedError:
            info.code, info.reason = grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED"
            raise
        except asyncio.CancelledError:
            info.code, info.reason = grpc.StatusCode.CANCELLED, "CANCELLED"
            raise
        except Exception:
            info.code, info.reason = grpc.StatusCode.INTERNAL, "INTERNAL"
            raise
        finally:
            for hook in self._hooks:
                try:  # shielded: a cancelled call is still recorded
                    await asyncio.shield(hook(info))
                except Exception:
                    log.exception("completion hook failed for %s", info.method)


class Chain(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies the interceptors, outermost first, to every unary or server-streaming handler."""

    def __init__(self, interceptors: Sequence[Interceptor]) -> None:
        self._interceptors = list(interceptors)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        chain = self._interceptors

        def new_info(context: grpc.aio.ServicerContext[Any, Any]) -> CallInfo:
            rid = metadata_value(context, "x-request-id") or uuid.uuid4().hex
            return CallInfo(method=method, request_id=rid, rule=authz_rule(method))

        async def enter(stack: contextlib.AsyncExitStack, info: CallInfo, request: Any, context: Any) -> None:
            info.request = request
            for interceptor in chain:
                await stack.enter_async_context(interceptor.scope(info, request, context))

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                info = new_info(context)
                context.set_trailing_metadata((("x-request-id", info.request_id),))
                async with contextlib.AsyncExitStack() as stack:
                    await enter(stack, info, request, context)
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                info = new_info(context)
                async with contextlib.AsyncExitStack() as stack:
                    await enter(stack, info, request, context)
                    async for item in inner_stream(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if method.lstrip("/").split("/")[0] in PUBLIC_SERVICES:
            return handler  # reflection streams both ways and needs no credential
        # Client-streaming methods would bypass every interceptor above, authentication included:
        # refuse them (UNIMPLEMENTED) until the chain learns to wrap them.
        log.error("refusing client-streaming method %s: the interceptor chain does not wrap it", method)
        return None
