"""`python -m pai_dlc`: run dlc until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging

from pai_common import service
from pai_common.grpc_server import stop_event
from pai_dlc.bootstrap import build

log = logging.getLogger("pai_dlc")


async def run() -> None:
    async with build(service.configure("dlc")) as app:
        print(f"pai dlc: serving on {app.address}", flush=True)
        await stop_event().wait()
        log.info("shutting down")


def main() -> None:
    service.main("dlc", run)


if __name__ == "__main__":
    main()
