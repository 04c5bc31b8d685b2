"""`pai quota ...`, `pai node list`, `pai queue list`: the scheduler's quotas, inventory and queues.

Amounts are shown as people count them: CPU in cores, memory with binary suffixes, GPU in cards
(fractional for shared cards); `--output json` gives the scheduler's own units (milli-cores, bytes,
milli-GPUs).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from pai.scheduler.v1 import node_pb2, quota_pb2, types_pb2, workload_pb2
from pai_cli.client import collect
from pai_cli.commands.common import (
    Context,
    Subparsers,
    add_command,
    add_group,
    add_limit_option,
    positive_int,
)
from pai_cli.errors import UsageError
from pai_cli.output import EMPTY, Column, enum, field, timestamp, to_dict
from pai_cli.quantities import (
    gpu_limit_text,
    limits_argument,
    limits_text,
    memory_text,
    milli_text,
)

GROUPS = "resourceGroups"
ALL = "-"


def short_name(name: str) -> str:
    """`resourceGroups/gpu/quotas/research` → `gpu/research` (also nodes and workloads)."""
    parts = name.split("/")
    return f"{parts[1]}/{parts[3]}" if len(parts) == 4 else name or EMPTY


def _short(name: str) -> Callable[[Any], str]:
    def read(message: Any) -> str:
        return short_name(str(getattr(message, name)))

    return read


def _workspace(message: Any) -> str:
    return str(message.workspace).removeprefix("workspaces/") or EMPTY


# ---- quotas ----------------------------------------------------------------------------------------

QUOTA_COLUMNS = (
    Column("NAME", _short("name")),
    Column("WORKSPACE", _workspace),
    Column("MIN GPU", lambda q: gpu_limit_text(q.min)),
    Column("MAX GPU", lambda q: gpu_limit_text(q.max)),
    Column("USED GPU", lambda q: milli_text(q.usage.admitted.gpu_milli)),
    Column("PENDING", lambda q: str(q.usage.pending_workload_count)),
    Column("ADMITTED", lambda q: str(q.usage.admitted_workload_count)),
    Column("STATE", enum("state")),
)
QUOTA_DETAIL = (
    Column("NAME", field("name")),
    Column("WORKSPACE", field("workspace")),
    Column("PARENT", field("parent")),
    Column("MIN", lambda q: limits_text(q.min)),
    Column("MAX", lambda q: limits_text(q.max)),
    Column("WEIGHT", field("weight")),
    Column("STATE", enum("state")),
    Column("UID", field("uid")),
    Column("CREATED", timestamp("create_time")),
)
_Scalar = Literal["cpu_milli", "memory_bytes", "gpu_milli"]
USAGE_HEADERS = ("RESOURCE", "ADMITTED", "BORROWED", "LENT", "PENDING", "AVAILABLE", "MIN", "MAX")


def quota_name(value: str) -> str:
    """`gpu/research` (or the full `resourceGroups/gpu/quotas/research`) as a resource name."""
    parts = value.strip().split("/")
    if len(parts) == 4 and parts[0] == GROUPS and parts[2] == "quotas" and parts[1] and parts[3]:
        return value.strip()
    if len(parts) == 2 and all(parts):
        return f"{GROUPS}/{parts[0]}/quotas/{parts[1]}"
    raise UsageError(f"a quota is GROUP/ID, e.g. gpu/research: {value!r}")


def group_name(value: str) -> str:
    """`gpu`, `resourceGroups/gpu` or `-` (every group) as a resource name."""
    group = value.strip().removeprefix(f"{GROUPS}/")
    if not group or "/" in group:
        raise UsageError(f"a resource group is its id, e.g. gpu (or - for every group): {value!r}")
    return f"{GROUPS}/{group}"


def register(subparsers: Subparsers) -> None:
    """Add `quota`, `node` and `queue` to the command line."""
    quota = add_group(subparsers, "quota", "quotas: how resource groups are shared between workspaces")
    create = add_command(
        quota, "create", create_quota, "create a quota in a resource group (platform admins)"
    )
    create.add_argument("quota", metavar="GROUP/ID", help="resource group and quota id, e.g. gpu/research")
    create.add_argument(
        "-w",
        "--workspace",
        metavar="WORKSPACE",
        help="the workspace charged to this quota (omit for an intermediate quota such as a department)",
    )
    create.add_argument(
        "--parent", metavar="ID", help="the parent quota's id in the same group (default: none)"
    )
    create.add_argument(
        "--min",
        type=limits_argument,
        metavar="AMOUNTS",
        help="guaranteed amounts, e.g. gpu=4,cpu=16,memory=64Gi,gpu/A100=2"
        " (gpu in cards, 0.5 = half a card; cpu in cores or 500m; memory with Ki/Mi/Gi/Ti)",
    )
    create.add_argument("--max", type=limits_argument, metavar="AMOUNTS", help="caps, same form as --min")
    create.add_argument("--weight", type=positive_int, metavar="N", help="fair-share weight (default: 1)")
    create.add_argument("--display-name", default="", metavar="TEXT", help="human-readable name")
    create.add_argument("--description", default="", metavar="TEXT", help="what the quota is for")
    listing = add_command(quota, "list", list_quotas, "list quotas with their GPU use, in tree order")
    listing.add_argument(
        "group", nargs="?", default=ALL, metavar="GROUP", help="resource group (default: all)"
    )
    add_limit_option(listing)
    usage = add_command(quota, "usage", quota_usage, "a quota's use of each resource, and its workloads")
    usage.add_argument("quota", metavar="GROUP/ID", help="resource group and quota id, e.g. gpu/research")

    node = add_group(subparsers, "node", "nodes: the machines of resource groups")
    listing = add_command(node, "list", list_nodes, "list nodes with their capacity and what is in use")
    listing.add_argument(
        "group", nargs="?", default=ALL, metavar="GROUP", help="resource group (default: all)"
    )
    add_limit_option(listing)

    queue = add_group(subparsers, "queue", "the scheduler's queues of pending workloads")
    listing = add_command(queue, "list", list_queue, "pending workloads in queue order, and why each waits")
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument(
        "-w",
        "--workspace",
        metavar="WORKSPACE",
        help="workspace id (default: $PAI_WORKSPACE, `workspace` in the credentials, else `default`)",
    )
    scope.add_argument("--all", action="store_true", help="every workspace's (platform admins)")
    add_limit_option(listing)


def create_quota(ctx: Context) -> int:
    """CreateQuota."""
    args = ctx.args
    name = quota_name(args.quota)
    group, quota_id = name.rsplit("/quotas/", 1)
    quota = quota_pb2.Quota(display_name=args.display_name, description=args.description)
    if args.workspace:
        quota.workspace = f"workspaces/{args.workspace.removeprefix('workspaces/')}"
    if args.parent:
        quota.parent = quota_name(args.parent) if "/" in args.parent else f"{group}/quotas/{args.parent}"
    if args.min is not None:
        quota.min.CopyFrom(args.min)
    if args.max is not None:
        quota.max.CopyFrom(args.max)
    if args.weight is not None:
        quota.weight = args.weight
    request = quota_pb2.CreateQuotaRequest(parent=group, quota_id=quota_id, quota=quota)
    created: quota_pb2.Quota = ctx.client.call(ctx.client.quotas.CreateQuota, request)
    ctx.output.resource(created, QUOTA_DETAIL)
    return 0


def list_quotas(ctx: Context) -> int:
    """ListQuotas, every page."""
    client, parent = ctx.client, group_name(ctx.args.group)

    def fetch(token: str, size: int) -> tuple[list[quota_pb2.Quota], str]:
        request = quota_pb2.ListQuotasRequest(parent=parent, page_token=token, page_size=size)
        page: quota_pb2.ListQuotasResponse = client.call(client.quotas.ListQuotas, request)
        return list(page.quotas), page.next_page_token

    noun = "quotas" if parent.endswith(f"/{ALL}") else f"quotas in {parent}"
    ctx.output.resources(collect(fetch, ctx.args.limit), QUOTA_COLUMNS, noun)
    return 0


def quota_usage(ctx: Context) -> int:
    """GetQuota: the usage part, one row per resource."""
    request = quota_pb2.GetQuotaRequest(name=quota_name(ctx.args.quota))
    quota: quota_pb2.Quota = ctx.client.call(ctx.client.quotas.GetQuota, request)
    out = ctx.output
    if out.json:
        out.document(to_dict(quota))
        return 0
    usage = quota.usage
    out.record(
        [
            ("QUOTA", short_name(quota.name)),
            ("WORKSPACE", _workspace(quota)),
            ("STATE", quota_pb2.Quota.State.Name(quota.state)),
        ]
    )
    out.line()
    out.table(list(USAGE_HEADERS), usage_rows(quota))
    out.line()
    out.record(
        [
            (
                "WORKLOADS",
                f"{usage.admitted_workload_count} admitted, {usage.pending_workload_count} pending,"
                f" {usage.preempting_workload_count} preempting",
            ),
            ("DOMINANT SHARE", f"{usage.dominant_share:.3g} (weighted {usage.weighted_share:.3g})"),
        ]
    )
    return 0


def usage_rows(quota: quota_pb2.Quota) -> list[list[str]]:
    """cpu, memory, gpu and each GPU model the quota limits or uses: usage, then limits."""
    usage = quota.usage
    amounts = (usage.admitted, usage.borrowed, usage.lent, usage.pending, usage.available)
    models = sorted(
        {m.model for r in amounts for m in r.gpu_models}
        | {m.model for lim in (quota.min, quota.max) for m in lim.gpu_models}
    )
    rows: list[list[str]] = []
    scalars: tuple[tuple[str, _Scalar, Callable[[int], str]], ...] = (
        ("cpu", "cpu_milli", milli_text),
        ("memory", "memory_bytes", memory_text),
        ("gpu", "gpu_milli", milli_text),
    )
    for resource, key, show in scalars:
        used = [show(getattr(r, key)) for r in amounts]
        limits = [show(getattr(lim, key)) if lim.HasField(key) else EMPTY for lim in (quota.min, quota.max)]
        rows.append([resource, *used, *limits])
    for model in models:
        used = [milli_text(_model_amount(r.gpu_models, model) or 0) for r in amounts]
        limits = [_model_limit(lim, model) for lim in (quota.min, quota.max)]
        rows.append([f"gpu/{model}", *used, *limits])
    return rows


def _model_amount(amounts: Any, model: str) -> int | None:
    return next((int(a.gpu_milli) for a in amounts if a.model == model), None)


def _model_limit(limits: types_pb2.ResourceLimits, model: str) -> str:
    value = _model_amount(limits.gpu_models, model)
    return EMPTY if value is None else milli_text(value)


# ---- nodes -----------------------------------------------------------------------------------------


def _cpu(node: node_pb2.Node) -> str:
    return f"{milli_text(node.allocated.cpu_milli)}/{milli_text(node.allocatable.cpu_milli)}"


def _memory(node: node_pb2.Node) -> str:
    return f"{memory_text(node.allocated.memory_bytes)}/{memory_text(node.allocatable.memory_bytes)}"


def _gpus(node: node_pb2.Node) -> str:
    counts = Counter(gpu.model or "?" for gpu in node.gpus)
    return ", ".join(f"{model} x{n}" for model, n in sorted(counts.items())) or EMPTY


def _gpu_used(node: node_pb2.Node) -> str:
    return milli_text(node.allocated.gpu_milli) if node.gpus else EMPTY


def _node_state(node: node_pb2.Node) -> str:
    health = "ready" if node.state == node_pb2.Node.READY else "not ready"
    if node.cordoned:
        return "cordoned" if node.state == node_pb2.Node.READY else f"{health}, cordoned"
    return health


NODE_COLUMNS = (
    Column("NAME", _short("name")),
    Column("SOURCE", enum("source")),
    Column("CPU", _cpu),
    Column("MEMORY", _memory),
    Column("GPUS", _gpus),
    Column("GPU USED", _gpu_used),
    Column("STATE", _node_state),
)


def list_nodes(ctx: Context) -> int:
    """ListNodes, every page."""
    client, parent = ctx.client, group_name(ctx.args.group)

    def fetch(token: str, size: int) -> tuple[list[node_pb2.Node], str]:
        request = node_pb2.ListNodesRequest(parent=parent, page_token=token, page_size=size)
        page: node_pb2.ListNodesResponse = client.call(client.nodes.ListNodes, request)
        return list(page.nodes), page.next_page_token

    noun = "nodes" if parent.endswith(f"/{ALL}") else f"nodes in {parent}"
    ctx.output.resources(collect(fetch, ctx.args.limit), NODE_COLUMNS, noun)
    return 0


# ---- the queue -------------------------------------------------------------------------------------

PENDING_FILTER = "state = PENDING"
QUEUE_ORDER = "queue"


def age(since: dt.datetime, now: dt.datetime) -> str:
    """How long ago, kubectl style: `45s`, `12m`, `3h`, `2d`."""
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def queue_columns(every_workspace: bool, now: dt.datetime) -> tuple[Column, ...]:
    """The queue table; the workload is `workspace/id` when several workspaces are listed."""

    def workload(w: workload_pb2.Workload) -> str:
        return short_name(w.name) if every_workspace else w.name.rsplit("/", 1)[-1]

    def waited(w: workload_pb2.Workload) -> str:
        stamp = w.enqueue_time if w.HasField("enqueue_time") else w.create_time
        return age(stamp.ToDatetime(tzinfo=dt.UTC), now) if stamp.seconds else EMPTY

    return (
        Column("POS", lambda w: str(w.queue_position) if w.queue_position else EMPTY),
        Column("WORKLOAD", workload),
        Column("QUOTA", _short("quota")),
        Column("PRIORITY", field("priority")),
        Column("SPOT", field("preemptible")),
        Column("GPUS", lambda w: milli_text(w.total_request.gpu_milli)),
        Column("AGE", waited),
        Column("REASON", field("pending_reason")),  # last, so the whole sentence is always shown
    )


def list_queue(ctx: Context) -> int:
    """ListWorkloads with `state = PENDING` in queue order, every page."""
    args = ctx.args
    client = ctx.client
    parent = "workspaces/-" if args.all else ctx.workspace

    def fetch(token: str, size: int) -> tuple[list[workload_pb2.Workload], str]:
        request = workload_pb2.ListWorkloadsRequest(
            parent=parent, filter=PENDING_FILTER, order_by=QUEUE_ORDER, page_token=token, page_size=size
        )
        page: workload_pb2.ListWorkloadsResponse = client.call(client.workloads.ListWorkloads, request)
        return list(page.workloads), page.next_page_token

    columns = queue_columns(args.all, dt.datetime.now(dt.UTC))
    ctx.output.resources(collect(fetch, args.limit), columns, f"pending workloads in {parent}")
    return 0
