"""From the API server's documents to exits and readiness (hand-written pods in the shape of core/v1 Pod)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from pai_runtime.pods import ready_replicas, replica_exits

IMAGE = "registry.example/pai/server:1"
LABEL = "example.dev/replica"


def replica_of(pod: Mapping[str, Any]) -> str | None:
    """The owner's rule (here: one label names the replica)."""
    value = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL)
    return value if isinstance(value, str) else None


def pod(replica: str, phase: str, *, sidecar: bool = False, **container_state: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    statuses = [
        {
            "name": "main",
            "image": IMAGE,
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": container_state,
        }
    ]
    if sidecar:  # listed first: the backend must pick the container it was told about
        statuses.insert(0, {**statuses[0], "name": "proxy", "state": {"running": {}}})
    if container_state:
        status["containerStatuses"] = statuses
    return {"metadata": {"name": f"obj-{replica}", "labels": {LABEL: replica}}, "status": status}


def exits(obj: Mapping[str, Any] | None, pods: list[dict[str, Any]], names: list[str], **kw: Any) -> Any:
    return {
        e.replica: e for e in replica_exits(obj, pods, names, replica_of=replica_of, container="main", **kw)
    }


def test_exits_from_pods() -> None:
    obj = {"kind": "PyTorchJob", "status": {"conditions": [{"type": "Running", "status": "True"}]}}
    error = {"message": {"message": "ValueError: bad lr", "extraInfo": {"py_callstack": "Traceback ..."}}}
    pods = [
        pod("master-0", "Running", running={}),
        pod("worker-0", "Succeeded", terminated={"exitCode": 0, "finishedAt": "2026-01-02T03:04:05Z"}),
        pod(
            "worker-1", "Failed", terminated={"exitCode": 1, "reason": "Error", "message": json.dumps(error)}
        ),
        pod(
            "worker-2",
            "Failed",
            terminated={"exitCode": 137, "reason": "OOMKilled", "message": "step 3\nKilled\n"},
        ),
        pod("worker-3", "Pending", waiting={"reason": "ImagePullBackOff", "message": "not found"}),
        pod("worker-4", "Pending", waiting={"reason": "ContainerCreating"}),
        {"metadata": {"name": "not-ours", "labels": {}}, "status": {"phase": "Failed"}},
    ]
    names = ["master-0", "worker-0", "worker-1", "worker-2", "worker-3", "worker-4", "worker-5"]
    ended = exits(obj, pods, names)
    assert sorted(ended) == ["worker-0", "worker-1", "worker-2", "worker-3"]
    assert ended["worker-0"].succeeded and ended["worker-0"].time_ns == 1767323045 * 10**9
    assert (ended["worker-1"].exit_code, ended["worker-1"].message) == (1, "exit code 1: ValueError: bad lr")
    assert ended["worker-1"].details == "Traceback ..."
    assert (ended["worker-2"].exit_code, ended["worker-2"].message) == (
        137,
        "exit code 137 (OOMKilled): Killed",
    )
    assert ended["worker-3"].exit_code is None and "ImagePullBackOff" in ended["worker-3"].message


def test_the_named_container_counts() -> None:
    failed = pod("server-0", "Failed", sidecar=True, terminated={"exitCode": 3, "reason": "Error"})
    (ended,) = exits({}, [failed], ["server-0"]).values()
    assert ended.exit_code == 3
    (first,) = replica_exits({}, [failed], ["server-0"], replica_of=replica_of)  # "": the first container
    assert first.exit_code is None and first.lost  # the sidecar has no terminated state


def test_exits_when_the_object_ends_or_goes() -> None:
    failed = {
        "kind": "PyTorchJob",
        "status": {"conditions": [{"type": "Failed", "status": "True", "message": "backoff limit"}]},
    }
    (lost,) = exits(failed, [], ["worker-0"]).values()
    assert lost.lost and lost.message == "the PyTorchJob failed: backoff limit"
    done = {
        "kind": "Job",
        "status": {"conditions": [{"type": "Complete", "status": "True", "reason": "Done"}]},
    }
    (ok,) = exits(done, [], ["worker-0"]).values()  # batch/v1 says Complete; its pod was cleaned up
    assert ok.succeeded and ok.message == "the Job succeeded: Done"
    (gone,) = exits(None, [], ["worker-0"], kind="Deployment").values()
    assert gone.lost and gone.message == "the Deployment is gone"
    (killed,) = exits(None, [], ["worker-0"], deleted=True).values()
    assert killed.exit_code is None and killed.signal == 15 and not killed.lost
    ended = pod("worker-1", "Succeeded", terminated={"exitCode": 0})
    assert [e.succeeded for e in exits(None, [ended], ["worker-1"], deleted=True).values()] == [True]


def test_ready_is_the_pods_ready_condition() -> None:
    def server(replica: str, phase: str, ready: str) -> dict[str, Any]:
        doc = pod(replica, phase, running={})
        doc["status"]["conditions"] = [{"type": "Ready", "status": ready}]
        return doc

    pods = [
        server("s-0", "Running", "True"),
        server("s-1", "Running", "False"),
        server("s-2", "Pending", "True"),
    ]
    pods.append(server("s-3", "Running", "True"))
    assert ready_replicas(pods, ["s-0", "s-1", "s-2"], replica_of=replica_of) == {"s-0"}


def test_exits_from_pods_as_the_client_returns_them() -> None:
    """The backend reads pods through the client's models and `sanitize_for_serialization`."""
    kubernetes = pytest.importorskip("kubernetes")
    doc = pod(
        "worker-1",
        "Failed",
        terminated={"exitCode": 2, "reason": "Error", "finishedAt": "2026-01-02T03:04:05Z"},
    )
    pods = kubernetes.client.V1PodList.from_dict({"apiVersion": "v1", "kind": "PodList", "items": [doc]})
    items = kubernetes.client.ApiClient().sanitize_for_serialization(pods)["items"]
    (ended,) = exits({}, items, ["worker-0", "worker-1"]).values()
    assert (ended.replica, ended.exit_code, ended.time_ns) == ("worker-1", 2, 1767323045 * 10**9)
