"""`pai status`: is every service and NATS up? Exit 0 when all are, 1 otherwise.

What to check comes from `$PAI_HOME/run/stack.json`, which `make up` keeps current; without it
the endpoint from the credentials is checked as `auth`, and NATS at `PAI_NATS_URL` if set.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pai_cli.client import channel_options
from pai_cli.commands.common import Context, Subparsers, add_command
from pai_cli.errors import CliError

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
UNREACHABLE = "UNREACHABLE"
CHECK_TIMEOUT_SECONDS = 2.0


@dataclass
class Component:
    """One thing that should be up, and what its check found."""

    name: str
    address: str
    restarts: int | None = None
    pid: int | None = None
    status: str = UNREACHABLE
    detail: str = ""
    probe: str = "grpc"  # or "http:<path>", as the stack file says


def register(subparsers: Subparsers) -> None:
    """Add `status` to the command line."""
    add_command(
        subparsers, "status", status, "health of every pai service and of NATS (exit 1 if any is down)"
    )


def status(ctx: Context) -> int:
    """Check everything at once, print one row each."""
    stack_file = ctx.config.home / "run" / "stack.json"
    notes: list[str] = []
    if stack_file.exists():
        components, stack_notes = from_stack_file(stack_file)
        notes.extend(stack_notes)
    else:
        components = from_config(ctx)
        notes.append(f"no {stack_file}: is `make up` running? (checked the configured endpoint)")
    with ThreadPoolExecutor(max_workers=max(1, len(components))) as pool:
        for future in [pool.submit(check, c) for c in components]:
            future.result()
    healthy = all(c.status == SERVING for c in components)

    out = ctx.output
    if out.json:
        out.document({"healthy": healthy, "components": [asdict(c) for c in components], "notes": notes})
    else:
        rows = [
            [c.name, c.address, c.status, "-" if c.restarts is None else str(c.restarts)] for c in components
        ]
        out.table(["NAME", "ADDRESS", "STATUS", "RESTARTS"], rows)
        for c in components:
            if c.status != SERVING and c.detail:
                out.note(f"{c.name}: {c.status}: {c.detail}")
        for note in notes:
            out.note(f"note: {note}")
    return 0 if healthy else 1


def from_stack_file(path: Path) -> tuple[list[Component], list[str]]:
    """The services and NATS that `make up` says it runs."""
    try:
        stack: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        services: dict[str, dict[str, Any]] = stack.get("services") or {}
        components = [
            Component(
                name=name,
                address=str(entry["address"]),
                restarts=_int_or_none(entry.get("restarts")),
                pid=_int_or_none(entry.get("pid")),
                probe=str(entry.get("probe") or "grpc"),
            )
            for name, entry in services.items()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CliError(f"cannot read {path}: {error}") from error
    if stack.get("nats_url"):
        components.append(
            Component(
                name="nats",
                address=str(stack["nats_url"]),
                restarts=_int_or_none(stack.get("nats_restarts")),
                pid=_int_or_none(stack.get("nats_pid")),
            )
        )
    notes = []
    supervisor = _int_or_none(stack.get("supervisor_pid"))
    if supervisor is not None and not _alive(supervisor):
        notes.append(f"the supervisor (pid {supervisor}) is not running: {path} may be stale")
    return components, notes


def from_config(ctx: Context) -> list[Component]:
    """Without a stack file: the configured endpoint as `auth`, and NATS from PAI_NATS_URL."""
    components = []
    if ctx.config.endpoint:
        components.append(Component(name="auth", address=ctx.config.endpoint))
    if ctx.config.nats_url:
        components.append(Component(name="nats", address=ctx.config.nats_url))
    if not components:
        raise CliError(
            f"nothing to check: no {ctx.config.home / 'run' / 'stack.json'} and no endpoint\n"
            "  (is `make up` running? or run `pai login`)"
        )
    return components


def check(component: Component) -> None:
    """Fill in the component's status: NATS by its protocol, everything else by gRPC health."""
    if component.name == "nats" or component.address.startswith(("nats://", "tls://")):
        check_nats(component)
    elif component.probe.startswith("http:"):
        check_http(component)
    else:
        check_grpc(component)


def check_http(component: Component) -> None:
    """An HTTP readiness path (Envoy's /healthz): 200 is SERVING."""
    import urllib.error
    import urllib.request

    url = f"http://{component.address}{component.probe.removeprefix('http:')}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=CHECK_TIMEOUT_SECONDS) as response:
            ok = response.status == 200
    except urllib.error.HTTPError as error:
        component.status, component.detail = NOT_SERVING, f"HTTP {error.code}"
        return
    except (OSError, ValueError) as error:
        component.status, component.detail = UNREACHABLE, str(error)
        return
    component.status = SERVING if ok else NOT_SERVING


def check_grpc(component: Component) -> None:
    """The standard gRPC health check of the whole server (service "")."""
    address = component.address
    with grpc.insecure_channel(address, options=channel_options(address)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            code = error.code()
            reached = code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            component.status = NOT_SERVING if reached else UNREACHABLE
            component.detail = f"{code.name}: {error.details()}"
            return
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    component.status = SERVING if serving else NOT_SERVING
    component.detail = "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def check_nats(component: Component) -> None:
    """Connect to NATS and ask JetStream for the account's info (it must be enabled)."""
    component.status, component.detail = asyncio.run(_nats_status(component.address))


async def _nats_status(url: str) -> tuple[str, str]:
    import nats  # here, not at the top: it pulls in aiohttp, a tenth of a second every other command would pay

    async def quiet(_: Exception) -> None:  # connection errors are reported in the row, not logged
        return None

    try:
        # max_reconnect_attempts=0 would mean "retry this server forever" to nats-py's connect
        # loop; one retry a moment later, and an overall deadline, keep the check bounded.
        client = await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=CHECK_TIMEOUT_SECONDS,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=quiet,
            ),
            timeout=2 * CHECK_TIMEOUT_SECONDS,
        )
    except Exception as error:  # nats-py raises several unrelated types for "not there"
        return UNREACHABLE, f"{type(error).__name__}: {error}".rstrip(": ")
    try:
        info = await client.jetstream(timeout=CHECK_TIMEOUT_SECONDS).account_info()
    except Exception as error:
        return NOT_SERVING, f"JetStream: {type(error).__name__}: {error}".rstrip(": ")
    finally:
        await client.close()
    return SERVING, f"JetStream: {info.streams} streams, {info.consumers} consumers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
