"""What every service's `__main__` does around its own start: settings, logs, traces, exit codes."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pai_common import config, telemetry
from pai_common.config import Settings


def configure(service: str) -> Settings:
    """The service's settings, with logging and tracing set up from them."""
    settings = config.load(service)
    telemetry.setup_logging(service, settings.log_level, settings.log_format)
    telemetry.setup_tracing(service, settings.otel_exporter, settings.otel_endpoint)
    return settings


def main(service: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `run()` until it returns; Ctrl-C ends quietly, a failure is logged and exits 1."""
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        logging.getLogger(f"pai_{service}").exception("%s failed to start", service)
        print(f"pai {service}: failed: {exc}", file=sys.stderr)
        sys.exit(1)
