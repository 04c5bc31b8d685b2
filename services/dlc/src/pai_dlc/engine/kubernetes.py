"""dlc's KUBERNETES engine: `pai_runtime.kubernetes.KubernetesBackend` creating PyTorchJobs.

The backend is generic (it creates the object a launch's manifest holds, finds its pods by the job's
labels, reads their ends); the PyTorchJob itself is dlc's (`pai_dlc.engine.pytorchjob`): its
manifest, which pod runs which replica (`replica_of`), the container whose exit counts (`pytorch`).

THE ONE REMAINING SEAM: the current controller's `Engine.launch` receives an `AttemptLaunch`, which
has no job spec, and a PyTorchJob needs the spec's images, resources and storage. So, as before the
backends moved to `pai_runtime`, this engine takes `specs`, a lookup of an attempt's job spec, and
builds the manifest at launch time. A controller that puts the manifest in the `GangLaunch` itself
constructs `KubernetesBackend` as `backend()` below does and drops this class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pai_dlc.engine.base import AttemptLaunch, BackendEngine
from pai_dlc.engine.pytorchjob import CLEAN_POD_POLICIES, CONTAINER_NAME, pytorchjob_manifest, replica_of
from pai_dlc.model.spec import JobSpec
from pai_runtime.kubernetes import KILL_TIMEOUT, POLL_INTERVAL, REQUEST_TIMEOUT, KubernetesBackend


def backend(namespace: str, **options: Any) -> KubernetesBackend:
    """The Kubernetes backend configured for dlc's PyTorchJobs (`options` go to its constructor)."""
    return KubernetesBackend(replica_of=replica_of, container=CONTAINER_NAME, namespace=namespace, **options)


class KubernetesEngine(BackendEngine):
    """Runs each attempt as a PyTorchJob (see the module's docstring).

    `specs` gives the spec of an attempt's job. `api_client` is a configured
    `kubernetes.client.ApiClient`; without one the backend loads the in-cluster configuration when
    it runs in a pod, else `kubeconfig` (or the default kubeconfig) with `context`.
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
        self.options = {
            "namespace": namespace,
            "default_image": default_image,
            "storage_pvc": storage_pvc,
            "storage_root": storage_root,
            "gpu_model_label": gpu_model_label,
            "clean_pod_policy": clean_pod_policy,
        }
        kubernetes = backend(
            namespace,
            api_client=api_client,
            kubeconfig=kubeconfig,
            context=context,
            poll_interval=poll_interval,
            kill_timeout=kill_timeout,
            request_timeout=request_timeout,
        )
        super().__init__(kubernetes, self._manifest_of)

    def manifest(self, attempt: AttemptLaunch, spec: JobSpec) -> dict[str, Any]:
        """The PyTorchJob this engine would create for `attempt` (`pytorchjob_manifest` configured)."""
        return pytorchjob_manifest(attempt.gang(), spec, **self.options)

    async def _manifest_of(self, attempt: AttemptLaunch) -> dict[str, Any]:
        return self.manifest(attempt, await self.specs(attempt))
