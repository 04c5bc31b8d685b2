"""dlc's rendezvous rewrite for a gang placed on a Ray cluster (`RayBackend(..., rendezvous=...)`).

The environment dlc builds (`pai_dlc.domain.env`) names a rendezvous address on dlc's own machine. Once
the Ray backend has placed the gang, it hands this function every replica with its node's IP and a
port free there; this function rewrites, in every replica's environment, `MASTER_ADDR` and
`PET_MASTER_ADDR` to rank 0's node and `MASTER_PORT` and `PET_MASTER_PORT` to the port found there
(each only where dlc set it), and in `TF_CONFIG` the address of every task of the cluster to its
replica's node and port. It rewrites these rendezvous variables; no other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

from pai_runtime.types import ReplicaLaunch

ADDR_VARS = ("MASTER_ADDR", "PET_MASTER_ADDR")
PORT_VARS = ("MASTER_PORT", "PET_MASTER_PORT")
TF_CONFIG = "TF_CONFIG"


def rendezvous(replicas: Sequence[ReplicaLaunch], places: Sequence[tuple[str, int]]) -> list[ReplicaLaunch]:
    """`replicas` with their rendezvous variables pointing at where the gang runs.

    `places[i]` is the IP of the node of `replicas[i]` and a port free there. MASTER_ADDR and
    PET_MASTER_ADDR become the node of the replica of the lowest rank (rank 0), MASTER_PORT and
    PET_MASTER_PORT its port, each only in an environment that has it; in TF_CONFIG, the address of
    each task whose replica is in the gang becomes that replica's node and port.
    """
    if not replicas:
        return []
    master = min(range(len(replicas)), key=lambda i: replicas[i].rank)
    addr, port = places[master]
    tasks: dict[tuple[str, int], str] = {}
    for replica, (ip, p) in zip(replicas, places, strict=True):
        task = _tf_task(replica.env.get(TF_CONFIG))
        if task is not None:
            tasks[task] = f"{ip}:{p}"
    out: list[ReplicaLaunch] = []
    for replica in replicas:
        env = dict(replica.env)
        for var in ADDR_VARS:
            if var in env:
                env[var] = addr
        for var in PORT_VARS:
            if var in env:
                env[var] = str(port)
        if TF_CONFIG in env and tasks:
            env[TF_CONFIG] = _tf_rewrite(env[TF_CONFIG], tasks)
        out.append(dataclasses.replace(replica, env=env))
    return out


def _tf_task(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    try:
        task = json.loads(text)["task"]
        kind, index = task["type"], task["index"]
    except (ValueError, TypeError, KeyError):
        return None
    return (kind, index) if isinstance(kind, str) and type(index) is int else None


def _tf_rewrite(text: str, tasks: Mapping[tuple[str, int], str]) -> str:
    try:
        doc = json.loads(text)
        cluster = doc["cluster"]
        for kind, addresses in cluster.items():
            if isinstance(addresses, list):
                cluster[kind] = [tasks.get((kind, i), a) for i, a in enumerate(addresses)]
    except (ValueError, TypeError, KeyError, AttributeError):
        return text  # not dlc's shape: leave it as the user wrote it
    return json.dumps(doc)
