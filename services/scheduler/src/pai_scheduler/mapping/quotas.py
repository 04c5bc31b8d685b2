"""Quotas and their usage on the wire, and what CreateQuota and UpdateQuota ask for."""

from __future__ import annotations

from collections.abc import Callable, Set

from pai.scheduler.v1 import quota_pb2
from pai_common import fieldmask
from pai_common.wire import ts
from pai_scheduler.domain.quota import QuotaSpec
from pai_scheduler.domain.records import QuotaRecord
from pai_scheduler.domain.usage import QuotaUsage
from pai_scheduler.mapping.amounts import limits, limits_from, resources

_RECLAIM = {1: "NEVER", 2: "LOWER_PRIORITY", 3: "ANY"}
_WITHIN = {1: "NEVER", 2: "LOWER_PRIORITY"}
_LIMITS = ("min", "max", "borrowing_limit", "lending_limit", "weight")
QUOTA_FIELDS = ("display_name", "description", "labels", *_LIMITS, "preemption_policy")
"""What UpdateQuota may change."""


def quota_spec(name: str, msg: quota_pb2.Quota) -> QuotaSpec:
    pp = msg.preemption_policy
    return QuotaSpec(
        name=name,
        parent=msg.parent,
        workspace=msg.workspace,
        min=limits_from(msg.min),
        max=limits_from(msg.max),
        borrowing_limit=limits_from(msg.borrowing_limit),
        lending_limit=limits_from(msg.lending_limit),
        weight=msg.weight or 1,
        reclaim=_RECLAIM.get(pp.reclaim, "ANY"),
        within_quota=_WITHIN.get(pp.within_quota, "LOWER_PRIORITY"),
    )


def quota_from(parent: str, quota_id: str, m: quota_pb2.Quota) -> QuotaRecord:
    """A new quota as CreateQuota asks for it."""
    name = f"{parent}/quotas/{quota_id}"
    return QuotaRecord(quota_spec(name, m), "", m.display_name, m.description, dict(m.labels))


def quota_update(m: quota_pb2.Quota, fields: Set[str]) -> Callable[[QuotaRecord], None]:
    """What UpdateQuota changes: the `fields` of `m` (never its parent, workspace or state)."""
    given = quota_spec(m.name, m)

    def change(q: QuotaRecord) -> None:
        for f in _LIMITS:
            if f in fields:
                setattr(q.spec, f, getattr(given, f))
        if "preemption_policy" in fields:
            q.spec.reclaim, q.spec.within_quota = given.reclaim, given.within_quota
        fieldmask.assign(q, m, fields)

    return change


def quota_usage(u: QuotaUsage) -> quota_pb2.QuotaUsage:
    return quota_pb2.QuotaUsage(
        admitted=resources(u.admitted),
        borrowed=resources(u.borrowed),
        lent=resources(u.lent),
        pending=resources(u.pending),
        available=resources(u.available),
        admitted_workload_count=u.admitted_count,
        pending_workload_count=u.pending_count,
        preempting_workload_count=u.preempting_count,
        dominant_share=u.dominant_share,
        weighted_share=u.weighted_share,
        compute_time=ts(u.compute_time),
    )


def quota(q: QuotaRecord, usage: QuotaUsage | None = None) -> quota_pb2.Quota:
    """A quota with its usage (without one, as events carry it)."""
    s = q.spec
    reclaim = {v: k for k, v in _RECLAIM.items()}
    within = {v: k for k, v in _WITHIN.items()}
    return quota_pb2.Quota(
        name=s.name,
        uid=q.uid,
        display_name=q.display_name,
        description=q.description,
        parent=s.parent,
        workspace=s.workspace,
        min=limits(s.min),
        max=limits(s.max),
        borrowing_limit=limits(s.borrowing_limit),
        lending_limit=limits(s.lending_limit),
        weight=s.weight,
        preemption_policy=quota_pb2.PreemptionPolicy(
            reclaim=reclaim[s.reclaim],  # type: ignore[arg-type]
            within_quota=within[s.within_quota],  # type: ignore[arg-type]
        ),
        labels=q.labels,
        state=quota_pb2.Quota.HELD if s.held else quota_pb2.Quota.ACTIVE,
        usage=None if usage is None else quota_usage(usage),
        create_time=ts(q.create_time),
        update_time=ts(q.update_time),
        version=q.version,
        etag=q.etag,
    )
