"""The Kubernetes backend's requests, with no server at all: what it would create, and where.

No API server can run here: the client takes the backend's arguments and builds the expected URLs,
and a refused connection surfaces as `BackendError`. Nothing fakes a server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pai_runtime.kubernetes import KubernetesBackend, labels_selector
from pai_runtime.kubernetes_api import ObjectRef, object_ref
from pai_runtime.types import BackendError, GangLaunch, Readiness, ReplicaHandle, ReplicaLaunch

kubernetes = pytest.importorskip("kubernetes")

NAMESPACE = "serving"


def deployment(**metadata: Any) -> dict[str, Any]:
    labels = {"pai.dev/uid": "u1", "pai.dev/attempt": "0"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "srv-u1-a0", "labels": labels, **metadata},
        "spec": {"replicas": 1},
    }


def gang(manifest: dict[str, Any]) -> GangLaunch:
    server = ReplicaLaunch("server-0", 0, ("serve",), {}, readiness=Readiness(8080, "/healthz"))
    return GangLaunch("services/s/revisions/1", "u1", 0, "/unused", (server,), manifest)


@pytest.fixture
def backend() -> Iterator[KubernetesBackend]:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}"))
    yield KubernetesBackend(
        replica_of=lambda pod: "server-0", namespace=NAMESPACE, api_client=client, request_timeout=5
    )
    client.close()


def test_the_manifest_names_the_object() -> None:
    ref, body = object_ref(deployment(), NAMESPACE, {}, "s")
    assert str(ref) == f"apps/v1/namespaces/{NAMESPACE}/deployments/srv-u1-a0"
    assert ObjectRef.parse(str(ref)) == ref
    assert body["metadata"]["namespace"] == NAMESPACE and "namespace" not in deployment()["metadata"]
    ref, _ = object_ref(deployment(namespace="other"), NAMESPACE, {"Deployment": "deploys"}, "s")
    assert (ref.namespace, ref.plural) == ("other", "deploys")
    assert labels_selector(body) == "pai.dev/attempt=0,pai.dev/uid=u1"
    assert labels_selector({"metadata": {}}) == ""


def test_what_the_backend_cannot_create() -> None:
    with pytest.raises(BackendError, match="no manifest"):
        object_ref({}, NAMESPACE, {}, "s")
    with pytest.raises(BackendError, match="core API group"):
        object_ref({**deployment(), "apiVersion": "v1", "kind": "Pod"}, NAMESPACE, {}, "s")
    with pytest.raises(BackendError, match="no name"):
        object_ref({**deployment(), "metadata": {}}, NAMESPACE, {}, "s")
    with pytest.raises(BackendError, match="is not an object reference"):
        ObjectRef.parse("default/name")


async def test_calls_without_a_server_fail_as_backend_errors(
    backend: KubernetesBackend, tmp_path: Path
) -> None:
    path = f"apps/v1/namespaces/{NAMESPACE}/deployments/srv-u1-a0"
    with pytest.raises(BackendError, match=f"cannot create {path}.*/apis/{path[: path.rindex('/')]}"):
        await backend.launch(gang(deployment()))
    handle = ReplicaHandle("server-0", 0, 0, 0, 0, "", "", "", engine_ref=path, readiness=Readiness(8080))
    assert backend.poll([handle]) == []  # nothing seen yet; a failed look is no exit
    assert await backend.ready([handle]) == set()  # a failed look makes nothing ready
    with pytest.raises(BackendError, match=f"cannot delete {path}.*propagationPolicy=Foreground"):
        await backend.kill([handle], grace=1)
    with pytest.raises(BackendError, match="not supported by this backend yet"):
        await backend.replace(gang(deployment()), handle, grace=1)
    assert await backend.unrecorded(str(tmp_path), 0) == []
