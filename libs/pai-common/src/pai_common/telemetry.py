"""OpenTelemetry tracing and JSON logs that carry the current trace and request ids."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("pai_request_id", default="")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with trace_id/span_id and request_id when there are any."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        if rid := request_id_var.get():
            entry["request_id"] = rid
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr, as JSON lines or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def setup_tracing(service: str, exporter: str = "none", endpoint: str = "") -> TracerProvider:
    """A tracer provider for `service`; spans go to the console, OTLP/gRPC, or nowhere."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"pai-{service}"}))
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        span_exporter = OTLPSpanExporter(endpoint=endpoint or None, insecure=True)
    elif exporter != "none":
        raise ValueError(f"unknown otel exporter {exporter!r}: use none, console or otlp")
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return provider


def inject(headers: MutableMapping[str, str]) -> None:
    """Write the current trace context (W3C `traceparent`) into message headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str]) -> object:
    """The trace context carried by message headers."""
    return propagate.extract(headers)
