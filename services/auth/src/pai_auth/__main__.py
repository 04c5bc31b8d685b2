"""`python -m pai_auth`: run the auth service until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import os

from pai_auth.bootstrap import build
from pai_common import service
from pai_common.grpc_server import stop_event

log = logging.getLogger("pai_auth")


async def run() -> None:
    settings = service.configure("auth")
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
    service.main("auth", run)


if __name__ == "__main__":
    main()
