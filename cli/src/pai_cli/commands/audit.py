"""`pai audit list`: who did what to which resource, and with what result."""

from __future__ import annotations

from pai.auth.v1 import audit_pb2
from pai_cli.client import collect
from pai_cli.commands.common import Context, Subparsers, add_command, add_group, add_limit_option, qualify
from pai_cli.output import Column, field, timestamp

_METHOD_PREFIX = "/pai."


def _method(entry: audit_pb2.AuditEntry) -> str:
    # `/pai.auth.v1.IdentityService/CreateApiKey` → `auth.v1.IdentityService/CreateApiKey`
    return entry.method.removeprefix(_METHOD_PREFIX) or "-"


AUDIT_COLUMNS = (
    Column("TIME", timestamp("create_time")),
    Column("PRINCIPAL", field("principal")),
    Column("METHOD", _method),
    Column("RESOURCE", field("resource")),
    Column("RESULT", field("result")),
    Column("REASON", field("reason")),
)


def register(subparsers: Subparsers) -> None:
    """Add `audit` to the command line."""
    audit = add_group(subparsers, "audit", "the audit trail of every mutating call")
    listing = add_command(audit, "list", list_entries, "list audit entries, newest first (workspace admins)")
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument(
        "-w",
        "--workspace",
        metavar="WORKSPACE",
        help="workspace id (default: $PAI_WORKSPACE, `workspace` in the credentials, else `default`)",
    )
    scope.add_argument(
        "--all", action="store_true", help="every entry, platform-level ones too (platform admins)"
    )
    listing.add_argument("--principal", metavar="P", help="only calls by this user id or principal name")
    add_limit_option(listing)


def list_entries(ctx: Context) -> int:
    """ListAuditEntries, every page (or --limit)."""
    args = ctx.args
    client = ctx.client
    parent = "workspaces/-" if args.all else ctx.workspace
    principal = qualify(args.principal, "users") if args.principal else ""

    def fetch(token: str, size: int) -> tuple[list[audit_pb2.AuditEntry], str]:
        request = audit_pb2.ListAuditEntriesRequest(
            parent=parent, principal=principal, page_token=token, page_size=size
        )
        page: audit_pb2.ListAuditEntriesResponse = client.call(client.audit.ListAuditEntries, request)
        return list(page.audit_entries), page.next_page_token

    ctx.output.resources(collect(fetch, args.limit), AUDIT_COLUMNS, f"audit entries in {parent}")
    return 0
