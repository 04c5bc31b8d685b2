"""The kubernetes engine: each attempt of a job is one Kubeflow PyTorchJob (training-operator v1).

`pytorchjob_manifest` turns an attempt (and the job's spec) into a `kubeflow.org/v1` PyTorchJob;
`KubernetesEngine` creates it with the official `kubernetes` client, watches its pods, and deletes it.

What is tested, and what is not. No API server can run where dlc's tests run, so the manifests are
tested and the API calls are not: the unit tests validate every manifest they build against the
PyTorchJob CRD's own OpenAPI v3 schema (vendored in `schemas/`, training-operator v1.9 line), the
pod template of each replica type against the Kubernetes core Pod schema (`kubernetes-validate`),
and the rules of the operator's admission webhook. `replica_exits`, which turns the job and its pods
(as the API server returns them) into `ReplicaExit`s, is a pure function tested on pod documents
written by hand (also passed through the client's models). The calls `KubernetesEngine` makes
(create, get, list, delete) have never run against a cluster: one test makes them with no server
listening, which shows only that the client takes their arguments, builds the expected URLs, and
that failures surface as `EngineError`. Nothing fakes a server.

The manifest:

- One replica type per dlc role: MASTER → `Master` (exactly 1), WORKER → `Worker`, each a pod
  template with one container named `pytorch` (the operator requires it) that exposes the port
  `pytorchjob-port` (23456): the operator builds the rendezvous address from it and a headless
  Service per replica. PYTORCH and CUSTOM jobs become PyTorchJobs; other kinds are refused.
- The environment is dlc's (`pai_dlc.model.env`), with the paths of the code and data sources
  replaced by their mount paths, minus what the training operator sets in every pod of a job with a
  Master (training-operator v1.9, `pkg/controller.v1/pytorch/envvar.go` and `master.go`):
  `MASTER_ADDR`, `MASTER_PORT`, `PET_MASTER_ADDR`, `PET_MASTER_PORT` (the Service of master-0 and
  its port), `WORLD_SIZE` (replicas × nprocPerNode), `RANK` (0 for the master, index + 1 for a
  worker), `PET_NODE_RANK`, `PET_NPROC_PER_NODE`, and in every pod `PET_NNODES` and
  `PYTHONUNBUFFERED` (the operator's "0": Python only checks that it is non-empty). Without a Master
  the operator sets only the last two, so the worker template sets the others itself: the master is
  worker-0's Service (`<job>-worker-0`, port 23456) and the rank is the pod's
  `training.kubeflow.org/replica-index` label, read through the downward API.
- A template is shared by every replica of its type, so the variables that differ between replicas
  come from the pod: `PAI_REPLICA_INDEX` is the replica-index label and `PAI_REPLICA` is
  `<role>-$(PAI_REPLICA_INDEX)`. Literal values (environment, command, args) have every `$` doubled,
  so that Kubernetes' `$(VAR)` expansion leaves them exactly as dlc wrote them.
- `TORCHELASTIC_ERROR_FILE` is `/dev/termination-log` (unless the job sets its own) and the
  termination message policy is FallbackToLogsOnError, so a failed replica's error, or the last lines
  of its log, reach the pod's status, where `replica_exits` reads them.
- Resources: CPU as millicores, memory in bytes, whole GPUs as `nvidia.com/gpu`, requests equal to
  limits. A share of a GPU (`gpu_milli` other than 0 or 1000) has no plain-Kubernetes form and is
  refused. `allowed_gpu_models` becomes a node affinity on `gpu_model_label`, and is refused when
  that label is not configured.
- Storage: the code is mounted at `code.mount_path` (default `/workspace/code`) and is the working
  directory; data source i at its `mount_path` (default `/mnt/data/<i>`); the checkpoint and output
  directories at their own local paths, so `PAI_CHECKPOINT_DIR` and `PAI_OUTPUT_DIR` stay valid.
  Each comes from a hostPath of dlc's local path (which only works where every node sees the same
  file system, such as a single-node cluster), or, when `storage_pvc` is configured, from that one
  PersistentVolumeClaim with a subPath relative to `storage_root` (dlc's storage root, which the
  claim holds).
- `runPolicy`: `backoffLimit` 0 and every replica type's `restartPolicy` Never: dlc is the only one
  that restarts, and it restarts the whole gang from the newest checkpoint by the replica group's own
  restart policy, as with every engine (the operator's per-pod restarts would restart single pods
  inside an attempt and count restarts twice). `activeDeadlineSeconds` from `active_deadline` (per
  attempt here; dlc still enforces the job-wide deadline), `cleanPodPolicy` None by default so that
  dlc reads every pod's end (dlc deletes the job itself).
- Name: `pai-<job id>-<hash>-a<attempt>`, a DNS-1035 label (the operator's webhook requires one) of at
  most 51 characters, so that `<name>-worker-<index>` (pod host names and Services) stays within 63.

Handles: `engine_ref` is `<namespace>/<name>` of the PyTorchJob; pid and pgid are 0 and the log,
exit and error paths are "" (this engine has no files: logs live in the API server, which dlc's log
reader does not read yet). `launch` returns once the PyTorchJob exists, not once its pods run.
`poll` never waits on the API server: it answers from the latest snapshot of each job and, when that
is older than `poll_interval`, starts a refresh in a thread (`asyncio.to_thread`). `kill` deletes the
PyTorchJob with propagation Foreground and its pods with the grace period asked for, then waits until
the job is gone. The `kubernetes` package is imported on first use, so dlc runs without it.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import hashlib
import importlib
import json
import math
import os
import posixpath
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pai_dlc.engine.base import (
    AttemptLaunch,
    EngineError,
    EngineInfo,
    ReplicaExit,
    ReplicaHandle,
    ReplicaLaunch,
)
from pai_dlc.model.spec import ROLE_NAMES, JobSpec, ReplicaSpec, Role, local_path

GROUP = "kubeflow.org"
VERSION = "v1"
PLURAL = "pytorchjobs"
KIND = "PyTorchJob"

CONTAINER_NAME = "pytorch"  # the operator looks for the container of this name
PORT_NAME = "pytorchjob-port"  # ... and for this port on it
PORT = 23456  # the operator's default

LABEL_JOB_UID = "pai.dev/job-uid"
LABEL_ATTEMPT = "pai.dev/attempt"
LABEL_ROLE = "pai.dev/replica-role"
ANNOTATION_JOB = "pai.dev/job"
# Set by the training operator on every pod of a job.
OPERATOR_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
OPERATOR_TYPE_LABEL = "training.kubeflow.org/replica-type"
OPERATOR_INDEX_LABEL = "training.kubeflow.org/replica-index"

GPU_RESOURCE = "nvidia.com/gpu"
ERROR_FILE_VAR = "TORCHELASTIC_ERROR_FILE"
TERMINATION_LOG = "/dev/termination-log"
DEFAULT_CODE_MOUNT = "/workspace/code"
DEFAULT_DATA_MOUNT = "/mnt/data"

MAX_NAME = 51  # 63 (a Service name) - len("-worker-1023")

# What the training operator sets in the pods of a job, so the templates must not set it too.
OPERATOR_ENV_ALWAYS = frozenset({"PET_NNODES", "PYTHONUNBUFFERED"})
OPERATOR_ENV_WITH_MASTER = OPERATOR_ENV_ALWAYS | {
    "MASTER_ADDR",
    "MASTER_PORT",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "PET_NODE_RANK",
    "PET_NPROC_PER_NODE",
}
# dlc's variables that differ between the replicas of a role; the pod provides them.
PER_REPLICA_ENV = frozenset({"PAI_REPLICA", "PAI_REPLICA_INDEX", "RANK", "PET_NODE_RANK"})

REPLICA_TYPES: dict[int, str] = {Role.MASTER: "Master", Role.WORKER: "Worker"}
CLEAN_POD_POLICIES = ("None", "Running", "All")

# Waiting reasons of a container that will not start without a change to the job.
CANNOT_START = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "ImagePullBackOff"}
)

POLL_INTERVAL = 2.0  # seconds between two looks at one job
REQUEST_TIMEOUT = 30.0  # seconds for one request to the API server
KILL_TIMEOUT = 120.0  # seconds, after the grace period, for the job and its pods to be gone
_KILL_TICK = 0.5

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def job_name(attempt: AttemptLaunch) -> str:
    """The PyTorchJob's name: `pai-<job id>-<hash of the job's name and uid>-a<attempt>`.

    Deterministic, a DNS-1035 label, at most MAX_NAME characters; the hash keeps jobs with the same
    id (in two workspaces, or deleted and created again) apart, the attempt keeps attempts apart.
    """
    digest = hashlib.sha256(f"{attempt.job}\n{attempt.uid}".encode()).hexdigest()[:8]
    suffix = f"-{digest}-a{attempt.attempt}"
    job_id = attempt.job.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", job_id.lower()).strip("-")
    room = MAX_NAME - len("pai") - len(suffix) - 1
    slug = slug[: max(room, 0)].rstrip("-")
    name = f"pai-{slug}{suffix}" if slug else f"pai{suffix}"
    if len(name) > MAX_NAME or not _DNS_LABEL.match(name):  # only for an absurd attempt number
        raise EngineError(f"{attempt.job}: attempt {attempt.attempt} makes a name longer than {MAX_NAME}")
    return name


def pytorchjob_manifest(
    attempt: AttemptLaunch,
    spec: JobSpec,
    *,
    namespace: str,
    default_image: str,
    storage_pvc: str = "",
    storage_root: str = "",
    gpu_model_label: str = "",
    clean_pod_policy: str = "None",
) -> dict[str, Any]:
    """The PyTorchJob that runs `attempt` of a job with `spec` (see the module's docstring).

    Raises `EngineError` for what a PyTorchJob cannot express: another kind than PYTORCH or CUSTOM,
    roles other than MASTER and WORKER, a share of a GPU, replicas with different processes per
    replica, no image, a path outside `storage_root` when `storage_pvc` is set.
    """
    where = f"{attempt.job} attempt {attempt.attempt}"
    if spec.kind not in (JobSpec.KIND_UNSPECIFIED, JobSpec.PYTORCH, JobSpec.CUSTOM):
        kind = JobSpec.Kind.Name(spec.kind)
        raise EngineError(
            f"{where}: {kind} jobs are not supported by the kubernetes engine yet "
            "(it runs PYTORCH and CUSTOM jobs as Kubeflow PyTorchJobs)"
        )
    if clean_pod_policy not in CLEAN_POD_POLICIES:
        raise EngineError(
            f"cleanPodPolicy must be one of {', '.join(CLEAN_POD_POLICIES)}, not {clean_pod_policy!r}"
        )
    if storage_pvc and not storage_root:
        raise EngineError(
            "the kubernetes engine needs storage_root (the directory the claim holds) with storage_pvc"
        )
    by_role: dict[int, ReplicaSpec] = {}
    for rs in spec.replica_specs:
        if rs.role not in REPLICA_TYPES:
            role = ReplicaSpec.Role.Name(rs.role)
            raise EngineError(f"{where}: a PyTorchJob has MASTER and WORKER replicas, not {role}")
        by_role[rs.role] = rs
    if not by_role:
        raise EngineError(f"{where}: a PyTorchJob needs a MASTER or WORKER replica")
    master = by_role.get(Role.MASTER)
    if master is not None and max(1, master.count) != 1:
        raise EngineError(f"{where}: a PyTorchJob has exactly one MASTER replica")
    nprocs = {max(1, rs.processes_per_replica) for rs in by_role.values()}
    if len(nprocs) > 1:
        raise EngineError(
            f"{where}: a PyTorchJob runs the same number of processes in every replica (nprocPerNode), "
            f"but this job asks for {sorted(nprocs)}"
        )
    nproc = nprocs.pop()
    name = job_name(attempt)
    uid = attempt.uid
    if len(uid) > 63 or not _LABEL_VALUE.match(uid):
        raise EngineError(f"{where}: the job uid {uid!r} cannot be a label value")
    labels = {LABEL_JOB_UID: uid, LABEL_ATTEMPT: str(attempt.attempt)}
    mounts = _Mounts(spec, storage_pvc=storage_pvc, storage_root=storage_root, where=where)
    launches = _launches_by_role(attempt)
    replica_specs: dict[str, Any] = {}
    for role_id, rs in sorted(by_role.items()):
        role_name = ROLE_NAMES[role_id]
        mine = launches.get(role_name, [])
        if not mine:
            raise EngineError(f"{where}: the attempt has no {role_name} replica to launch")
        if len({r.command for r in mine}) > 1:
            raise EngineError(f"{where}: the {role_name} replicas run different commands, a PyTorchJob one")
        env = _template_env(
            where,
            role_name,
            mine,
            has_master=master is not None,
            name=name,
            world=sum(max(1, r.count) for r in by_role.values()) * nproc,
            nproc=nproc,
            overrides=mounts.env,
        )
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": rs.image or default_image,
            **_argv(rs, mine[0]),
            "env": env,
            "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
        resources = _resources(where, rs)
        if resources:
            container["resources"] = resources
        if not container["image"]:
            raise EngineError(
                f"{where}: {role_name} has no image and the kubernetes engine has no default image"
            )
        if mounts.mounts:
            container["volumeMounts"] = mounts.mounts
        if mounts.workdir:
            container["workingDir"] = mounts.workdir
        pod_spec: dict[str, Any] = {"containers": [container]}
        if mounts.volumes:
            pod_spec["volumes"] = mounts.volumes
        affinity = _gpu_affinity(where, rs, gpu_model_label)
        if affinity:
            pod_spec["affinity"] = affinity
        replica_specs[REPLICA_TYPES[role_id]] = {
            "replicas": max(1, rs.count),
            "restartPolicy": "Never",  # dlc restarts the gang (see the module docstring)
            "template": {"metadata": {"labels": {**labels, LABEL_ROLE: role_name}}, "spec": pod_spec},
        }
    run_policy: dict[str, Any] = {"backoffLimit": 0, "cleanPodPolicy": clean_pod_policy}
    if spec.HasField("active_deadline"):
        seconds = spec.active_deadline.ToTimedelta().total_seconds()
        run_policy["activeDeadlineSeconds"] = max(1, math.ceil(seconds))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_JOB: attempt.job},
        },
        "spec": {"nprocPerNode": str(nproc), "runPolicy": run_policy, "pytorchReplicaSpecs": replica_specs},
    }


def _launches_by_role(attempt: AttemptLaunch) -> dict[str, list[ReplicaLaunch]]:
    out: dict[str, list[ReplicaLaunch]] = {}
    for launch in attempt.replicas:
        role, _, index = launch.replica.rpartition("-")
        if role not in ROLE_NAMES.values() or not index.isdigit():
            raise EngineError(f"{attempt.job}: {launch.replica!r} is not a replica name like worker-0")
        out.setdefault(role, []).append(launch)
    for launches in out.values():
        launches.sort(key=lambda r: int(r.replica.rpartition("-")[2]))
    return out


def _escape(value: str) -> str:
    """A value Kubernetes' `$(VAR)` expansion leaves as it is (`$$` becomes `$`)."""
    return value.replace("$", "$$")


def _label_ref(name: str, label: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}}


def _template_env(
    where: str,
    role: str,
    launches: Sequence[ReplicaLaunch],
    *,
    has_master: bool,
    name: str,
    world: int,
    nproc: int,
    overrides: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The env of a role's pod template: what every replica of the role shares, then the pod's own."""
    managed = OPERATOR_ENV_WITH_MASTER if has_master else OPERATOR_ENV_ALWAYS
    shared: dict[str, str] | None = None
    for launch in launches:
        env = {k: v for k, v in launch.env.items() if k not in managed and k not in PER_REPLICA_ENV}
        if shared is None:
            shared = env
        elif env != shared:
            differ = sorted(k for k in env.keys() | shared.keys() if env.get(k) != shared.get(k))
            raise EngineError(
                f"{where}: the {role} replicas have different environments ({', '.join(differ)}), "
                "but a PyTorchJob gives every replica of a role the same"
            )
    values = dict(shared or {})
    values.update(overrides)
    values.setdefault(ERROR_FILE_VAR, TERMINATION_LOG)
    if not has_master:  # the rendezvous the operator only sets up around a Master
        master = f"{name}-worker-0"
        values.update(
            {
                "MASTER_ADDR": master,
                "MASTER_PORT": str(PORT),
                "PET_MASTER_ADDR": master,
                "PET_MASTER_PORT": str(PORT),
                "WORLD_SIZE": str(world),
                "PET_NPROC_PER_NODE": str(nproc),
            }
        )
    out: list[dict[str, Any]] = [{"name": k, "value": _escape(values[k])} for k in sorted(values)]
    out.append(_label_ref("PAI_REPLICA_INDEX", OPERATOR_INDEX_LABEL))
    if not has_master:
        out.append(_label_ref("RANK", OPERATOR_INDEX_LABEL))
        out.append(_label_ref("PET_NODE_RANK", OPERATOR_INDEX_LABEL))
    # Defined after PAI_REPLICA_INDEX, so that Kubernetes expands the reference.
    out.append({"name": "PAI_REPLICA", "value": f"{role}-$(PAI_REPLICA_INDEX)"})
    return out


def _argv(rs: ReplicaSpec, launch: ReplicaLaunch) -> dict[str, list[str]]:
    """`command` and `args` from the launch's argv: without a command in the spec, the argv is the
    args of the image's entrypoint."""
    argv = [_escape(a) for a in launch.command]
    n = len(rs.command)
    out: dict[str, list[str]] = {}
    if n:
        out["command"] = argv[:n]
    if argv[n:]:
        out["args"] = argv[n:]
    return out


def _resources(where: str, rs: ReplicaSpec) -> dict[str, Any]:
    r = rs.resources
    amounts: dict[str, str] = {}
    if r.cpu_milli:
        amounts["cpu"] = f"{r.cpu_milli}m"
    if r.memory_bytes:
        amounts["memory"] = str(r.memory_bytes)
    gpus = r.gpu_count
    if r.gpu_milli:
        if r.gpu_milli % 1000:
            raise EngineError(
                f"{where}: {ROLE_NAMES[rs.role]} asks for {r.gpu_milli} milli-GPUs, a share of a GPU, which "
                f"plain Kubernetes cannot express ({GPU_RESOURCE} counts whole devices); ask for gpu_count"
            )
        gpus += r.gpu_milli // 1000
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _gpu_affinity(where: str, rs: ReplicaSpec, label: str) -> dict[str, Any]:
    models = list(rs.resources.allowed_gpu_models)
    if not models:
        return {}
    if not label:
        raise EngineError(
            f"{where}: {ROLE_NAMES[rs.role]} is limited to GPU models {', '.join(models)}, but the kubernetes "
            "engine has no gpu_model_label to select nodes by"
        )
    term = {"matchExpressions": [{"key": label, "operator": "In", "values": models}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


@dataclass
class _Mounts:
    """The job's directories as volumes, their mounts, and the variables that name them in a pod."""

    spec: JobSpec
    storage_pvc: str
    storage_root: str
    where: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""

    def __post_init__(self) -> None:
        spec = self.spec
        if spec.code.uri:
            self.workdir = spec.code.mount_path or DEFAULT_CODE_MOUNT
            self._add("code", self._path(spec.code.uri), self.workdir, "Directory")
            self.env["PAI_CODE_DIR"] = self.workdir
        for i, ds in enumerate(spec.data_sources):
            uri = ds.resolved_uri or ds.uri
            if not uri:
                continue
            target = ds.mount_path or f"{DEFAULT_DATA_MOUNT}/{i}"
            self._add(f"data-{i}", self._path(uri), target, "")
            self.env[ds.env_var or f"PAI_DATA_DIR_{i}"] = target
            if i == 0:
                self.env["PAI_DATA_DIR"] = target
        for volume, uri in (("checkpoints", spec.checkpoint_uri), ("output", spec.output_uri)):
            if uri:
                path = self._path(uri)
                self._add(volume, path, path, "DirectoryOrCreate")
        targets = [m["mountPath"] for m in self.mounts]
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise EngineError(f"{self.where}: two directories would be mounted at {', '.join(twice)}")

    def _path(self, uri: str) -> str:
        try:
            return posixpath.normpath(str(local_path(uri)))
        except ValueError as e:
            raise EngineError(f"{self.where}: {e}") from e

    def _add(self, volume: str, path: str, target: str, host_type: str) -> None:
        mount: dict[str, Any] = {"name": volume, "mountPath": target}
        if self.storage_pvc:
            root = posixpath.normpath(self.storage_root)
            sub = posixpath.relpath(path, root)
            if sub == ".." or sub.startswith("../") or not posixpath.isabs(path):
                raise EngineError(
                    f"{self.where}: {path} is not under {root}, the storage root that the claim "
                    f"{self.storage_pvc} holds"
                )
            if not self.volumes:
                claim = {"claimName": self.storage_pvc}
                self.volumes.append({"name": "storage", "persistentVolumeClaim": claim})
            mount["name"] = "storage"
            if sub != ".":
                mount["subPath"] = sub
        else:
            host: dict[str, Any] = {"path": path}
            if host_type:
                host["type"] = host_type
            self.volumes.append({"name": volume, "hostPath": host})
        self.mounts.append(mount)


# Watching: from the job and its pods, as the API server returns them, to ReplicaExits.


def replica_exits(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    replicas: Sequence[str],
    *,
    deleted: bool = False,
) -> list[ReplicaExit]:
    """The replicas among `replicas` ("worker-0", ...) that have ended, judged from the PyTorchJob
    (None once it is gone) and its pods (JSON documents, as the API server returns them).

    A replica ends when its pod ends (Succeeded, or Failed: the `pytorch` container's exit code and
    termination message), or when its container cannot start (an invalid image, an image that cannot
    be pulled, a bad container configuration). A replica without an ended pod ends with the job:
    lost when the job failed or is gone (with the job's message), successful when the job succeeded
    and its pod was cleaned up, killed when dlc deleted the job (`deleted`).
    """
    by_replica: dict[str, Mapping[str, Any]] = {}
    for doc in pods:
        name = _pod_replica(doc)
        if name is not None:
            by_replica[name] = doc
    finished = _finished(job)
    out: list[ReplicaExit] = []
    for replica in replicas:
        pod = by_replica.get(replica)
        ended = _pod_exit(replica, pod) if pod is not None else None
        if ended is None:
            if deleted:
                ended = ReplicaExit(
                    replica,
                    None,
                    int(signal.SIGTERM),
                    "killed: dlc deleted the PyTorchJob (SIGTERM, SIGKILL after the grace period)",
                )
            elif job is None:
                ended = ReplicaExit(replica, None, message="the PyTorchJob is gone", lost=True)
            elif finished is not None:
                state, message = finished
                if state == "Succeeded" and pod is None:
                    ended = ReplicaExit(replica, 0, message=f"the PyTorchJob succeeded: {message}")
                elif state == "Failed":
                    ended = ReplicaExit(replica, None, message=f"the PyTorchJob failed: {message}", lost=True)
        if ended is not None:
            out.append(ended)
    return out


def _pod_replica(pod: Mapping[str, Any]) -> str | None:
    labels = pod.get("metadata", {}).get("labels") or {}
    rtype, index = labels.get(OPERATOR_TYPE_LABEL), labels.get(OPERATOR_INDEX_LABEL)
    if not isinstance(rtype, str) or not isinstance(index, str) or not index.isdigit():
        return None
    return f"{rtype.lower()}-{int(index)}"


def _finished(job: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """("Succeeded" | "Failed", message) once the job has that condition."""
    if job is None:
        return None
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Succeeded", "Failed"):
            return str(cond["type"]), str(cond.get("message") or cond.get("reason") or "")
    return None


def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            return dict(status)
    return {}


def _pod_exit(replica: str, pod: Mapping[str, Any]) -> ReplicaExit | None:
    phase = pod.get("status", {}).get("phase")
    status = _container_status(pod)
    state = status.get("state") or {}
    if phase not in ("Succeeded", "Failed"):
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in CANNOT_START:
            message = f"cannot start: {waiting['reason']}" + (
                f": {waiting['message']}" if waiting.get("message") else ""
            )
            return ReplicaExit(
                replica, None, message=_first_line(message), details=str(waiting.get("message") or "")
            )
        return None
    terminated = state.get("terminated") or (status.get("lastState") or {}).get("terminated") or {}
    if not terminated:
        reason = pod.get("status", {}).get("reason") or phase
        message = pod.get("status", {}).get("message") or ""
        exit_code = 0 if phase == "Succeeded" else None
        text = f"pod {phase.lower()}: {reason}" + (f": {message}" if message else "")
        return ReplicaExit(replica, exit_code, message=_first_line(text), lost=exit_code is None)
    code = terminated.get("exitCode")
    exit_code = code if isinstance(code, int) else (0 if phase == "Succeeded" else None)
    sig = terminated.get("signal")
    sig = sig if isinstance(sig, int) else 0
    when = _time_ns(terminated.get("finishedAt"))
    if exit_code == 0:
        return ReplicaExit(replica, 0, message="exit code 0", time_ns=when)
    head = f"exit code {exit_code}" if exit_code is not None else f"killed by signal {sig}"
    reason = terminated.get("reason")
    if reason and reason not in ("Error", "Completed"):
        head += f" ({reason})"
    text = str(terminated.get("message") or "")
    summary, details = _termination_message(text)
    message = f"{head}: {summary}" if summary else head
    return ReplicaExit(replica, exit_code, sig, _first_line(message), details, time_ns=when)


def _termination_message(text: str) -> tuple[str, str]:
    """(one line, details) from a termination message: a torchelastic error file or the log's tail."""
    try:
        doc = json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        return (lines[-1] if lines else ""), text
    message = doc.get("message") if isinstance(doc, dict) else None
    if isinstance(message, str):
        return message, ""
    if isinstance(message, dict) and isinstance(message.get("message"), str):
        extra = message.get("extraInfo")
        stack = extra.get("py_callstack") if isinstance(extra, dict) else None
        return message["message"], stack if isinstance(stack, str) else ""
    return "", text


def _time_ns(value: Any) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time ("...Z" from the API server, "+00:00" from the
    client's serialization); 0 when there is none."""
    if not isinstance(value, str):
        return 0
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return calendar.timegm(when.utctimetuple()) * 1_000_000_000 + when.microsecond * 1000


def _first_line(text: str, limit: int = 500) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


# The engine.


@dataclass
class _Snapshot:
    taken: float  # time.monotonic()
    job: dict[str, Any] | None  # None: gone
    pods: list[dict[str, Any]]
    deleted: bool = False  # dlc deleted the job


class _ApiError(EngineError):
    """A call to the API server failed; `status` is its HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class KubernetesEngine:
    """Runs each attempt as a PyTorchJob on a Kubernetes cluster (see the module's docstring).

    `specs` gives the spec of an attempt's job (`Engine.launch` receives only the attempt; a
    PyTorchJob needs the resources, images and storage of the spec). `api_client` is a configured
    `kubernetes.client.ApiClient`; without one the engine loads the in-cluster configuration when it
    runs in a pod, else `kubeconfig` (or the default kubeconfig) with `context`. Every request gives
    up after `request_timeout` seconds.
    """

    def __init__(
        self,
        *,
        specs: Callable[[AttemptLaunch], Awaitable[JobSpec]],
        namespace: str = "default",
        default_image: str = "",
        storage_pvc: str = "",
        storage_root: str = "",
        gpu_model_label: str = "",
        clean_pod_policy: str = "None",
        api_client: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        poll_interval: float = POLL_INTERVAL,
        kill_timeout: float = KILL_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if storage_pvc and not storage_root:
            raise ValueError("storage_pvc needs storage_root, the local directory the claim holds")
        if clean_pod_policy not in CLEAN_POD_POLICIES:
            raise ValueError(f"clean_pod_policy must be one of {', '.join(CLEAN_POD_POLICIES)}")
        self.specs = specs
        self.namespace = namespace
        self.default_image = default_image
        self.storage_pvc = storage_pvc
        self.storage_root = storage_root
        self.gpu_model_label = gpu_model_label
        self.clean_pod_policy = clean_pod_policy
        self.poll_interval = poll_interval
        self.kill_timeout = kill_timeout
        self.request_timeout = request_timeout
        self.info = EngineInfo("kubernetes", details={"namespace": namespace})
        self._api_client = api_client
        self._kubeconfig = kubeconfig
        self._context = context
        self._k8s: Any = None  # the kubernetes package, once imported
        self._snapshots: dict[str, _Snapshot] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def manifest(self, attempt: AttemptLaunch, spec: JobSpec) -> dict[str, Any]:
        """The PyTorchJob this engine would create for `attempt` (`pytorchjob_manifest` configured)."""
        return pytorchjob_manifest(
            attempt,
            spec,
            namespace=self.namespace,
            default_image=self.default_image,
            storage_pvc=self.storage_pvc,
            storage_root=self.storage_root,
            gpu_model_label=self.gpu_model_label,
            clean_pod_policy=self.clean_pod_policy,
        )

    async def launch(self, attempt: AttemptLaunch) -> list[ReplicaHandle]:
        """Creates the attempt's PyTorchJob (all or none: one object) and returns its replicas' handles.

        A PyTorchJob of this attempt left by an earlier dlc (it crashed between creating it and
        recording the handles) is adopted; any other object of that name fails the launch. The API
        server rejects fields the CRD does not know (fieldValidation=Strict) rather than drop them.
        """
        body = self.manifest(attempt, await self.specs(attempt))
        name = body["metadata"]["name"]
        ref = f"{self.namespace}/{name}"
        where = f"{attempt.job} attempt {attempt.attempt}"
        k8s = await self._client()
        objects = k8s.client.CustomObjectsApi(self._api_client)
        try:
            await self._call(
                f"{where}: cannot create {ref}",
                objects.create_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                body,
                field_validation="Strict",
            )
        except _ApiError as e:
            if e.status != 409:
                raise
            existing = await self._get_job(self.namespace, name)
            found = ((existing or {}).get("metadata") or {}).get("labels") or {}
            if found.get(LABEL_JOB_UID) != attempt.uid or found.get(LABEL_ATTEMPT) != str(attempt.attempt):
                raise EngineError(f"{where}: {ref} exists and is not this attempt's PyTorchJob") from e
        self._snapshots.pop(ref, None)
        return [
            ReplicaHandle(
                replica=r.replica,
                rank=r.rank,
                attempt=attempt.attempt,
                pid=0,
                pgid=0,
                log_path="",
                exit_path="",
                error_path="",
                engine_ref=ref,
            )
            for r in attempt.replicas
        ]

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas that ended, as of the latest look at their job (never waits on the API server:
        a look older than `poll_interval` is renewed in the background, for a later poll)."""
        by_ref: dict[str, list[str]] = {}
        for handle in handles:
            by_ref.setdefault(handle.engine_ref, []).append(handle.replica)
        ended: list[ReplicaExit] = []
        for ref, names in by_ref.items():
            snapshot = self._snapshots.get(ref)
            if snapshot is None or time.monotonic() - snapshot.taken >= self.poll_interval:
                self._refresh_soon(ref)
            if snapshot is not None:
                ended += replica_exits(snapshot.job, snapshot.pods, names, deleted=snapshot.deleted)
        return ended

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """None to find: the PyTorchJob is named after the attempt, and `launch` adopts one that an
        earlier launch of the same attempt created."""
        return []

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """Deletes each handle's PyTorchJob (propagation Foreground) and its pods with `grace` seconds
        to stop, then waits until the job is gone; `EngineError` if it is still there `kill_timeout`
        seconds after the grace period.

        The job goes first: the operator leaves a job being deleted alone, so it recreates no pod.
        The pods are then deleted with `grace` (the garbage collector would give them their own).
        """
        refs = sorted({h.engine_ref for h in handles if h.engine_ref})
        k8s = await self._client()
        objects = k8s.client.CustomObjectsApi(self._api_client)
        core = k8s.client.CoreV1Api(self._api_client)
        seconds = max(0, math.ceil(grace))
        for ref in refs:
            namespace, name = _split_ref(ref)
            with contextlib.suppress(EngineError):  # what already ended keeps its real exit
                await self._refresh(ref)
            try:
                await self._call(
                    f"cannot delete {ref}",
                    objects.delete_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    propagation_policy="Foreground",
                )
                await self._call(
                    f"cannot delete the pods of {ref}",
                    core.delete_collection_namespaced_pod,
                    namespace,
                    label_selector=f"{OPERATOR_JOB_NAME_LABEL}={name}",
                    grace_period_seconds=seconds,
                )
            except _ApiError as e:
                if e.status != 404:
                    raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds + self.kill_timeout
        waiting = list(refs)
        while waiting:
            for ref in list(waiting):
                if await self._get_job(*_split_ref(ref)) is None:
                    waiting.remove(ref)
                    old = self._snapshots.get(ref)
                    job, pods = (old.job, old.pods) if old else (None, [])
                    self._snapshots[ref] = _Snapshot(time.monotonic(), job, pods, deleted=True)
            if waiting and loop.time() > deadline:
                late = seconds + self.kill_timeout
                raise EngineError(f"{', '.join(waiting)} still there {late:.0f} s after being deleted")
            if waiting:
                await asyncio.sleep(_KILL_TICK)

    # The API server.

    async def _client(self) -> Any:
        """The kubernetes package, imported and configured on first use."""
        if self._k8s is None:
            try:
                k8s = importlib.import_module("kubernetes")
            except ImportError as e:
                raise EngineError(
                    "the kubernetes engine needs the kubernetes package (pip install kubernetes)"
                ) from e
            if self._api_client is None:
                self._api_client = await asyncio.to_thread(self._load_config, k8s)
            self._k8s = k8s
        return self._k8s

    def _load_config(self, k8s: Any) -> Any:
        try:
            if self._kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = k8s.client.Configuration()
                k8s.config.load_incluster_config(client_configuration=configuration)
                return k8s.client.ApiClient(configuration)
            return k8s.config.new_client_from_config(config_file=self._kubeconfig, context=self._context)
        except Exception as e:  # ConfigException, but also OSError, TypeError, ... from a bad file
            raise EngineError(f"cannot configure the Kubernetes client: {e}") from e

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a thread, bounded by `request_timeout`; failures as `_ApiError`."""
        k8s = await self._client()
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self.request_timeout, **kwargs)
        except k8s.client.exceptions.ApiException as e:
            raise _ApiError(f"{what}: {_api_error(e)}", e.status) from e
        except Exception as e:  # no answer: connection refused, timeout, TLS (urllib3, OSError)
            raise _ApiError(f"{what}: {type(e).__name__}: {e}", None) from e

    async def _get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The PyTorchJob as a JSON document, None if there is none."""
        k8s = await self._client()
        objects = k8s.client.CustomObjectsApi(self._api_client)
        try:
            job = await self._call(
                f"cannot read {namespace}/{name}",
                objects.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        except _ApiError as e:
            if e.status == 404:
                return None
            raise
        return dict(job)

    async def _refresh(self, ref: str) -> None:
        """Takes a new snapshot of the job and its pods."""
        namespace, name = _split_ref(ref)
        job = await self._get_job(namespace, name)
        pods: list[dict[str, Any]] = []
        if job is not None:
            k8s = await self._client()
            core = k8s.client.CoreV1Api(self._api_client)
            found = await self._call(
                f"cannot list the pods of {ref}",
                core.list_namespaced_pod,
                namespace,
                label_selector=f"{OPERATOR_JOB_NAME_LABEL}={name}",
            )
            # JSON documents (camelCase keys), whatever the client's model classes look like.
            pods = list(self._api_client.sanitize_for_serialization(found).get("items") or [])
        old = self._snapshots.get(ref)
        self._snapshots[ref] = _Snapshot(time.monotonic(), job, pods, deleted=bool(old and old.deleted))

    def _refresh_soon(self, ref: str) -> None:
        if ref in self._refreshing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop: nothing can refresh in the background
        self._refreshing.add(ref)

        async def refresh() -> None:
            try:
                await self._refresh(ref)
            except EngineError:
                pass  # not an exit: the next poll looks again
            finally:
                self._refreshing.discard(ref)

        task = loop.create_task(refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _split_ref(ref: str) -> tuple[str, str]:
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise EngineError(f"{ref!r} is not a PyTorchJob reference like namespace/name")
    return namespace, name


def _api_error(e: Any) -> str:
    """The API server's message from an ApiException, else its status and reason."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(e.body)
        if isinstance(body, dict) and body.get("message"):
            return f"{e.status} {body.get('reason') or e.reason}: {body['message']}"
    return f"{getattr(e, 'status', '?')} {getattr(e, 'reason', '')}".strip()
