"""A job's spec: what runs, the defaults the server stores, and the replicas it expands to.

The stored spec always says exactly what runs: `normalize` fills every default at create (kind,
engine, counts, restart policies, checkpoint and output URIs), so a job never changes meaning when a
server default changes later. Specs are values (frozen); a changed spec is a new one.

Enum numbers are the API's, so `mapping` converts by number and the store keeps them as they were.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse


class Kind(enum.IntEnum):
    KIND_UNSPECIFIED = 0
    PYTORCH = 1
    TENSORFLOW = 2
    MPI = 3
    XGBOOST = 4
    CUSTOM = 5


class Engine(enum.IntEnum):
    ENGINE_UNSPECIFIED = 0
    LOCAL = 1
    RAY = 2
    KUBERNETES = 3


class Role(enum.IntEnum):
    ROLE_UNSPECIFIED = 0
    MASTER = 1
    WORKER = 2
    PS = 3
    CHIEF = 4
    EVALUATOR = 5
    LAUNCHER = 6

    @property
    def label(self) -> str:
        """`worker`: how replica names spell the role."""
        return self.name.lower()


class RestartPolicy(enum.IntEnum):
    RESTART_POLICY_UNSPECIFIED = 0
    NEVER = 1
    ON_FAILURE = 2
    ALWAYS = 3
    EXIT_CODE = 4


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_milli: int = 0
    memory_bytes: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0
    allowed_gpu_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    role: Role = Role.ROLE_UNSPECIFIED
    count: int = 0
    resources: Resources = field(default_factory=Resources)
    instance_type: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    image: str = ""
    processes_per_replica: int = 0
    restart_policy: RestartPolicy = RestartPolicy.RESTART_POLICY_UNSPECIFIED


@dataclass(frozen=True, slots=True)
class DataSource:
    """A dataset version (resolved by lineage to `resolved_uri` at create) or a plain URI."""

    dataset_version: str = ""
    uri: str = ""
    mount_path: str = ""
    env_var: str = ""
    resolved_uri: str = ""


@dataclass(frozen=True, slots=True)
class CodeSource:
    uri: str = ""
    mount_path: str = ""


@dataclass(frozen=True, slots=True)
class JobSpec:
    kind: Kind = Kind.KIND_UNSPECIFIED
    engine: Engine = Engine.ENGINE_UNSPECIFIED
    replica_specs: tuple[ReplicaSpec, ...] = ()
    data_sources: tuple[DataSource, ...] = ()
    code: CodeSource = field(default_factory=CodeSource)
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    omit_hyperparameter_args: bool = False
    priority: int = 0
    spot: bool = False
    max_restarts: int = 0
    active_deadline: dt.timedelta | None = None
    log_silence_timeout: dt.timedelta | None = None
    pending_timeout: dt.timedelta | None = None
    checkpoint_uri: str = ""
    output_uri: str = ""
    output_model: str = ""
    resource_group: str = ""
    quota: str = ""


# the order ranks are given in: the coordinating role first
RANK_ORDER = (Role.MASTER, Role.CHIEF, Role.LAUNCHER, Role.WORKER, Role.PS, Role.EVALUATOR)
COORDINATORS = frozenset({Role.MASTER, Role.CHIEF, Role.LAUNCHER})  # at most one replica each
MAX_REPLICAS = 1024


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica of a job: `worker-1` is the second worker."""

    role: Role
    index: int
    rank: int
    spec: ReplicaSpec

    @property
    def name(self) -> str:
        return f"{self.role.label}-{self.index}"


def local_path(uri: str) -> pathlib.Path:
    """The local path of a `file://` URI (or a bare absolute path)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return pathlib.Path(unquote(parsed.path))
    raise ValueError(f"only file:// URIs are supported here, got {uri!r}")


def file_uri(path: pathlib.Path) -> str:
    return path.resolve().as_uri()


def normalize(spec: JobSpec, *, default_engine: Engine, storage_root: pathlib.Path, uid: str) -> JobSpec:
    """`spec` with every default filled in."""
    base = storage_root / "jobs" / uid
    return dataclasses.replace(
        spec,
        kind=spec.kind or Kind.PYTORCH,
        engine=spec.engine or default_engine,
        replica_specs=tuple(
            dataclasses.replace(
                rs,
                count=rs.count or 1,
                processes_per_replica=rs.processes_per_replica or 1,
                restart_policy=rs.restart_policy or RestartPolicy.ON_FAILURE,
            )
            for rs in spec.replica_specs
        ),
        checkpoint_uri=spec.checkpoint_uri or file_uri(base / "checkpoints"),
        output_uri=spec.output_uri or file_uri(base / "output"),
    )


def replicas(spec: JobSpec) -> list[Replica]:
    """Every replica of a normalized spec, in rank order (the coordinating role first)."""
    by_role = {rs.role: rs for rs in spec.replica_specs}
    out: list[Replica] = []
    for role in RANK_ORDER:
        rs = by_role.get(role)
        for index in range(max(1, rs.count) if rs is not None else 0):
            out.append(Replica(role, index, len(out), rs))  # type: ignore[arg-type]
    return out


def with_resolved_data(spec: JobSpec, resolved: Mapping[int, tuple[str, str]]) -> JobSpec:
    """`spec` with data source i naming dataset version `resolved[i][0]` at URI `resolved[i][1]`; a
    source given by URI resolves to itself."""
    sources = []
    for i, ds in enumerate(spec.data_sources):
        if i in resolved:
            name, uri = resolved[i]
            sources.append(dataclasses.replace(ds, dataset_version=name, resolved_uri=uri))
        elif not ds.dataset_version:
            sources.append(dataclasses.replace(ds, resolved_uri=ds.uri))
        else:
            sources.append(ds)
    return dataclasses.replace(spec, data_sources=tuple(sources))


def for_trial(template: JobSpec, trial_id: str, assignment: Mapping[str, str]) -> JobSpec:
    """A sweep trial's spec: the template with the trial's hyperparameters, and checkpoint and output
    directories of its own under the template's (trials never share them)."""

    def own(uri: str) -> str:
        return uri.rstrip("/") + f"/{trial_id}" if uri else ""

    return dataclasses.replace(
        template,
        hyperparameters={**template.hyperparameters, **assignment},
        checkpoint_uri=own(template.checkpoint_uri),
        output_uri=own(template.output_uri),
    )
