"""What dlc's PyTorchJob manifests refuse, broken manifests that each validation rejects, names, and
dlc's Kubernetes engine (the generic backend with dlc's manifest and replica names) with no server.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import re
import socket
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from pai.dlc.v1.job_spec_pb2 import JobSpec, ReplicaSpec
from pai_dlc.domain.spec import file_uri
from pai_dlc.engine import engines
from pai_dlc.engine.pytorchjob import MAX_NAME, job_name, pytorchjob_manifest, replica_of
from pai_runtime.pods import replica_exits
from pai_runtime.types import BackendError as EngineError
from pai_runtime.types import GangLaunch, ReplicaHandle

from .pytorchjobs import (
    _DNS_1035,
    IMAGE,
    JOB,
    K8S_VERSIONS,
    NAMESPACE,
    UID,
    attempt_of,
    container,
    crd_validator,
    manifest_of,
    master,
    pods_of,
    spec_of,
    webhook_problems,
    worker,
)

# Broken manifests: each validation rejects what it should.


@pytest.fixture(scope="module")
def crd() -> jsonschema.Draft7Validator:
    return crd_validator()


def test_the_crd_schema_rejects_a_broken_manifest(
    tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator
) -> None:
    good = manifest_of(spec_of(tmp_path, master(), worker(2)))
    crd.validate(good)
    breakages = [
        lambda m: m["spec"]["pytorchReplicaSpecs"]["Worker"].update(replicas="two"),
        lambda m: m["spec"]["pytorchReplicaSpecs"]["Worker"].update(restartPolicie="Never"),
        lambda m: m["spec"].pop("pytorchReplicaSpecs"),
        lambda m: m["spec"]["runPolicy"].update(backoffLimit=1.5),
        lambda m: m["spec"].update(nprocPerNode=8),
        lambda m: container(m, "Worker")["env"].append({"value": "no name"}),
        lambda m: container(m, "Worker").update(resources={"requests": {"cpu": "1.5 cores"}}),
        lambda m: container(m, "Worker")["ports"][0].pop("containerPort"),
    ]
    for i, breakage in enumerate(breakages):
        bad = copy.deepcopy(good)
        breakage(bad)
        with pytest.raises(jsonschema.ValidationError):
            crd.validate(bad)
            pytest.fail(f"breakage {i} passed the CRD schema")


def test_the_pod_schema_rejects_a_broken_template(tmp_path: pathlib.Path) -> None:
    (pod,) = pods_of(manifest_of(spec_of(tmp_path, worker(2))))
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    breakages = [
        lambda p: p["spec"]["containers"][0].update(imagePullPolicy=3),
        lambda p: p["spec"]["containers"][0].update(workDir="/x"),
        lambda p: p["spec"]["volumes"][0].update(hostPath={"type": "Directory"}),
        lambda p: p["spec"]["containers"][0]["env"][0].update(valueFrom="nope"),
    ]
    for breakage in breakages:
        bad = copy.deepcopy(pod)
        breakage(bad)
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


def test_the_webhook_rules_catch_a_broken_manifest(tmp_path: pathlib.Path) -> None:
    good = manifest_of(spec_of(tmp_path, master(), worker(2)))
    assert webhook_problems(good) == []
    bad = copy.deepcopy(good)
    container(bad, "Worker")["name"] = "trainer"
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    bad["metadata"]["name"] = "1-starts-with-a-digit"
    assert len(webhook_problems(bad)) == 3


# What the engine refuses.


def test_refuses_a_share_of_a_gpu(tmp_path: pathlib.Path) -> None:
    with pytest.raises(EngineError, match="500 milli-GPUs, a share of a GPU"):
        manifest_of(spec_of(tmp_path, worker(2, resources={"gpu_milli": 500})))


@pytest.mark.parametrize("kind", [JobSpec.TENSORFLOW, JobSpec.MPI, JobSpec.XGBOOST])
def test_refuses_other_kinds(tmp_path: pathlib.Path, kind: int) -> None:
    spec = spec_of(tmp_path, ReplicaSpec(role=ReplicaSpec.WORKER, count=2, command=["x"]), kind=kind)
    with pytest.raises(EngineError, match="not supported by the kubernetes engine yet"):
        pytorchjob_manifest(attempt_of(spec), spec, namespace=NAMESPACE, default_image=IMAGE)


def test_refuses_what_a_pytorchjob_cannot_say(tmp_path: pathlib.Path) -> None:
    with pytest.raises(EngineError, match="no image"):
        spec = spec_of(tmp_path, worker(2))
        pytorchjob_manifest(attempt_of(spec), spec, namespace=NAMESPACE, default_image="")
    with pytest.raises(EngineError, match="same number of processes"):
        manifest_of(spec_of(tmp_path, master(processes_per_replica=2), worker(2, processes_per_replica=4)))
    with pytest.raises(EngineError, match="MASTER and WORKER replicas, not PS"):
        manifest_of(spec_of(tmp_path, worker(2), ReplicaSpec(role=ReplicaSpec.PS, command=["x"])))
    with pytest.raises(EngineError, match="mounted at /workspace/code"):
        manifest_of(
            spec_of(
                tmp_path,
                worker(2),
                data_sources=[{"uri": file_uri(tmp_path), "mount_path": "/workspace/code"}],
            )
        )


# Names.


def test_names_are_deterministic_dns_labels() -> None:
    spec = JobSpec(replica_specs=[worker(1)])
    one = job_name(attempt_of_names(JOB, UID, 0, spec))
    assert one == job_name(attempt_of_names(JOB, UID, 0, spec))
    assert re.fullmatch(r"pai-resnet-50-[0-9a-f]{8}-a0", one)
    assert one != job_name(attempt_of_names(JOB, UID, 1, spec))
    assert one != job_name(attempt_of_names(JOB, "another-uid", 0, spec))
    assert one != job_name(attempt_of_names("workspaces/ws2/jobs/resnet-50", UID, 0, spec))
    for job in (
        "workspaces/w/jobs/" + "Very_Long.Job-Name" * 10,
        "workspaces/w/jobs/-",
        "workspaces/w/jobs/9lives",
    ):
        for attempt in (0, 7, 12345):
            name = job_name(attempt_of_names(job, UID, attempt, spec))
            assert len(name) <= MAX_NAME and _DNS_1035.match(name), name
            assert len(f"{name}-worker-1023") <= 63
            assert name.endswith(f"-a{attempt}")


def attempt_of_names(job: str, uid: str, attempt: int, spec: object) -> GangLaunch:
    return GangLaunch(owner=job, uid=uid, attempt=attempt, run_dir="", replicas=())


# dlc's Kubernetes engine: the generic backend with the PyTorchJob's replica names and container.


def test_the_pods_of_a_pytorchjob_are_its_replicas(tmp_path: pathlib.Path) -> None:
    pods = pods_of(manifest_of(spec_of(tmp_path, master(), worker(2))))
    assert sorted(replica_of(p) or "" for p in pods) == ["master-0", "worker-0"]
    assert replica_of({"metadata": {"labels": {"training.kubeflow.org/replica-type": "worker"}}}) is None
    failed: dict[str, Any] = {"phase": "Failed", "containerStatuses": [{"name": "sidecar", "state": {}}]}
    failed["containerStatuses"].append({"name": "pytorch", "state": {"terminated": {"exitCode": 3}}})
    (ended,) = replica_exits(
        {}, [{**pods[1], "status": failed}], ["worker-0"], replica_of=replica_of, container="pytorch"
    )
    assert (ended.replica, ended.exit_code) == ("worker-0", 3)


async def test_calls_without_a_server_fail_as_engine_errors(tmp_path: pathlib.Path) -> None:
    """dlc's KUBERNETES runner puts the PyTorchJob built from the job's spec in the launch, and the
    backend sends it where a PyTorchJob goes; with no server, failures are BackendErrors."""
    kubernetes = pytest.importorskip("kubernetes")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}"))
    spec = spec_of(tmp_path, worker(2))
    runner = engines.kubernetes(
        namespace=NAMESPACE, default_image=IMAGE, api_client=client, request_timeout=5
    )
    assert runner.manifest is not None
    gang = attempt_of(spec)
    gang = dataclasses.replace(gang, manifest=runner.manifest(gang, spec))
    assert gang.manifest == pytorchjob_manifest(
        attempt_of(spec), spec, namespace=NAMESPACE, default_image=IMAGE
    )
    ref = f"kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/{job_name(gang)}"
    with pytest.raises(
        EngineError, match=f"cannot create {ref}.*/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs"
    ):
        await runner.backend.launch(gang)
    handle = ReplicaHandle("worker-0", 0, 0, 0, 0, "", "", "", engine_ref=ref)
    assert runner.backend.poll([handle]) == []  # nothing seen yet; a failed look is no exit
    with pytest.raises(EngineError, match=f"cannot delete {ref}.*propagationPolicy=Foreground"):
        await runner.backend.kill([handle], grace=1)
    client.close()
