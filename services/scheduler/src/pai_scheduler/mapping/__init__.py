"""The one place where the scheduler's protos and its domain records meet, one module per resource.

Requests become domain records (or the changes an Update makes to one), records and their usage
become messages, and changes become events.
"""

from __future__ import annotations

from pai_scheduler.mapping.amounts import limits, limits_from, resources
from pai_scheduler.mapping.events import (
    SOURCE,
    event,
    group_event,
    node_event,
    nodes_imported,
    pending_reason_changed,
    quota_event,
    workload_event,
)
from pai_scheduler.mapping.groups import (
    GROUP_FIELDS,
    group_from,
    group_update,
    policy,
    policy_from,
    resource_group,
)
from pai_scheduler.mapping.nodes import (
    NODE_FIELDS,
    SOURCE_VALUES,
    SOURCES,
    gpus_from,
    import_response,
    node,
    node_from,
    node_update,
)
from pai_scheduler.mapping.quotas import (
    QUOTA_FIELDS,
    quota,
    quota_from,
    quota_spec,
    quota_update,
    quota_usage,
)
from pai_scheduler.mapping.stats import scheduler_stats
from pai_scheduler.mapping.workloads import (
    OWNER_KINDS,
    WORKLOAD_FIELDS,
    W,
    WorkloadChange,
    explanation,
    outcome_name,
    pod_set,
    pod_set_from,
    workload,
    workload_from,
    workload_update,
)

__all__ = [
    "GROUP_FIELDS",
    "NODE_FIELDS",
    "OWNER_KINDS",
    "QUOTA_FIELDS",
    "SOURCE",
    "SOURCES",
    "SOURCE_VALUES",
    "WORKLOAD_FIELDS",
    "W",
    "WorkloadChange",
    "event",
    "explanation",
    "gpus_from",
    "group_event",
    "group_from",
    "group_update",
    "import_response",
    "limits",
    "limits_from",
    "node",
    "node_event",
    "node_from",
    "node_update",
    "nodes_imported",
    "outcome_name",
    "pending_reason_changed",
    "pod_set",
    "pod_set_from",
    "policy",
    "policy_from",
    "quota",
    "quota_event",
    "quota_from",
    "quota_spec",
    "quota_update",
    "quota_usage",
    "resource_group",
    "resources",
    "scheduler_stats",
    "workload",
    "workload_event",
    "workload_from",
    "workload_update",
]
