"""`python -m pai_scheduler`: run the scheduler until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging

from pai_common import service
from pai_common.grpc_server import stop_event
from pai_scheduler.bootstrap import build

log = logging.getLogger("pai_scheduler")


async def run() -> None:
    async with build(service.configure("scheduler")) as app:
        print(f"pai scheduler: serving on {app.address}", flush=True)
        await stop_event().wait()
        log.info("shutting down")


def main() -> None:
    service.main("scheduler", run)


if __name__ == "__main__":
    main()
