"""A throwaway gRPC service for the supervisor tests: the health service on PAI_<NAME>_LISTEN.

It records its pid and environment in `$PAI_HOME/fake/<name>.json`, so tests can see what the
supervisor passed. PAI_FAKE_IGNORE_SIGTERM=1 makes it ignore SIGTERM (to test SIGKILL after the
grace period); PAI_FAKE_GRANDCHILD=1 makes it start a `sleep` that it never waits for.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc

_RECORDED = ("PAI_HOME", "PAI_NATS_URL", "PAI_AUTH_ENDPOINT", "PAI_BOOTSTRAP_ADMIN_KEY", "PAI_SERVICE_NAME")


def _record(name: str, address: str, grandchild: int | None) -> None:
    folder = Path(os.environ["PAI_HOME"]) / "fake"
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "address": address,
        "grandchild": grandchild,
        "env": {key: os.environ.get(key) for key in _RECORDED},
        "listen_var": f"PAI_{name.upper()}_LISTEN",
    }
    (folder / f"{name}.json").write_text(json.dumps(record))


async def serve() -> None:
    """Serve health until SIGTERM (or forever, when told to ignore it)."""
    name = os.environ["PAI_SERVICE_NAME"]
    address = os.environ[f"PAI_{name.upper()}_LISTEN"]
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    grandchild = None
    if os.environ.get("PAI_FAKE_GRANDCHILD") == "1":
        grandchild = (await asyncio.create_subprocess_exec("sleep", "300")).pid
    await server.start()
    _record(name, address, grandchild)
    print(f"fake {name} serving on {address}", flush=True)
    print(f"fake {name} says hello on stderr", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if os.environ.get("PAI_FAKE_IGNORE_SIGTERM") == "1":
        loop.add_signal_handler(signal.SIGTERM, lambda: print("fake: ignoring SIGTERM", flush=True))
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=1)
    print(f"fake {name} stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(serve())
