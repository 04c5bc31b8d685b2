"""A job's spec: the defaults the server stores, the checks it makes, and the replicas it expands to.

The stored spec always says exactly what runs: `normalize` fills every default at create (kind,
engine, counts, restart policies, checkpoint and output URIs), so a job never changes meaning when a
server default changes later.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from pai.dlc.v1 import job_spec_pb2

JobSpec = job_spec_pb2.JobSpec
ReplicaSpec = job_spec_pb2.ReplicaSpec
Role = ReplicaSpec.Role

ROLE_NAMES: dict[int, str] = {
    Role.MASTER: "master",
    Role.WORKER: "worker",
    Role.PS: "ps",
    Role.CHIEF: "chief",
    Role.EVALUATOR: "evaluator",
    Role.LAUNCHER: "launcher",
}

ALLOWED_ROLES: dict[int, set[int]] = {
    JobSpec.PYTORCH: {Role.MASTER, Role.WORKER},
    JobSpec.CUSTOM: {Role.MASTER, Role.WORKER},
    JobSpec.XGBOOST: {Role.MASTER, Role.WORKER},
    JobSpec.TENSORFLOW: {Role.CHIEF, Role.WORKER, Role.PS, Role.EVALUATOR},
    JobSpec.MPI: {Role.LAUNCHER, Role.WORKER},
}

# the order ranks are given in: the coordinating role first
RANK_ORDER = (Role.MASTER, Role.CHIEF, Role.LAUNCHER, Role.WORKER, Role.PS, Role.EVALUATOR)

MAX_REPLICAS = 1024


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica of a job: `worker-1` is the second worker."""

    role: int  # ReplicaSpec.Role
    index: int
    rank: int
    spec: job_spec_pb2.ReplicaSpec

    @property
    def name(self) -> str:
        return f"{ROLE_NAMES[self.role]}-{self.index}"

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[self.role]


_LABEL = "[a-z]([a-z0-9-]{0,61}[a-z0-9])?"  # a resource id (RFC-1034)


def local_path(uri: str) -> pathlib.Path:
    """The local path of a `file://` URI (or a bare absolute path)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return pathlib.Path(unquote(parsed.path))
    raise ValueError(f"only file:// URIs are supported here, got {uri!r}")


def file_uri(path: pathlib.Path) -> str:
    return path.resolve().as_uri()


def validate(spec: JobSpec, *, engines: frozenset[int], workspace: str = "") -> list[Violation]:
    """What is wrong with a spec after `normalize` (empty when it can run); `workspace` (the job's,
    `workspaces/{w}`) is where its output model must be."""
    out: list[Violation] = []
    if spec.output_model and not re.match(rf"^{re.escape(workspace)}/models/{_LABEL}$", spec.output_model):
        out.append(
            Violation(
                "job.spec.output_model",
                f"output_model must be {workspace}/models/<model id>, got {spec.output_model!r}",
            )
        )
    if not spec.replica_specs:
        out.append(Violation("job.spec.replica_specs", "at least one replica spec is required"))
    allowed = ALLOWED_ROLES.get(spec.kind, set())
    seen: set[int] = set()
    total = 0
    for i, rs in enumerate(spec.replica_specs):
        where = f"job.spec.replica_specs[{i}]"
        if rs.role == Role.ROLE_UNSPECIFIED:
            out.append(Violation(f"{where}.role", "a role is required"))
        elif rs.role not in allowed:
            kind = JobSpec.Kind.Name(spec.kind)
            roles = ", ".join(sorted(ROLE_NAMES[r].upper() for r in allowed))
            out.append(Violation(f"{where}.role", f"a {kind} job has roles {roles}"))
        if rs.role in seen:
            out.append(
                Violation(f"{where}.role", f"role {ROLE_NAMES.get(rs.role, '?').upper()} appears twice")
            )
        seen.add(rs.role)
        if rs.role in (Role.MASTER, Role.CHIEF, Role.LAUNCHER) and rs.count > 1:
            out.append(Violation(f"{where}.count", f"at most one {ROLE_NAMES[rs.role]} replica"))
        if rs.instance_type:  # never silently ignored: the job would run on other resources than asked
            out.append(
                Violation(
                    f"{where}.instance_type",
                    "instance types come from dsw's catalog, which this platform does not run yet; give resources",
                )
            )
        if spec.engine in (JobSpec.LOCAL, JobSpec.RAY) and not rs.command:
            out.append(Violation(f"{where}.command", "a command is required for the LOCAL and RAY engines"))
        total += rs.count
    if total > MAX_REPLICAS:
        out.append(Violation("job.spec.replica_specs", f"at most {MAX_REPLICAS} replicas in all"))
    if spec.engine not in engines:
        name = JobSpec.Engine.Name(spec.engine)
        out.append(Violation("job.spec.engine", f"engine {name} is not configured on this server"))
    for fld in ("checkpoint_uri", "output_uri"):
        try:
            local_path(getattr(spec, fld))
        except ValueError as e:
            out.append(Violation(f"job.spec.{fld}", str(e)))
    for i, ds in enumerate(spec.data_sources):
        where = f"job.spec.data_sources[{i}]"
        field = f"{where}.dataset_version" if ds.dataset_version else f"{where}.uri"
        uri = ds.resolved_uri or ds.uri
        if not uri:
            out.append(Violation(field, "the dataset version was not resolved to a URI"))
            continue
        try:
            local_path(uri)
        except ValueError as e:
            out.append(Violation(field, f"{ds.dataset_version}: {e}" if ds.dataset_version else str(e)))
    if spec.code.uri:
        try:
            code = local_path(spec.code.uri)
        except ValueError as e:
            out.append(Violation("job.spec.code.uri", str(e)))
        else:
            if not code.is_dir():
                out.append(Violation("job.spec.code.uri", f"{code} is not a directory on the dlc server"))
    return out


def normalize(spec: JobSpec, *, default_engine: int, storage_root: pathlib.Path, uid: str) -> JobSpec:
    """A copy of `spec` with every default filled in."""
    out = JobSpec()
    out.CopyFrom(spec)
    if out.kind == JobSpec.KIND_UNSPECIFIED:
        out.kind = JobSpec.PYTORCH
    if out.engine == JobSpec.ENGINE_UNSPECIFIED:
        out.engine = default_engine  # type: ignore[assignment]
    for rs in out.replica_specs:
        if rs.count == 0:
            rs.count = 1
        if rs.processes_per_replica == 0:
            rs.processes_per_replica = 1
        if rs.restart_policy == ReplicaSpec.RESTART_POLICY_UNSPECIFIED:
            rs.restart_policy = ReplicaSpec.ON_FAILURE
    base = storage_root / "jobs" / uid
    if not out.checkpoint_uri:
        out.checkpoint_uri = file_uri(base / "checkpoints")
    if not out.output_uri:
        out.output_uri = file_uri(base / "output")
    return out


def replicas(spec: JobSpec) -> list[Replica]:
    """Every replica of a normalized spec, in rank order (the coordinating role first)."""
    by_role = {rs.role: rs for rs in spec.replica_specs}
    out: list[Replica] = []
    rank = 0
    for role in RANK_ORDER:
        rs = by_role.get(role)
        if rs is None:
            continue
        for index in range(max(1, rs.count)):
            out.append(Replica(role, index, rank, rs))
            rank += 1
    return out
