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

from pai_dlc.model.spec import JobSpec, Replica, local_path


@dataclass(frozen=True, slots=True)
class Cluster:
    """Where the replicas of one attempt listen: the rendezvous address and one port per replica."""

    master_addr: str
    master_port: int
    ports: dict[str, int]  # replica name -> a port of its own (TF_CONFIG)


def hp_key(key: str) -> str:
    return "PAI_HP_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def hyperparameter_args(spec: JobSpec) -> list[str]:
    if spec.omit_hyperparameter_args:
        return []
    return [f"--{k}={spec.hyperparameters[k]}" for k in sorted(spec.hyperparameters)]


def replica_env(
    *,
    job: str,
    uid: str,
    spec: JobSpec,
    replica: Replica,
    everyone: Sequence[Replica],
    cluster: Cluster,
    attempt: int,
    restart_count: int,
) -> dict[str, str]:
    rs = replica.spec
    env: dict[str, str] = dict(rs.env)
    nproc = max(1, rs.processes_per_replica)
    world = sum(max(1, r.spec.processes_per_replica) for r in everyone)
    cpu_milli = rs.resources.cpu_milli
    threads = max(1, cpu_milli // 1000) if cpu_milli else 1
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(threads),
            "PAI_JOB_NAME": job,
            "PAI_JOB_UID": uid,
            "PAI_REPLICA": replica.name,
            "PAI_REPLICA_ROLE": replica.role_name,
            "PAI_REPLICA_INDEX": str(replica.index),
            "PAI_CHECKPOINT_DIR": str(local_path(spec.checkpoint_uri)),
            "PAI_OUTPUT_DIR": str(local_path(spec.output_uri)),
            "PAI_RESTART_COUNT": str(restart_count),
            "PAI_ATTEMPT": str(attempt),
        }
    )
    if spec.code.uri:
        env["PAI_CODE_DIR"] = str(local_path(spec.code.uri))
    for i, ds in enumerate(spec.data_sources):
        uri = ds.resolved_uri or ds.uri
        path = str(local_path(uri)) if uri else ""
        env[ds.env_var or f"PAI_DATA_DIR_{i}"] = path
        if i == 0:
            env["PAI_DATA_DIR"] = path
    for k, v in spec.hyperparameters.items():
        env[hp_key(k)] = v
    if spec.hyperparameters:
        env["PAI_HYPERPARAMETERS"] = json.dumps(dict(sorted(spec.hyperparameters.items())))
    if spec.kind == JobSpec.TENSORFLOW:
        roles: dict[str, list[str]] = {}
        for r in everyone:
            roles.setdefault(r.role_name, []).append(f"{cluster.master_addr}:{cluster.ports[r.name]}")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": roles, "task": {"type": replica.role_name, "index": replica.index}}
        )
    else:
        env.update(
            {
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
        )
    return env
