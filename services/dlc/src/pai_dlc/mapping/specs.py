"""`pai.dlc.v1.JobSpec` ⇄ the domain's `JobSpec` (enums by number: the API's numbers are the domain's)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import duration_pb2

from pai.dlc.v1 import job_spec_pb2 as pb
from pai_dlc.domain import spec as d


def _duration(m: duration_pb2.Duration, present: bool) -> dt.timedelta | None:
    return m.ToTimedelta() if present else None


def _to_duration(value: dt.timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(value)
    return out


def resources_from(m: pb.Resources) -> d.Resources:
    return d.Resources(m.cpu_milli, m.memory_bytes, m.gpu_count, m.gpu_milli, tuple(m.allowed_gpu_models))


def replica_spec_from(m: pb.ReplicaSpec) -> d.ReplicaSpec:
    return d.ReplicaSpec(
        role=d.Role(m.role),
        count=m.count,
        resources=resources_from(m.resources),
        instance_type=m.instance_type,
        command=tuple(m.command),
        args=tuple(m.args),
        env=dict(m.env),
        image=m.image,
        processes_per_replica=m.processes_per_replica,
        restart_policy=d.RestartPolicy(m.restart_policy),
    )


def spec_from(m: pb.JobSpec) -> d.JobSpec:
    return d.JobSpec(
        kind=d.Kind(m.kind),
        engine=d.Engine(m.engine),
        replica_specs=tuple(replica_spec_from(r) for r in m.replica_specs),
        data_sources=tuple(
            d.DataSource(ds.dataset_version, ds.uri, ds.mount_path, ds.env_var, ds.resolved_uri)
            for ds in m.data_sources
        ),
        code=d.CodeSource(m.code.uri, m.code.mount_path),
        hyperparameters=dict(m.hyperparameters),
        omit_hyperparameter_args=m.omit_hyperparameter_args,
        priority=m.priority,
        spot=m.spot,
        max_restarts=m.max_restarts,
        active_deadline=_duration(m.active_deadline, m.HasField("active_deadline")),
        log_silence_timeout=_duration(m.log_silence_timeout, m.HasField("log_silence_timeout")),
        pending_timeout=_duration(m.pending_timeout, m.HasField("pending_timeout")),
        checkpoint_uri=m.checkpoint_uri,
        output_uri=m.output_uri,
        output_model=m.output_model,
        resource_group=m.resource_group,
        quota=m.quota,
    )


def replica_spec_to(s: d.ReplicaSpec) -> pb.ReplicaSpec:
    r = s.resources
    return pb.ReplicaSpec(
        role=int(s.role),  # type: ignore[arg-type]
        count=s.count,
        resources=pb.Resources(
            cpu_milli=r.cpu_milli, memory_bytes=r.memory_bytes, gpu_count=r.gpu_count, gpu_milli=r.gpu_milli,
            allowed_gpu_models=list(r.allowed_gpu_models),
        ),
        instance_type=s.instance_type, command=list(s.command), args=list(s.args), env=dict(s.env),
        image=s.image, processes_per_replica=s.processes_per_replica,
        restart_policy=int(s.restart_policy),  # type: ignore[arg-type]
    )  # fmt: skip


def spec_to(s: d.JobSpec) -> pb.JobSpec:
    out = pb.JobSpec(
        kind=int(s.kind),  # type: ignore[arg-type]
        engine=int(s.engine),  # type: ignore[arg-type]
        replica_specs=[replica_spec_to(r) for r in s.replica_specs],
        hyperparameters=dict(s.hyperparameters),
        omit_hyperparameter_args=s.omit_hyperparameter_args,
        priority=s.priority, spot=s.spot, max_restarts=s.max_restarts,
        active_deadline=_to_duration(s.active_deadline),
        log_silence_timeout=_to_duration(s.log_silence_timeout),
        pending_timeout=_to_duration(s.pending_timeout),
        checkpoint_uri=s.checkpoint_uri, output_uri=s.output_uri, output_model=s.output_model,
        resource_group=s.resource_group, quota=s.quota,
    )  # fmt: skip
    for ds in s.data_sources:
        m = out.data_sources.add(mount_path=ds.mount_path, env_var=ds.env_var, resolved_uri=ds.resolved_uri)
        if ds.dataset_version:
            m.dataset_version = ds.dataset_version
        else:
            m.uri = ds.uri
    if s.code.uri or s.code.mount_path:
        out.code.uri, out.code.mount_path = s.code.uri, s.code.mount_path
    return out
