"""`python -m pai_lineage`: run lineage until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging

from pai_common import service
from pai_common.grpc_server import stop_event
from pai_lineage.bootstrap import build

log = logging.getLogger("pai_lineage")


async def run() -> None:
    async with build(service.configure("lineage")) as app:
        print(f"pai lineage: serving on {app.address}", flush=True)
        await stop_event().wait()
        log.info("shutting down")


def main() -> None:
    service.main("lineage", run)


if __name__ == "__main__":
    main()
