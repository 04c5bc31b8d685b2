"""What is wrong with a normalized spec, field by field (empty when it can run).

`where` is the spec's path in the request (`job.spec`, or `sweep.spec.job_template`), so the field
violations name what the caller sent.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from pai_common.errors import FieldViolation
from pai_dlc.domain.spec import (
    COORDINATORS,
    MAX_REPLICAS,
    Engine,
    JobSpec,
    Kind,
    ReplicaSpec,
    Role,
    local_path,
)

ALLOWED_ROLES: dict[Kind, frozenset[Role]] = {
    Kind.PYTORCH: frozenset({Role.MASTER, Role.WORKER}),
    Kind.CUSTOM: frozenset({Role.MASTER, Role.WORKER}),
    Kind.XGBOOST: frozenset({Role.MASTER, Role.WORKER}),
    Kind.TENSORFLOW: frozenset({Role.CHIEF, Role.WORKER, Role.PS, Role.EVALUATOR}),
    Kind.MPI: frozenset({Role.LAUNCHER, Role.WORKER}),
}
_LABEL = "[a-z]([a-z0-9-]{0,61}[a-z0-9])?"  # a resource id (RFC-1034)


def validate(
    spec: JobSpec, *, engines: Collection[Engine], workspace: str = "", where: str = "job.spec"
) -> list[FieldViolation]:
    """Every problem of `spec`; `workspace` (`workspaces/{w}`) is where its output model must be."""
    out: list[FieldViolation] = []
    if spec.output_model and not re.match(rf"^{re.escape(workspace)}/models/{_LABEL}$", spec.output_model):
        message = f"output_model must be {workspace}/models/<model id>, got {spec.output_model!r}"
        out.append(FieldViolation(f"{where}.output_model", message))
    out += _replica_problems(spec, where)
    if spec.engine not in engines:
        out.append(
            FieldViolation(f"{where}.engine", f"engine {spec.engine.name} is not configured on this server")
        )
    for name in ("checkpoint_uri", "output_uri"):
        try:
            local_path(getattr(spec, name))
        except ValueError as e:
            out.append(FieldViolation(f"{where}.{name}", str(e)))
    out += _data_problems(spec, where)
    out += _code_problems(spec, where)
    return out


def _replica_problems(spec: JobSpec, where: str) -> list[FieldViolation]:
    if not spec.replica_specs:
        return [FieldViolation(f"{where}.replica_specs", "at least one replica spec is required")]
    out: list[FieldViolation] = []
    seen: set[Role] = set()
    for i, rs in enumerate(spec.replica_specs):
        out += _one_replica_spec(spec, rs, f"{where}.replica_specs[{i}]", seen)
        seen.add(rs.role)
    if sum(rs.count for rs in spec.replica_specs) > MAX_REPLICAS:
        out.append(FieldViolation(f"{where}.replica_specs", f"at most {MAX_REPLICAS} replicas in all"))
    return out


def _one_replica_spec(spec: JobSpec, rs: ReplicaSpec, at: str, seen: set[Role]) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    allowed = ALLOWED_ROLES.get(spec.kind, frozenset())
    if rs.role == Role.ROLE_UNSPECIFIED:
        out.append(FieldViolation(f"{at}.role", "a role is required"))
    elif rs.role not in allowed:
        roles = ", ".join(sorted(r.name for r in allowed))
        out.append(FieldViolation(f"{at}.role", f"a {spec.kind.name} job has roles {roles}"))
    if rs.role in seen:
        out.append(FieldViolation(f"{at}.role", f"role {rs.role.name} appears twice"))
    if rs.role in COORDINATORS and rs.count > 1:
        out.append(FieldViolation(f"{at}.count", f"at most one {rs.role.label} replica"))
    if rs.instance_type:  # never silently ignored: the job would run on other resources than asked
        message = (
            "instance types come from dsw's catalog, which this platform does not run yet; give resources"
        )
        out.append(FieldViolation(f"{at}.instance_type", message))
    if spec.engine in (Engine.LOCAL, Engine.RAY) and not rs.command:
        out.append(FieldViolation(f"{at}.command", "a command is required for the LOCAL and RAY engines"))
    return out


def _data_problems(spec: JobSpec, where: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for i, ds in enumerate(spec.data_sources):
        field = f"{where}.data_sources[{i}]." + ("dataset_version" if ds.dataset_version else "uri")
        uri = ds.resolved_uri or ds.uri
        if not uri:
            out.append(FieldViolation(field, "the dataset version was not resolved to a URI"))
            continue
        try:
            local_path(uri)
        except ValueError as e:
            out.append(FieldViolation(field, f"{ds.dataset_version}: {e}" if ds.dataset_version else str(e)))
    return out


def _code_problems(spec: JobSpec, where: str) -> list[FieldViolation]:
    """The code's URI; whether the directory exists on this server is the app's question (I/O)."""
    if not spec.code.uri:
        return []
    try:
        local_path(spec.code.uri)
    except ValueError as e:
        return [FieldViolation(f"{where}.code.uri", str(e))]
    return []
