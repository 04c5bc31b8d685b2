"""`python -m pai_local up|nats`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from pai_local.settings import DEFAULT_SERVICES, SERVICES, Settings, SettingsError

_UP_EPILOG = f"""\
environment:
  PAI_HOME                  data, logs, credentials (default ~/.pai)
  PAI_NATS_URL              use this running NATS (with JetStream) instead of starting one
  PAI_SERVICES              comma list of services (default {",".join(DEFAULT_SERVICES)}; known: {",".join(SERVICES)})
  PAI_<SVC>_LISTEN          listen address of one service, e.g. PAI_AUTH_LISTEN=0.0.0.0:50051
  PAI_BOOTSTRAP_ADMIN_KEY   the admin key to create on the very first start (default: a new one)
  PAI_LOCAL_EXTRA_SERVICES  name=module[:port],... adds or replaces services (development, tests)
  PAI_LOCAL_START_TIMEOUT   seconds a service may take to become healthy (default 60)
  PAI_LOCAL_STOP_TIMEOUT    seconds between SIGTERM and SIGKILL on stop (default 10)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pai-local", description="The pai stack on this machine.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up",
        help="start NATS and the services; Ctrl-C stops them",
        description="Start NATS (unless PAI_NATS_URL is set) and each service as its own process, "
        "restart whatever crashes, stop everything on Ctrl-C or SIGTERM.",
        epilog=_UP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("--home", help="overrides PAI_HOME")
    up.add_argument("--services", help="comma list; overrides PAI_SERVICES")
    up.add_argument("--nats-url", help="overrides PAI_NATS_URL")
    nats = commands.add_parser(
        "nats",
        help="start only the embedded NATS with JetStream (development, tests)",
        description="Start only the embedded nats-server (JetStream, data under PAI_HOME/nats).",
    )
    nats.add_argument("--home", help="overrides PAI_HOME")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the process exit code."""
    args = _parser().parse_args(argv)
    # Imported here so that `--help` stays fast and works even where gRPC is broken.
    from pai_local.supervisor import Stack

    try:
        if args.command == "nats":
            settings = Settings.from_env(home=args.home, services="", nats_url="")
        else:
            settings = Settings.from_env(home=args.home, services=args.services, nats_url=args.nats_url)
    except SettingsError as error:
        print(f"pai-local: error: {error}")
        return 2
    try:
        return asyncio.run(Stack(settings).run())
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 130
