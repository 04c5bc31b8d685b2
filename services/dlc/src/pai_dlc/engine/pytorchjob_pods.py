"""What a PyTorchJob's pods get from the job's spec: resources, GPU model affinity, storage volumes.

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
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from pai_dlc.domain.spec import JobSpec, ReplicaSpec, local_path
from pai_runtime.types import BackendError

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_CODE_MOUNT = "/workspace/code"
DEFAULT_DATA_MOUNT = "/mnt/data"


def resources(where: str, rs: ReplicaSpec) -> dict[str, Any]:
    r = rs.resources
    amounts: dict[str, str] = {}
    if r.cpu_milli:
        amounts["cpu"] = f"{r.cpu_milli}m"
    if r.memory_bytes:
        amounts["memory"] = str(r.memory_bytes)
    gpus = r.gpu_count
    if r.gpu_milli:
        if r.gpu_milli % 1000:
            raise BackendError(
                f"{where}: {rs.role.label} asks for {r.gpu_milli} milli-GPUs, a share of a GPU, which "
                f"plain Kubernetes cannot express ({GPU_RESOURCE} counts whole devices); ask for gpu_count"
            )
        gpus += r.gpu_milli // 1000
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def gpu_affinity(where: str, rs: ReplicaSpec, label: str) -> dict[str, Any]:
    models = list(rs.resources.allowed_gpu_models)
    if not models:
        return {}
    if not label:
        raise BackendError(
            f"{where}: {rs.role.label} is limited to GPU models {', '.join(models)}, but the kubernetes "
            "engine has no gpu_model_label to select nodes by"
        )
    term = {"matchExpressions": [{"key": label, "operator": "In", "values": models}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


@dataclass
class Mounts:
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
            raise BackendError(f"{self.where}: two directories would be mounted at {', '.join(twice)}")

    def _path(self, uri: str) -> str:
        try:
            return posixpath.normpath(str(local_path(uri)))
        except ValueError as e:
            raise BackendError(f"{self.where}: {e}") from e

    def _add(self, volume: str, path: str, target: str, host_type: str) -> None:
        mount: dict[str, Any] = {"name": volume, "mountPath": target}
        if self.storage_pvc:
            root = posixpath.normpath(self.storage_root)
            sub = posixpath.relpath(path, root)
            if sub == ".." or sub.startswith("../") or not posixpath.isabs(path):
                raise BackendError(
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
