"""dlc on Kubernetes: each attempt of a job is one Kubeflow PyTorchJob (training-operator v1).

`pytorchjob_manifest` is a pure function of the attempt's `GangLaunch` and the job's spec that returns
the `kubeflow.org/v1` PyTorchJob; `replica_of` names the replica a pod of it runs. The generic
`pai_runtime.kubernetes.KubernetesBackend` creates the manifest it finds in `GangLaunch.manifest`,
watches the pods by the job's labels, and deletes it (`pai_dlc.engine.kubernetes` wires the two).

What is tested: the unit tests validate every manifest they build against the PyTorchJob CRD's own
OpenAPI v3 schema (vendored in `schemas/`, training-operator v1.9 line), the pod template of each
replica type against the Kubernetes core Pod schema (`kubernetes-validate`), and the rules of the
operator's admission webhook. No API server runs where the tests run.

The manifest:

- One replica type per dlc role: MASTER → `Master` (exactly 1), WORKER → `Worker`, each a pod
  template with one container named `pytorch` (the operator requires it) that exposes the port
  `pytorchjob-port` (23456): the operator builds the rendezvous address from it and a headless
  Service per replica. PYTORCH and CUSTOM jobs become PyTorchJobs; other kinds are refused.
- The environment is dlc's (`pai_dlc.domain.env`), with the paths of the code and data sources
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
  of its log, reach the pod's status, where the backend reads them.
- Resources and storage: `pai_dlc.engine.pytorchjob_pods`.
- `runPolicy`: `backoffLimit` 0 and every replica type's `restartPolicy` Never: dlc is the only one
  that restarts, and it restarts the whole gang from the newest checkpoint by the replica group's own
  restart policy, as with every engine (the operator's per-pod restarts would restart single pods
  inside an attempt and count restarts twice). `activeDeadlineSeconds` from `active_deadline` (per
  attempt here; dlc still enforces the job-wide deadline), `cleanPodPolicy` None by default so that
  dlc reads every pod's end (dlc deletes the job itself).
- Labels: `pai.dev/job-uid` and `pai.dev/attempt` on the job and on every pod template (the backend
  finds the attempt's pods by the job's labels), `pai.dev/replica-role` on the templates.
- Name: `pai-<job id>-<hash>-a<attempt>`, a DNS-1035 label (the operator's webhook requires one) of at
  most 51 characters, so that `<name>-worker-<index>` (pod host names and Services) stays within 63.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pai_dlc.domain.spec import JobSpec, Kind, ReplicaSpec, Role
from pai_dlc.engine.pytorchjob_pods import Mounts, gpu_affinity, resources
from pai_runtime.spawn import ERROR_FILE_VAR
from pai_runtime.types import BackendError, GangLaunch, ReplicaLaunch

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

TERMINATION_LOG = "/dev/termination-log"

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

REPLICA_TYPES: dict[Role, str] = {Role.MASTER: "Master", Role.WORKER: "Worker"}
CLEAN_POD_POLICIES = ("None", "Running", "All")

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def job_name(gang: GangLaunch) -> str:
    """The PyTorchJob's name: `pai-<job id>-<hash of the job's name and uid>-a<attempt>`.

    Deterministic, a DNS-1035 label, at most MAX_NAME characters; the hash keeps jobs with the same
    id (in two workspaces, or deleted and created again) apart, the attempt keeps attempts apart.
    """
    digest = hashlib.sha256(f"{gang.owner}\n{gang.uid}".encode()).hexdigest()[:8]
    suffix = f"-{digest}-a{gang.attempt}"
    job_id = gang.owner.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", job_id.lower()).strip("-")
    room = MAX_NAME - len("pai") - len(suffix) - 1
    slug = slug[: max(room, 0)].rstrip("-")
    name = f"pai-{slug}{suffix}" if slug else f"pai{suffix}"
    if len(name) > MAX_NAME or not _DNS_LABEL.match(name):  # only for an absurd attempt number
        raise BackendError(f"{gang.owner}: attempt {gang.attempt} makes a name longer than {MAX_NAME}")
    return name


def replica_of(pod: Mapping[str, Any]) -> str | None:
    """The replica a pod of a PyTorchJob runs ("worker-1"), from the operator's labels."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    rtype, index = labels.get(OPERATOR_TYPE_LABEL), labels.get(OPERATOR_INDEX_LABEL)
    if not isinstance(rtype, str) or not isinstance(index, str) or not index.isdigit():
        return None
    return f"{rtype.lower()}-{int(index)}"


def pytorchjob_manifest(
    gang: GangLaunch,
    spec: JobSpec,
    *,
    namespace: str,
    default_image: str,
    storage_pvc: str = "",
    storage_root: str = "",
    gpu_model_label: str = "",
    clean_pod_policy: str = "None",
) -> dict[str, Any]:
    """The PyTorchJob that runs attempt `gang` of a job with `spec` (see the module's docstring).

    Raises `BackendError` for what a PyTorchJob cannot express: another kind than PYTORCH or CUSTOM,
    roles other than MASTER and WORKER, a share of a GPU, replicas with different processes per
    replica, no image, a path outside `storage_root` when `storage_pvc` is set.
    """
    where = f"{gang.owner} attempt {gang.attempt}"
    by_role, nproc = _check(where, spec, clean_pod_policy)
    if storage_pvc and not storage_root:
        raise BackendError(
            "the kubernetes engine needs storage_root (the directory the claim holds) with storage_pvc"
        )
    name = job_name(gang)
    if len(gang.uid) > 63 or not _LABEL_VALUE.match(gang.uid):
        raise BackendError(f"{where}: the job uid {gang.uid!r} cannot be a label value")
    labels = {LABEL_JOB_UID: gang.uid, LABEL_ATTEMPT: str(gang.attempt)}
    template = _Template(
        where=where,
        name=name,
        labels=labels,
        has_master=Role.MASTER in by_role,
        world=sum(max(1, r.count) for r in by_role.values()) * nproc,
        nproc=nproc,
        mounts=Mounts(spec, storage_pvc=storage_pvc, storage_root=storage_root, where=where),
        default_image=default_image,
        gpu_model_label=gpu_model_label,
    )
    launches = _launches_by_role(gang)
    replica_specs = {
        REPLICA_TYPES[role]: template.replica_spec(rs, launches.get(role.label, []))
        for role, rs in sorted(by_role.items())
    }
    run_policy: dict[str, Any] = {"backoffLimit": 0, "cleanPodPolicy": clean_pod_policy}
    if spec.active_deadline is not None:
        seconds = spec.active_deadline.total_seconds()
        run_policy["activeDeadlineSeconds"] = max(1, math.ceil(seconds))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_JOB: gang.owner},
        },
        "spec": {"nprocPerNode": str(nproc), "runPolicy": run_policy, "pytorchReplicaSpecs": replica_specs},
    }


def _check(where: str, spec: JobSpec, clean_pod_policy: str) -> tuple[dict[Role, ReplicaSpec], int]:
    """The spec's replica specs by role, and the processes per replica; refuses what a PyTorchJob
    cannot run."""
    if spec.kind not in (Kind.KIND_UNSPECIFIED, Kind.PYTORCH, Kind.CUSTOM):
        kind = spec.kind.name
        raise BackendError(
            f"{where}: {kind} jobs are not supported by the kubernetes engine yet "
            "(it runs PYTORCH and CUSTOM jobs as Kubeflow PyTorchJobs)"
        )
    if clean_pod_policy not in CLEAN_POD_POLICIES:
        raise BackendError(
            f"cleanPodPolicy must be one of {', '.join(CLEAN_POD_POLICIES)}, not {clean_pod_policy!r}"
        )
    by_role: dict[Role, ReplicaSpec] = {}
    for rs in spec.replica_specs:
        if rs.role not in REPLICA_TYPES:
            role = rs.role.name
            raise BackendError(f"{where}: a PyTorchJob has MASTER and WORKER replicas, not {role}")
        by_role[rs.role] = rs
    if not by_role:
        raise BackendError(f"{where}: a PyTorchJob needs a MASTER or WORKER replica")
    master = by_role.get(Role.MASTER)
    if master is not None and max(1, master.count) != 1:
        raise BackendError(f"{where}: a PyTorchJob has exactly one MASTER replica")
    nprocs = {max(1, rs.processes_per_replica) for rs in by_role.values()}
    if len(nprocs) > 1:
        raise BackendError(
            f"{where}: a PyTorchJob runs the same number of processes in every replica (nprocPerNode), "
            f"but this job asks for {sorted(nprocs)}"
        )
    return by_role, nprocs.pop()


class _Template:
    """Builds the replica spec (pod template included) of each role of one PyTorchJob."""

    def __init__(
        self,
        *,
        where: str,
        name: str,
        labels: dict[str, str],
        has_master: bool,
        world: int,
        nproc: int,
        mounts: Mounts,
        default_image: str,
        gpu_model_label: str,
    ) -> None:
        self.where, self.name, self.labels = where, name, labels
        self.has_master, self.world, self.nproc = has_master, world, nproc
        self.mounts, self.default_image, self.gpu_model_label = mounts, default_image, gpu_model_label

    def replica_spec(self, rs: ReplicaSpec, mine: Sequence[ReplicaLaunch]) -> dict[str, Any]:
        role_name = rs.role.label
        if not mine:
            raise BackendError(f"{self.where}: the attempt has no {role_name} replica to launch")
        if len({r.command for r in mine}) > 1:
            raise BackendError(
                f"{self.where}: the {role_name} replicas run different commands, a PyTorchJob one"
            )
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": rs.image or self.default_image,
            **_argv(rs, mine[0]),
            "env": self._env(role_name, mine),
            "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
        amounts = resources(self.where, rs)
        if amounts:
            container["resources"] = amounts
        if not container["image"]:
            raise BackendError(
                f"{self.where}: {role_name} has no image and the kubernetes engine has no default image"
            )
        if self.mounts.mounts:
            container["volumeMounts"] = self.mounts.mounts
        if self.mounts.workdir:
            container["workingDir"] = self.mounts.workdir
        pod_spec: dict[str, Any] = {"containers": [container]}
        if self.mounts.volumes:
            pod_spec["volumes"] = self.mounts.volumes
        affinity = gpu_affinity(self.where, rs, self.gpu_model_label)
        if affinity:
            pod_spec["affinity"] = affinity
        return {
            "replicas": max(1, rs.count),
            "restartPolicy": "Never",  # dlc restarts the gang (see the module docstring)
            "template": {"metadata": {"labels": {**self.labels, LABEL_ROLE: role_name}}, "spec": pod_spec},
        }

    def _env(self, role: str, launches: Sequence[ReplicaLaunch]) -> list[dict[str, Any]]:
        """The env of a role's pod template: what every replica of the role shares, then the pod's own."""
        managed = OPERATOR_ENV_WITH_MASTER if self.has_master else OPERATOR_ENV_ALWAYS
        shared: dict[str, str] | None = None
        for launch in launches:
            env = {k: v for k, v in launch.env.items() if k not in managed and k not in PER_REPLICA_ENV}
            if shared is None:
                shared = env
            elif env != shared:
                differ = sorted(k for k in env.keys() | shared.keys() if env.get(k) != shared.get(k))
                raise BackendError(
                    f"{self.where}: the {role} replicas have different environments ({', '.join(differ)}), "
                    "but a PyTorchJob gives every replica of a role the same"
                )
        values = dict(shared or {})
        values.update(self.mounts.env)
        values.setdefault(ERROR_FILE_VAR, TERMINATION_LOG)
        if not self.has_master:  # the rendezvous the operator only sets up around a Master
            master = f"{self.name}-worker-0"
            values.update(
                {
                    "MASTER_ADDR": master,
                    "MASTER_PORT": str(PORT),
                    "PET_MASTER_ADDR": master,
                    "PET_MASTER_PORT": str(PORT),
                    "WORLD_SIZE": str(self.world),
                    "PET_NPROC_PER_NODE": str(self.nproc),
                }
            )
        out: list[dict[str, Any]] = [{"name": k, "value": _escape(values[k])} for k in sorted(values)]
        out.append(_label_ref("PAI_REPLICA_INDEX", OPERATOR_INDEX_LABEL))
        if not self.has_master:
            out.append(_label_ref("RANK", OPERATOR_INDEX_LABEL))
            out.append(_label_ref("PET_NODE_RANK", OPERATOR_INDEX_LABEL))
        # Defined after PAI_REPLICA_INDEX, so that Kubernetes expands the reference.
        out.append({"name": "PAI_REPLICA", "value": f"{role}-$(PAI_REPLICA_INDEX)"})
        return out


def _launches_by_role(gang: GangLaunch) -> dict[str, list[ReplicaLaunch]]:
    out: dict[str, list[ReplicaLaunch]] = {}
    for launch in gang.replicas:
        role, _, index = launch.replica.rpartition("-")
        if role not in {r.label for r in Role} or not index.isdigit():
            raise BackendError(f"{gang.owner}: {launch.replica!r} is not a replica name like worker-0")
        out.setdefault(role, []).append(launch)
    for launches in out.values():
        launches.sort(key=lambda r: int(r.replica.rpartition("-")[2]))
    return out


def _escape(value: str) -> str:
    """A value Kubernetes' `$(VAR)` expansion leaves as it is (`$$` becomes `$`)."""
    return value.replace("$", "$$")


def _label_ref(name: str, label: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}}


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
