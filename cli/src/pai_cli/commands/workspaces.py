"""`pai workspace ...` and `pai member ...`: tenants and who belongs to them with which role."""

from __future__ import annotations

from google.protobuf import field_mask_pb2

from pai.auth.v1 import workspace_pb2
from pai_cli.client import collect
from pai_cli.commands.common import (
    ROLES,
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
from pai_cli.output import Column, enum, field, last_segment, timestamp

WORKSPACE_COLUMNS = (
    Column("ID", last_segment("name")),
    Column("DISPLAY NAME", field("display_name")),
    Column("STATE", enum("state")),
    Column("CREATED", timestamp("create_time")),
)
WORKSPACE_DETAIL = (
    Column("NAME", field("name")),
    Column("DISPLAY NAME", field("display_name")),
    Column("DESCRIPTION", field("description")),
    Column("STATE", enum("state")),
    Column("UID", field("uid")),
    Column("CREATED", timestamp("create_time")),
    Column("UPDATED", timestamp("update_time")),
)
MEMBER_COLUMNS = (
    Column("USER", last_segment("user")),
    Column("ROLE", enum("role")),
    Column("SINCE", timestamp("create_time")),
    Column("UPDATED", timestamp("update_time")),
)
MEMBER_DETAIL = (
    Column("NAME", field("name")),
    Column("USER", field("user")),
    Column("ROLE", enum("role")),
    Column("SINCE", timestamp("create_time")),
    Column("UPDATED", timestamp("update_time")),
)


def register(subparsers: Subparsers) -> None:
    """Add `workspace` and `member` to the command line."""
    workspace = add_group(subparsers, "workspace", "workspaces: the tenants of the platform")
    create = add_command(workspace, "create", create_workspace, "create a workspace (platform admins)")
    create.add_argument("id", metavar="ID", help="workspace id: lowercase letters, digits and dashes")
    create.add_argument("--display-name", default="", metavar="TEXT", help="human-readable name")
    create.add_argument("--description", default="", metavar="TEXT", help="what the workspace is for")
    add_limit_option(add_command(workspace, "list", list_workspaces, "list the workspaces you belong to"))
    add_command(workspace, "get", get_workspace, "show a workspace").add_argument("id", metavar="ID")
    delete = add_command(
        workspace, "delete", delete_workspace, "delete a workspace with its members (owners)"
    )
    delete.add_argument("id", metavar="ID")

    member = add_group(subparsers, "member", "workspace members and their roles")
    add = add_command(member, "add", add_member, "add a user to a workspace with a role")
    add.add_argument("user", metavar="USER", help="user id")
    add.add_argument("--role", required=True, choices=ROLES)
    add_workspace_option(add)
    listing = add_command(member, "list", list_members, "list a workspace's members")
    add_workspace_option(listing)
    add_limit_option(listing)
    set_role = add_command(member, "set-role", set_member_role, "change a member's role")
    set_role.add_argument("user", metavar="USER", help="user id")
    set_role.add_argument("--role", required=True, choices=ROLES)
    add_workspace_option(set_role)
    remove = add_command(member, "remove", remove_member, "remove a user from a workspace")
    remove.add_argument("user", metavar="USER", help="user id")
    add_workspace_option(remove)


def create_workspace(ctx: Context) -> int:
    """CreateWorkspace."""
    args = ctx.args
    request = workspace_pb2.CreateWorkspaceRequest(
        workspace_id=args.id,
        workspace=workspace_pb2.Workspace(display_name=args.display_name, description=args.description),
    )
    created: workspace_pb2.Workspace = ctx.client.call(ctx.client.workspaces.CreateWorkspace, request)
    ctx.output.resource(created, WORKSPACE_DETAIL)
    return 0


def list_workspaces(ctx: Context) -> int:
    """ListWorkspaces, every page."""
    client = ctx.client

    def fetch(token: str, size: int) -> tuple[list[workspace_pb2.Workspace], str]:
        request = workspace_pb2.ListWorkspacesRequest(page_token=token, page_size=size)
        page: workspace_pb2.ListWorkspacesResponse = client.call(client.workspaces.ListWorkspaces, request)
        return list(page.workspaces), page.next_page_token

    ctx.output.resources(collect(fetch, ctx.args.limit), WORKSPACE_COLUMNS, "workspaces")
    return 0


def get_workspace(ctx: Context) -> int:
    """GetWorkspace."""
    request = workspace_pb2.GetWorkspaceRequest(name=qualify(ctx.args.id, "workspaces"))
    found: workspace_pb2.Workspace = ctx.client.call(ctx.client.workspaces.GetWorkspace, request)
    ctx.output.resource(found, WORKSPACE_DETAIL)
    return 0


def delete_workspace(ctx: Context) -> int:
    """DeleteWorkspace."""
    name = qualify(ctx.args.id, "workspaces")
    ctx.client.call(ctx.client.workspaces.DeleteWorkspace, workspace_pb2.DeleteWorkspaceRequest(name=name))
    report_deleted(ctx, name)
    return 0


def add_member(ctx: Context) -> int:
    """CreateMember."""
    args = ctx.args
    request = workspace_pb2.CreateMemberRequest(
        parent=ctx.workspace,
        member=workspace_pb2.Member(user=qualify(args.user, "users"), role=role(args.role)),
    )
    created: workspace_pb2.Member = ctx.client.call(ctx.client.workspaces.CreateMember, request)
    ctx.output.resource(created, MEMBER_DETAIL)
    return 0


def list_members(ctx: Context) -> int:
    """ListMembers, every page."""
    client, parent = ctx.client, ctx.workspace

    def fetch(token: str, size: int) -> tuple[list[workspace_pb2.Member], str]:
        request = workspace_pb2.ListMembersRequest(parent=parent, page_token=token, page_size=size)
        page: workspace_pb2.ListMembersResponse = client.call(client.workspaces.ListMembers, request)
        return list(page.members), page.next_page_token

    ctx.output.resources(collect(fetch, ctx.args.limit), MEMBER_COLUMNS, f"members in {parent}")
    return 0


def set_member_role(ctx: Context) -> int:
    """UpdateMember with `update_mask: role`."""
    request = workspace_pb2.UpdateMemberRequest(
        member=workspace_pb2.Member(name=_member_name(ctx), role=role(ctx.args.role)),
        update_mask=field_mask_pb2.FieldMask(paths=["role"]),
    )
    updated: workspace_pb2.Member = ctx.client.call(ctx.client.workspaces.UpdateMember, request)
    ctx.output.resource(updated, MEMBER_DETAIL)
    return 0


def remove_member(ctx: Context) -> int:
    """DeleteMember."""
    name = _member_name(ctx)
    ctx.client.call(ctx.client.workspaces.DeleteMember, workspace_pb2.DeleteMemberRequest(name=name))
    report_deleted(ctx, name)
    return 0


def _member_name(ctx: Context) -> str:
    user_id = ctx.args.user.removeprefix("users/")
    return f"{ctx.workspace}/members/{user_id}"
