"""`python -m pai_scheduler`: run the scheduler until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import sys

from pai_common import config, telemetry
from pai_common.grpc_server import stop_event
from pai_scheduler.bootstrap import build

log = logging.getLogger("pai_scheduler")


async def run() -> None:
    settings = config.load("scheduler")
    telemetry.setup_logging("scheduler", settings.log_level, settings.log_format)
    telemetry.setup_tracing("scheduler", settings.otel_exporter, settings.otel_endpoint)
    async with build(settings) as app:
        print(f"pai scheduler: serving on {app.address}", flush=True)
        await stop_event().wait()
        log.info("shutting down")


def main() -> None:
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        logging.getLogger("pai_scheduler").exception("scheduler failed to start")
        print(f"pai scheduler: failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
