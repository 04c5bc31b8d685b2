"""`pai key ...` and `pai service-account ...`: long-lived credentials and the non-human principals."""

from __future__ import annotations

import argparse
import datetime as dt
import re

from google.protobuf import timestamp_pb2

from pai.auth.v1 import identity_pb2
from pai_cli.client import collect
from pai_cli.commands.common import (
    Context,
    Subparsers,
    add_command,
    add_group,
    add_limit_option,
    add_workspace_option,
    qualify,
    report_deleted,
    role,
)
from pai_cli.errors import UsageError
from pai_cli.output import Column, enum, field, last_segment, timestamp, to_dict

KEY_COLUMNS = (
    Column("ID", last_segment("name")),
    Column("PREFIX", field("prefix")),
    Column("DISPLAY NAME", field("display_name")),
    Column("STATE", enum("state")),
    Column("EXPIRES", timestamp("expire_time")),
    Column("LAST USED", timestamp("last_used_time")),
    Column("CREATED", timestamp("create_time")),
)
KEY_DETAIL = (
    Column("NAME", field("name")),
    Column("PREFIX", field("prefix")),
    Column("DISPLAY NAME", field("display_name")),
    Column("STATE", enum("state")),
    Column("EXPIRES", timestamp("expire_time")),
    Column("LAST USED", timestamp("last_used_time")),
    Column("REVOKED", timestamp("revoke_time")),
    Column("CREATED", timestamp("create_time")),
)
SERVICE_ACCOUNT_COLUMNS = (
    Column("ID", last_segment("name")),
    Column("ROLE", enum("role")),
    Column("DISPLAY NAME", field("display_name")),
    Column("DESCRIPTION", field("description")),
    Column("CREATED", timestamp("create_time")),
)
SERVICE_ACCOUNT_DETAIL = (
    Column("NAME", field("name")),
    Column("ROLE", enum("role")),
    Column("DISPLAY NAME", field("display_name")),
    Column("DESCRIPTION", field("description")),
    Column("UID", field("uid")),
    Column("CREATED", timestamp("create_time")),
    Column("UPDATED", timestamp("update_time")),
)
SERVICE_ACCOUNT_ROLES = ("admin", "developer", "viewer")  # OWNER is never given to a service account

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(subparsers: Subparsers) -> None:
    """Add `key` and `service-account` to the command line."""
    key = add_group(subparsers, "key", "API keys of users and service accounts")
    create = add_command(key, "create", create_key, "create an API key; its secret is shown once")
    _add_owner_options(create)
    create.add_argument("--display-name", default="", metavar="TEXT", help="a label to tell keys apart")
    create.add_argument(
        "--expires-in",
        type=duration,
        metavar="DURATION",
        help="lifetime, e.g. 30d, 12h, 1w2d (default: never)",
    )
    listing = add_command(key, "list", list_keys, "list API keys (default: your own)")
    _add_owner_options(listing)
    add_limit_option(listing)
    revoke = add_command(key, "revoke", revoke_key, "revoke an API key at once, for good")
    revoke.add_argument(
        "key", metavar="NAME_OR_ID", help="the key's resource name, or its id / prefix (pai_xxxxxxxx)"
    )
    _add_owner_options(revoke)

    account = add_group(
        subparsers, "service-account", "service accounts: non-human principals of a workspace"
    )
    create = add_command(account, "create", create_service_account, "create a service account")
    create.add_argument("id", metavar="ID", help="service account id: lowercase letters, digits and dashes")
    create.add_argument("--role", required=True, choices=SERVICE_ACCOUNT_ROLES)
    create.add_argument("--display-name", default="", metavar="TEXT", help="human-readable name")
    create.add_argument("--description", default="", metavar="TEXT", help="what the account is for")
    add_workspace_option(create)
    listing = add_command(account, "list", list_service_accounts, "list a workspace's service accounts")
    add_workspace_option(listing)
    add_limit_option(listing)
    delete = add_command(account, "delete", delete_service_account, "delete a service account and its keys")
    delete.add_argument("id", metavar="ID")
    add_workspace_option(delete)


def _add_owner_options(parser: argparse.ArgumentParser) -> None:
    owner = parser.add_mutually_exclusive_group()
    owner.add_argument("--user", metavar="USER", help="a user's keys (default: your own)")
    owner.add_argument("--service-account", metavar="SA", help="a service account's keys (in --workspace)")
    add_workspace_option(parser)


def duration(text: str) -> dt.timedelta:
    """An argparse type: `30d`, `12h`, `1w2d`, `90m`, `45s`."""
    cleaned = text.strip().lower()
    if not cleaned or not re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", cleaned):
        raise argparse.ArgumentTypeError(f"not a duration like 30d, 12h or 1w2d: {text!r}")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(cleaned))
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than zero: {text!r}")
    return dt.timedelta(seconds=seconds)


def _owner(ctx: Context) -> str:
    """The key owner the options name, else the caller."""
    if ctx.args.user:
        return qualify(ctx.args.user, "users")
    if ctx.args.service_account:
        sa = ctx.args.service_account
        return sa if "/" in sa else f"{ctx.workspace}/serviceAccounts/{sa}"
    return ctx.client.whoami().name


def create_key(ctx: Context) -> int:
    """CreateApiKey, then the secret, once, with a warning."""
    args = ctx.args
    api_key = identity_pb2.ApiKey(display_name=args.display_name)
    if args.expires_in is not None:
        expire_time = timestamp_pb2.Timestamp()
        expire_time.FromDatetime(dt.datetime.now(dt.UTC) + args.expires_in)
        api_key.expire_time.CopyFrom(expire_time)
    request = identity_pb2.CreateApiKeyRequest(parent=_owner(ctx), api_key=api_key)
    created: identity_pb2.ApiKey = ctx.client.call(ctx.client.identity.CreateApiKey, request)
    out = ctx.output
    warning = "This secret is shown only once and cannot be retrieved again: store it now."
    if out.json:
        out.document(to_dict(created))
        out.note(f"warning: {warning}")
        return 0
    out.record([(c.header, c.cell(created)) for c in KEY_DETAIL])
    out.line()
    out.line("SECRET (shown once):")
    out.line(f"    {created.secret}")
    out.line()
    out.line(f"warning: {warning}")
    return 0


def list_keys(ctx: Context) -> int:
    """ListApiKeys, every page."""
    client, parent = ctx.client, _owner(ctx)

    def fetch(token: str, size: int) -> tuple[list[identity_pb2.ApiKey], str]:
        request = identity_pb2.ListApiKeysRequest(parent=parent, page_token=token, page_size=size)
        page: identity_pb2.ListApiKeysResponse = client.call(client.identity.ListApiKeys, request)
        return list(page.api_keys), page.next_page_token

    ctx.output.resources(collect(fetch, ctx.args.limit), KEY_COLUMNS, f"API keys of {parent}")
    return 0


def key_name(ctx: Context, value: str) -> str:
    """A key's resource name from its name, its id, its prefix (`pai_xxxxxxxx`) or the secret itself."""
    if "/apiKeys/" in value:
        return value
    if "/" in value:
        raise UsageError(f"not an API key name or id: {value!r}")
    key_id = value.split("_")[1] if value.startswith("pai_") else value
    return f"{_owner(ctx)}/apiKeys/{key_id.lower()}"


def revoke_key(ctx: Context) -> int:
    """RevokeApiKey."""
    request = identity_pb2.RevokeApiKeyRequest(name=key_name(ctx, ctx.args.key))
    revoked: identity_pb2.ApiKey = ctx.client.call(ctx.client.identity.RevokeApiKey, request)
    ctx.output.resource(revoked, KEY_DETAIL)
    return 0


def create_service_account(ctx: Context) -> int:
    """CreateServiceAccount."""
    args = ctx.args
    request = identity_pb2.CreateServiceAccountRequest(
        parent=ctx.workspace,
        service_account_id=args.id,
        service_account=identity_pb2.ServiceAccount(
            display_name=args.display_name, description=args.description, role=role(args.role)
        ),
    )
    created: identity_pb2.ServiceAccount = ctx.client.call(ctx.client.identity.CreateServiceAccount, request)
    ctx.output.resource(created, SERVICE_ACCOUNT_DETAIL)
    return 0


def list_service_accounts(ctx: Context) -> int:
    """ListServiceAccounts, every page."""
    client, parent = ctx.client, ctx.workspace

    def fetch(token: str, size: int) -> tuple[list[identity_pb2.ServiceAccount], str]:
        request = identity_pb2.ListServiceAccountsRequest(parent=parent, page_token=token, page_size=size)
        page: identity_pb2.ListServiceAccountsResponse = client.call(
            client.identity.ListServiceAccounts, request
        )
        return list(page.service_accounts), page.next_page_token

    ctx.output.resources(
        collect(fetch, ctx.args.limit), SERVICE_ACCOUNT_COLUMNS, f"service accounts in {parent}"
    )
    return 0


def delete_service_account(ctx: Context) -> int:
    """DeleteServiceAccount."""
    sa = ctx.args.id
    name = sa if "/" in sa else f"{ctx.workspace}/serviceAccounts/{sa}"
    ctx.client.call(
        ctx.client.identity.DeleteServiceAccount, identity_pb2.DeleteServiceAccountRequest(name=name)
    )
    report_deleted(ctx, name)
    return 0
