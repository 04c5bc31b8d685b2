"""`pai user ...`: the people who use the platform (platform admins manage them)."""

from __future__ import annotations

from pai.auth.v1 import identity_pb2
from pai_cli.client import collect
from pai_cli.commands.common import (
    Context,
    Subparsers,
    add_command,
    add_group,
    add_limit_option,
    qualify,
    report_deleted,
)
from pai_cli.output import Column, enum, field, last_segment, timestamp

USER_COLUMNS = (
    Column("ID", last_segment("name")),
    Column("DISPLAY NAME", field("display_name")),
    Column("EMAIL", field("email")),
    Column("PLATFORM ADMIN", field("platform_admin")),
    Column("STATE", enum("state")),
    Column("CREATED", timestamp("create_time")),
)
USER_DETAIL = (
    Column("NAME", field("name")),
    Column("DISPLAY NAME", field("display_name")),
    Column("EMAIL", field("email")),
    Column("PLATFORM ADMIN", field("platform_admin")),
    Column("STATE", enum("state")),
    Column("UID", field("uid")),
    Column("CREATED", timestamp("create_time")),
    Column("UPDATED", timestamp("update_time")),
)


def register(subparsers: Subparsers) -> None:
    """Add `user` to the command line."""
    user = add_group(subparsers, "user", "users: the people who use the platform")
    create = add_command(user, "create", create_user, "create a user (platform admins)")
    create.add_argument("id", metavar="ID", help="user id: lowercase letters, digits and dashes")
    create.add_argument("--display-name", default="", metavar="TEXT", help="human-readable name")
    create.add_argument("--email", default="", metavar="EMAIL", help="contact email")
    create.add_argument("--platform-admin", action="store_true", help="make the user a platform admin")
    add_limit_option(add_command(user, "list", list_users, "list users (platform admins)"))
    add_command(user, "get", get_user, "show a user").add_argument("id", metavar="ID")
    add_command(user, "disable", disable_user, "disable a user: their keys stop working").add_argument(
        "id", metavar="ID"
    )
    add_command(user, "enable", enable_user, "enable a disabled user").add_argument("id", metavar="ID")
    add_command(user, "delete", delete_user, "delete a user with their memberships and keys").add_argument(
        "id", metavar="ID"
    )


def create_user(ctx: Context) -> int:
    """CreateUser."""
    args = ctx.args
    request = identity_pb2.CreateUserRequest(
        user_id=args.id,
        user=identity_pb2.User(
            display_name=args.display_name, email=args.email, platform_admin=args.platform_admin
        ),
    )
    created: identity_pb2.User = ctx.client.call(ctx.client.identity.CreateUser, request)
    ctx.output.resource(created, USER_DETAIL)
    return 0


def list_users(ctx: Context) -> int:
    """ListUsers, every page."""
    client = ctx.client

    def fetch(token: str, size: int) -> tuple[list[identity_pb2.User], str]:
        request = identity_pb2.ListUsersRequest(page_token=token, page_size=size)
        page: identity_pb2.ListUsersResponse = client.call(client.identity.ListUsers, request)
        return list(page.users), page.next_page_token

    ctx.output.resources(collect(fetch, ctx.args.limit), USER_COLUMNS, "users")
    return 0


def get_user(ctx: Context) -> int:
    """GetUser."""
    request = identity_pb2.GetUserRequest(name=qualify(ctx.args.id, "users"))
    found: identity_pb2.User = ctx.client.call(ctx.client.identity.GetUser, request)
    ctx.output.resource(found, USER_DETAIL)
    return 0


def disable_user(ctx: Context) -> int:
    """DisableUser."""
    request = identity_pb2.DisableUserRequest(name=qualify(ctx.args.id, "users"))
    changed: identity_pb2.User = ctx.client.call(ctx.client.identity.DisableUser, request)
    ctx.output.resource(changed, USER_DETAIL)
    return 0


def enable_user(ctx: Context) -> int:
    """EnableUser."""
    request = identity_pb2.EnableUserRequest(name=qualify(ctx.args.id, "users"))
    changed: identity_pb2.User = ctx.client.call(ctx.client.identity.EnableUser, request)
    ctx.output.resource(changed, USER_DETAIL)
    return 0


def delete_user(ctx: Context) -> int:
    """DeleteUser."""
    name = qualify(ctx.args.id, "users")
    ctx.client.call(ctx.client.identity.DeleteUser, identity_pb2.DeleteUserRequest(name=name))
    report_deleted(ctx, name)
    return 0
