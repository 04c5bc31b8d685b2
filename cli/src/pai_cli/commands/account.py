"""`pai login`, `pai whoami`, `pai token issue`: who you are to pai, and proving it."""

from __future__ import annotations

import getpass
import os
import sys

from pai.auth.v1 import authorization_pb2, identity_pb2
from pai_cli import config
from pai_cli.client import Client
from pai_cli.commands.common import Context, Subparsers, add_command, add_group, positive_int
from pai_cli.errors import UsageError
from pai_cli.output import Column, field, timestamp, to_dict

TOKEN_DETAIL = (
    Column("TOKEN", field("token")),
    Column("EXPIRES", timestamp("expire_time")),
)
MAX_TOKEN_TTL_SECONDS = 3600


def register(subparsers: Subparsers) -> None:
    """Add `login`, `whoami` and `token` to the command line."""
    login_parser = add_command(
        subparsers, "login", login, "check an API key and save it with the endpoint in $PAI_HOME/credentials"
    )
    login_parser.add_argument(
        "-w",
        "--workspace",
        metavar="WORKSPACE",
        help="also save a default workspace for member/audit commands",
    )
    add_command(subparsers, "whoami", whoami, "show who your API key acts as, and its workspace roles")
    token = add_group(subparsers, "token", "short-lived signed tokens")
    issue = add_command(token, "issue", issue_token, "issue a signed token for yourself")
    issue.add_argument(
        "--ttl",
        type=positive_int,
        default=300,
        metavar="SECONDS",
        help=f"lifetime in seconds, at most {MAX_TOKEN_TTL_SECONDS} (default: 300)",
    )


def login(ctx: Context) -> int:
    """Verify the key with GetCurrentPrincipal, then write the credentials file (mode 0600)."""
    cfg = ctx.config
    endpoint = cfg.endpoint
    if not endpoint:
        raise UsageError("pai login needs --endpoint HOST:PORT (the address `make up` printed)")
    api_key = ctx.args.api_key or os.environ.get("PAI_API_KEY") or _prompt_for_key()
    with Client(endpoint, api_key) as client:
        principal = client.whoami()
    values = {"endpoint": endpoint, "api_key": api_key}
    if ctx.args.workspace:
        values["workspace"] = ctx.args.workspace.removeprefix("workspaces/")
    config.write_credentials(cfg.credentials_file, values)
    if ctx.output.json:
        ctx.output.document(
            {
                "endpoint": endpoint,
                "credentialsFile": str(cfg.credentials_file),
                "principal": to_dict(principal),
            }
        )
    else:
        admin = " (platform admin)" if principal.platform_admin else ""
        ctx.output.line(f"logged in to {endpoint} as {principal.name}{admin}")
        ctx.output.line(f"credentials saved in {cfg.credentials_file}")
    return 0


def _prompt_for_key() -> str:
    if not sys.stdin.isatty():
        raise UsageError("pai login needs --api-key KEY (or PAI_API_KEY)")
    key = getpass.getpass("API key: ").strip()
    if not key:
        raise UsageError("no API key given")
    return key


def whoami(ctx: Context) -> int:
    """GetCurrentPrincipal."""
    principal = ctx.client.whoami()
    out = ctx.output
    if out.json:
        out.document(to_dict(principal))
        return 0
    out.record(
        [
            ("PRINCIPAL", principal.name),
            ("PLATFORM ADMIN", "yes" if principal.platform_admin else "no"),
            ("ENDPOINT", ctx.client.endpoint),
        ]
    )
    out.line()
    rows = [
        [r.workspace.removeprefix("workspaces/"), identity_pb2.Role.Name(r.role)]
        for r in principal.workspace_roles
    ]
    if rows:
        out.table(["WORKSPACE", "ROLE"], rows)
    else:
        out.line("no workspace roles")
    return 0


def issue_token(ctx: Context) -> int:
    """IssueToken."""
    if ctx.args.ttl > MAX_TOKEN_TTL_SECONDS:
        raise UsageError(f"--ttl is at most {MAX_TOKEN_TTL_SECONDS} seconds")
    request = authorization_pb2.IssueTokenRequest(ttl_seconds=ctx.args.ttl)
    issued: authorization_pb2.IssueTokenResponse = ctx.client.call(
        ctx.client.authorization.IssueToken, request
    )
    ctx.output.resource(issued, TOKEN_DETAIL)
    return 0
