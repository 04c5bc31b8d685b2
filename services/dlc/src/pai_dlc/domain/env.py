"""The environment every replica gets: torchrun's and Kubeflow's contracts plus the platform's own.

- PyTorch (and CUSTOM, XGBOOST): `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE` (replicas × processes per
  replica), `RANK` (the replica's rank, the node rank when a replica runs several processes),
  `LOCAL_RANK` 0, `LOCAL_WORLD_SIZE`, and for `torchrun` inside a replica `PET_NNODES`,
  `PET_NPROC_PER_NODE`, `PET_NODE_RANK`, `PET_MASTER_ADDR`, `PET_MASTER_PORT`.
- TensorFlow: `TF_CONFIG` with the cluster of every role and this replica's task.
- Always: `PYTHONUNBUFFERED=1`, `OMP_NUM_THREADS` from the CPU request (at least 1), `PAI_JOB_NAME`,
  `PAI_JOB_UID`, `PAI_REPLICA`, `PAI_CHECKPOINT_DIR`, `PAI_OUTPUT_DIR`, `PAI_CODE_DIR`,
  `PAI_RESTART_COUNT`, `PAI_ATTEMPT`, data sources (`PAI_DATA_DIR`, `PAI_DATA_DIR_<i>`) and
  hyperparameters (`PAI_HP_<KEY>`, `PAI_HYPERPARAMETERS`).

The user's `env` comes first; the variables dlc sets win.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pai_dlc.domain.spec import JobSpec, Kind, Replica, local_path


@dataclass(frozen=True, slots=True)
class Cluster:
    """Where the replicas of one attempt listen: the rendezvous address and one port per replica."""

    master_addr: str
    master_port: int
    ports: dict[str, int]  # replica name -> a port of its own (TF_CONFIG)


@dataclass(frozen=True, slots=True)
class Attempt:
    """Which run of which job a replica belongs to."""

    job: str  # the job's name
    uid: str
    number: int  # the attempt: 0 first, one more per gang restart
    restart_count: int


def hp_key(key: str) -> str:
    return "PAI_HP_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def hyperparameter_args(spec: JobSpec) -> list[str]:
    if spec.omit_hyperparameter_args:
        return []
    return [f"--{k}={spec.hyperparameters[k]}" for k in sorted(spec.hyperparameters)]


def replica_env(
    attempt: Attempt, spec: JobSpec, replica: Replica, everyone: Sequence[Replica], cluster: Cluster
) -> dict[str, str]:
    env: dict[str, str] = dict(replica.spec.env)
    env.update(_platform(attempt, spec, replica))
    env.update(_data(spec))
    env.update(_hyperparameters(spec))
    if spec.kind == Kind.TENSORFLOW:
        env["TF_CONFIG"] = _tf_config(replica, everyone, cluster)
    else:
        env.update(_torch(replica, everyone, cluster))
    return env


def _platform(attempt: Attempt, spec: JobSpec, replica: Replica) -> dict[str, str]:
    cpu_milli = replica.spec.resources.cpu_milli
    env = {
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(max(1, cpu_milli // 1000) if cpu_milli else 1),
        "PAI_JOB_NAME": attempt.job,
        "PAI_JOB_UID": attempt.uid,
        "PAI_REPLICA": replica.name,
        "PAI_REPLICA_ROLE": replica.role.label,
        "PAI_REPLICA_INDEX": str(replica.index),
        "PAI_CHECKPOINT_DIR": str(local_path(spec.checkpoint_uri)),
        "PAI_OUTPUT_DIR": str(local_path(spec.output_uri)),
        "PAI_RESTART_COUNT": str(attempt.restart_count),
        "PAI_ATTEMPT": str(attempt.number),
    }
    if spec.code.uri:
        env["PAI_CODE_DIR"] = str(local_path(spec.code.uri))
    return env


def _data(spec: JobSpec) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, ds in enumerate(spec.data_sources):
        uri = ds.resolved_uri or ds.uri
        path = str(local_path(uri)) if uri else ""
        env[ds.env_var or f"PAI_DATA_DIR_{i}"] = path
        if i == 0:
            env["PAI_DATA_DIR"] = path
    return env


def _hyperparameters(spec: JobSpec) -> dict[str, str]:
    env = {hp_key(k): v for k, v in spec.hyperparameters.items()}
    if spec.hyperparameters:
        env["PAI_HYPERPARAMETERS"] = json.dumps(dict(sorted(spec.hyperparameters.items())))
    return env


def _tf_config(replica: Replica, everyone: Sequence[Replica], cluster: Cluster) -> str:
    roles: dict[str, list[str]] = {}
    for r in everyone:
        roles.setdefault(r.role.label, []).append(f"{cluster.master_addr}:{cluster.ports[r.name]}")
    return json.dumps({"cluster": roles, "task": {"type": replica.role.label, "index": replica.index}})


def _torch(replica: Replica, everyone: Sequence[Replica], cluster: Cluster) -> dict[str, str]:
    nproc = max(1, replica.spec.processes_per_replica)
    world = sum(max(1, r.spec.processes_per_replica) for r in everyone)
    return {
        "MASTER_ADDR": cluster.master_addr,
        "MASTER_PORT": str(cluster.master_port),
        "WORLD_SIZE": str(world),
        "RANK": str(replica.rank),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": str(nproc),
        "PET_NNODES": str(len(everyone)),
        "PET_NPROC_PER_NODE": str(nproc),
        "PET_NODE_RANK": str(replica.rank),
        "PET_MASTER_ADDR": cluster.master_addr,
        "PET_MASTER_PORT": str(cluster.master_port),
    }
