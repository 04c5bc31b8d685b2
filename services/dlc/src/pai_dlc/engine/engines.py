"""dlc's engines: the `pai_runtime` backends, configured for training.

LOCAL is a plain `LocalBackend`. RAY gets dlc's rendezvous rewrite (`rendezvous.py`: MASTER_ADDR,
PET_* and TF_CONFIG pointed at rank 0's node once the gang is placed). KUBERNETES creates a
PyTorchJob per attempt: the backend is generic (it creates the object a launch's manifest holds, finds
its pods by the object's labels, reads their ends); the PyTorchJob is dlc's (`pytorchjob.py`), built
from the attempt's launch and the job's spec and put in the launch by the app, which pod runs which
replica (`replica_of`), and the container whose exit counts (`pytorch`).
"""

from __future__ import annotations

import functools
from typing import Any

from pai_dlc.app.ports import Runner
from pai_dlc.engine.pytorchjob import CLEAN_POD_POLICIES, CONTAINER_NAME, pytorchjob_manifest, replica_of
from pai_dlc.engine.rendezvous import rendezvous

RAY_NAMESPACE = "pai-dlc"


def ray(address: str, **options: Any) -> Runner:
    """RAY: replicas on a Ray cluster at `address` (`options` go to `RayBackend`)."""
    from pai_runtime.ray import RayBackend

    return Runner(RayBackend(address, namespace=RAY_NAMESPACE, rendezvous=rendezvous, **options))


def kubernetes(
    *,
    namespace: str = "default",
    default_image: str = "",
    storage_pvc: str = "",
    storage_root: str = "",
    gpu_model_label: str = "",
    clean_pod_policy: str = "None",
    **options: Any,
) -> Runner:
    """KUBERNETES: each attempt a PyTorchJob in `namespace` (`options` go to `KubernetesBackend`:
    `api_client`, `kubeconfig`, `context`, timeouts)."""
    from pai_runtime.kubernetes import KubernetesBackend

    if storage_pvc and not storage_root:
        raise ValueError("storage_pvc needs storage_root, the local directory the claim holds")
    if clean_pod_policy not in CLEAN_POD_POLICIES:
        raise ValueError(f"clean_pod_policy must be one of {', '.join(CLEAN_POD_POLICIES)}")
    backend = KubernetesBackend(
        replica_of=replica_of, container=CONTAINER_NAME, namespace=namespace, **options
    )
    manifest = functools.partial(
        pytorchjob_manifest, namespace=namespace, default_image=default_image, storage_pvc=storage_pvc,
        storage_root=storage_root, gpu_model_label=gpu_model_label, clean_pod_policy=clean_pod_policy,
    )  # fmt: skip
    return Runner(backend, manifest)
