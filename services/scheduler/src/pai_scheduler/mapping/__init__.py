"""The one place where the scheduler's protos and its domain records meet, one module per resource.

Requests become domain records (or the changes an Update makes to one), records and their usage
become messages, and changes become events.
"""

from __future__ import annotations

from pai_scheduler.mapping.events import (
    group_event,
    node_event,
    nodes_imported,
    pending_reason_changed,
    quota_event,
    workload_event,
)
from pai_scheduler.mapping.groups import GROUP_FIELDS, group_from, group_update, resource_group
from pai_scheduler.mapping.nodes import NODE_FIELDS, import_response, node, node_from, node_update
from pai_scheduler.mapping.quotas import QUOTA_FIELDS, quota, quota_from, quota_update
from pai_scheduler.mapping.stats import scheduler_stats
from pai_scheduler.mapping.workloads import (
    WORKLOAD_FIELDS,
    WorkloadChange,
    explanation,
    outcome_name,
    workload,
    workload_from,
    workload_update,
)

__all__ = [
    "GROUP_FIELDS",
    "NODE_FIELDS",
    "QUOTA_FIELDS",
    "WORKLOAD_FIELDS",
    "WorkloadChange",
    "explanation",
    "group_event",
    "group_from",
    "group_update",
    "import_response",
    "node",
    "node_event",
    "node_from",
    "node_update",
    "nodes_imported",
    "outcome_name",
    "pending_reason_changed",
    "quota",
    "quota_event",
    "quota_from",
    "quota_update",
    "resource_group",
    "scheduler_stats",
    "workload",
    "workload_event",
    "workload_from",
    "workload_update",
]
