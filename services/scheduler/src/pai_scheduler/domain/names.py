"""The scheduler's resource names: `resourceGroups/{group}`, `.../nodes/{node}`,
`workspaces/{workspace}/workloads/{workload}`."""

from __future__ import annotations

from pai_common.errors import InvalidArgument, bad_request


def group_id(name: str) -> str:
    """The group id in `resourceGroups/{group}`, or `name` itself when it is an id already."""
    return name.split("/")[1] if name.startswith("resourceGroups/") else name


def node_parts(name: str) -> tuple[str, str]:
    """(group id, node id) of a node name; INVALID_ARGUMENT on `name` otherwise."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "resourceGroups" or parts[2] != "nodes":
        raise _bad_name(name, "a node name", "resourceGroups/{group}/nodes/{node}")
    return parts[1], parts[3]


def workload_parts(name: str) -> tuple[str, str]:
    """(workspace id, workload id) of a workload name; INVALID_ARGUMENT on `name` otherwise."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "workspaces" or parts[2] != "workloads":
        raise _bad_name(name, "a workload name", "workspaces/{workspace}/workloads/{workload}")
    return parts[1], parts[3]


def _bad_name(name: str, what: str, pattern: str) -> InvalidArgument:
    return bad_request("name", f"{name!r} is not {what} ({pattern})", description=f"must be {pattern}")
