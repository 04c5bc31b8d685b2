"""List filters (an AIP-160 subset: `a = x AND (b = y OR b = z)`) and the orders of workload lists."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from pai_common.errors import bad_request
from pai_scheduler.domain.records import NodeRecord, QuotaRecord
from pai_scheduler.domain.workload import State, Workload

Terms = list[tuple[str, set[str]]]
"""A parsed filter: (field, values) pairs, all of which must hold; a pair holds for any of its values."""

NODE_FIELDS = ("schedulable", "cordoned", "gpu_model", "source", "state")
QUOTA_FIELDS = ("workspace", "parent", "state")
WORKLOAD_FIELDS = (
    "state",
    "quota",
    "resource_group",
    "owner",
    "owner_kind",
    "preemptible",
    "pending_reason_code",
)
WORKLOAD_ORDERS = ("create_time desc", "create_time", "queue")

_TERM = re.compile(r'^\s*([a-z_]+(?:\.[A-Za-z0-9_./-]+)?)\s*=\s*("([^"]*)"|[A-Za-z0-9_./-]+)\s*$')


def parse(expression: str, fields: Sequence[str]) -> Terms:
    """The terms of `expression` over `fields` and `labels.<key>`; none for a blank one.

    Every OR group compares one field; anything else is INVALID_FILTER.
    """
    if not expression.strip():
        return []
    out: Terms = []
    for part in re.split(r"\s+AND\s+", expression.strip()):
        part = part.strip()
        if part.startswith("(") and part.endswith(")"):
            part = part[1:-1]
        key: str | None = None
        values: set[str] = set()
        for alt in re.split(r"\s+OR\s+", part):
            m = _TERM.match(alt)
            if m is None:
                raise bad_request(
                    "filter",
                    f"cannot parse {alt.strip()!r}; use field = value joined by AND/OR",
                    "INVALID_FILTER",
                )
            k, v = m.group(1), m.group(3) if m.group(3) is not None else m.group(2)
            if k not in fields and not k.startswith("labels."):
                known = ", ".join(fields)
                raise bad_request(
                    "filter", f"unknown field {k!r}; known: {known}, labels.<key>", "INVALID_FILTER"
                )
            if key is not None and k != key:
                raise bad_request("filter", "an OR group must compare one field", "INVALID_FILTER")
            key = k
            values.add(v)
        assert key is not None  # re.split always yields one alternative at least
        out.append((key, values))
    return out


def values_of(terms: Terms, field: str) -> set[str] | None:
    """The values `terms` allow for `field`; None when they do not name it."""
    return next((v for k, v in terms if k == field), None)


def node_matches(n: NodeRecord, terms: Terms) -> bool:
    """Whether node `n` passes every term; a label it lacks never matches."""
    values = {
        "schedulable": str(n.ready and not n.cordoned).lower(),
        "cordoned": str(n.cordoned).lower(),
        "source": n.source,
        "state": "READY" if n.ready else "NOT_READY",
    }
    for key, allowed in terms:
        if key == "gpu_model":
            ok = any(g.model in allowed for g in n.gpus)
        elif key.startswith("labels."):
            ok = n.labels.get(key[7:]) in allowed
        else:
            ok = values[key] in allowed
        if not ok:
            return False
    return True


def quota_matches(q: QuotaRecord, terms: Terms) -> bool:
    """Whether quota `q` passes every term (a `labels.` term compares the empty string)."""
    values = {
        "workspace": q.spec.workspace,
        "parent": q.spec.parent,
        "state": "HELD" if q.spec.held else "ACTIVE",
    }
    return all(values.get(k, "") in v for k, v in terms)


def workload_matches(w: Workload, terms: Terms) -> bool:
    """Whether workload `w` passes every term; a label it lacks is the empty string."""
    for key, allowed in terms:
        if key.startswith("labels."):
            value = w.labels.get(key[7:], "")
        else:
            value = {
                "state": str(w.state),
                "quota": w.quota,
                "resource_group": w.resource_group,
                "owner": w.owner,
                "owner_kind": w.owner_kind,
                "preemptible": str(w.preemptible).lower(),
                "pending_reason_code": w.pending_code if w.state == State.PENDING else "",
            }[key]
        if value not in allowed:
            return False
    return True


def workload_order(order_by: str) -> str:
    """The order a workload list asks for (newest first unless named); INVALID_ORDER_BY otherwise."""
    order = order_by.strip() or "create_time desc"
    if order not in WORKLOAD_ORDERS:
        raise bad_request("order_by", "use `create_time desc`, `create_time` or `queue`", "INVALID_ORDER_BY")
    return order


def sort_workloads(items: list[Workload], order: str) -> None:
    """Sort in `order`: `queue` is by group, quota, pending first, then as each queue stands."""
    if order == "queue":
        items.sort(
            key=lambda w: (w.resource_group, w.quota, w.state != State.PENDING, -w.priority, w.seq, w.name)
        )
    else:
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        items.sort(key=lambda w: (w.create_time or epoch, w.name), reverse=order == "create_time desc")
