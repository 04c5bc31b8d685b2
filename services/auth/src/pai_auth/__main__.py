"""`python -m pai_auth`: run the auth service until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from pai_auth.bootstrap import build
from pai_common import config, telemetry
from pai_common.grpc_server import stop_event

log = logging.getLogger("pai_auth")


async def run() -> None:
    settings = config.load("auth")
    telemetry.setup_logging("auth", settings.log_level, settings.log_format)
    telemetry.setup_tracing("auth", settings.otel_exporter, settings.otel_endpoint)
    given = os.environ.get("PAI_BOOTSTRAP_ADMIN_KEY", "")
    async with build(settings, bootstrap_key=given) as app:
        if app.admin_key and not given:
            # Shown once: only its hash is stored.
            print(
                f"pai auth: created platform admin users/admin; API key (shown once): {app.admin_key}",
                flush=True,
            )
        print(f"pai auth: serving on {app.address}", flush=True)
        await stop_event().wait()
        log.info("shutting down")


def main() -> None:
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        logging.getLogger("pai_auth").exception("auth failed to start")
        print(f"pai auth: failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
