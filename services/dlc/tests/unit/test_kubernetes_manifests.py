"""The PyTorchJob manifests dlc builds, validated against the real schemas.

No API server runs here, so these tests check what the Kubernetes backend would create: every
manifest against the PyTorchJob CRD's schema, every pod template against the Pod schema, and the
training operator's webhook rules (see `pytorchjobs.py`). What dlc refuses, and how the broken
manifests fail each validation, is in test_kubernetes_refusals.py.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import jsonschema
import pytest

from pai.dlc.v1.job_spec_pb2 import JobSpec, ReplicaSpec
from pai_dlc.domain.spec import file_uri, local_path
from pai_dlc.engine.pytorchjob import (
    CONTAINER_NAME,
    OPERATOR_ENV_ALWAYS,
    OPERATOR_ENV_WITH_MASTER,
    PORT,
    PORT_NAME,
)
from pai_runtime.types import BackendError as EngineError

from .pytorchjobs import (
    IMAGE,
    JOB,
    NAMESPACE,
    UID,
    container,
    crd_validator,
    env_of,
    manifest_of,
    master,
    spec_of,
    validate,
    worker,
)

# Valid manifests.


@pytest.fixture(scope="module")
def crd() -> jsonschema.Draft7Validator:
    return crd_validator()


def test_two_workers(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    m = manifest_of(spec_of(tmp_path, worker(2)))
    validate(m, crd)
    assert (m["apiVersion"], m["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert m["metadata"]["namespace"] == NAMESPACE
    assert m["metadata"]["labels"] == {"pai.dev/job-uid": UID, "pai.dev/attempt": "0"}
    assert m["metadata"]["annotations"] == {"pai.dev/job": JOB}
    (rtype,) = m["spec"]["pytorchReplicaSpecs"]
    rs = m["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert rtype == "Worker" and rs["replicas"] == 2 and rs["restartPolicy"] == "Never"
    c = container(m, "Worker")
    assert c["name"] == CONTAINER_NAME and c["image"] == IMAGE
    assert c["command"] == ["python", "train.py"] and "args" not in c
    assert c["ports"] == [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}]
    env = env_of(c)
    # Without a Master the operator sets no rendezvous: the template points at worker-0's Service.
    name = m["metadata"]["name"]
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == f"{name}-worker-0"
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == str(PORT)
    assert env["WORLD_SIZE"] == "2" and env["PET_NPROC_PER_NODE"] == "1"
    index_ref = {"fieldRef": {"fieldPath": "metadata.labels['training.kubeflow.org/replica-index']"}}
    assert env["RANK"] == env["PET_NODE_RANK"] == env["PAI_REPLICA_INDEX"] == index_ref
    assert env["PAI_REPLICA"] == "worker-$(PAI_REPLICA_INDEX)"
    names = [e["name"] for e in c["env"]]
    assert names.index("PAI_REPLICA_INDEX") < names.index("PAI_REPLICA")  # expansion needs it defined first
    assert not OPERATOR_ENV_ALWAYS & env.keys()
    assert env["PAI_JOB_UID"] == UID and env["PAI_REPLICA_ROLE"] == "worker"
    assert env["TORCHELASTIC_ERROR_FILE"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert m["spec"]["runPolicy"] == {"backoffLimit": 0, "cleanPodPolicy": "None"}
    assert m["spec"]["nprocPerNode"] == "1"


def test_master_and_workers(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    spec = spec_of(
        tmp_path, master(restart_policy=ReplicaSpec.EXIT_CODE), worker(3, restart_policy=ReplicaSpec.NEVER)
    )
    m = manifest_of(spec)
    validate(m, crd)
    specs = m["spec"]["pytorchReplicaSpecs"]
    assert sorted(specs) == ["Master", "Worker"]
    assert (specs["Master"]["replicas"], specs["Master"]["restartPolicy"]) == (1, "Never")
    assert (specs["Worker"]["replicas"], specs["Worker"]["restartPolicy"]) == (3, "Never")
    for rtype, role in (("Master", "master"), ("Worker", "worker")):
        env = env_of(container(m, rtype))
        # The operator sets the rendezvous of a job with a Master: the templates leave it alone.
        assert not OPERATOR_ENV_WITH_MASTER & env.keys(), rtype
        assert env["PAI_REPLICA"] == f"{role}-$(PAI_REPLICA_INDEX)"
        assert env["PAI_REPLICA_ROLE"] == role
        labels = specs[rtype]["template"]["metadata"]["labels"]
        assert labels == {"pai.dev/job-uid": UID, "pai.dev/attempt": "0", "pai.dev/replica-role": role}


def test_dlc_alone_restarts_whatever_the_policy(
    tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator
) -> None:
    # the operator never restarts a pod and never retries the job: dlc restarts the whole gang from
    # the newest checkpoint by the replica group's policy, as with every engine
    for policy in (ReplicaSpec.NEVER, ReplicaSpec.ON_FAILURE, ReplicaSpec.ALWAYS, ReplicaSpec.EXIT_CODE):
        m = manifest_of(spec_of(tmp_path, worker(1, restart_policy=policy), max_restarts=5))  # type: ignore[arg-type]
        validate(m, crd)
        assert m["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] == "Never"
        assert m["spec"]["runPolicy"]["backoffLimit"] == 0


def test_gpus_cpu_and_memory(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    resources = {"cpu_milli": 1500, "memory_bytes": 16 * 2**30, "gpu_count": 2}
    m = manifest_of(spec_of(tmp_path, master(resources=resources), worker(2, resources={"gpu_milli": 1000})))
    validate(m, crd)
    amounts = {"cpu": "1500m", "memory": str(16 * 2**30), "nvidia.com/gpu": "2"}
    assert container(m, "Master")["resources"] == {"requests": amounts, "limits": amounts}
    one = {"nvidia.com/gpu": "1"}  # gpu_milli 1000 is one whole card
    assert container(m, "Worker")["resources"] == {"requests": one, "limits": one}
    assert env_of(container(m, "Master"))["OMP_NUM_THREADS"] == "1"


def test_gpu_models_become_node_affinity(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    spec = spec_of(tmp_path, worker(2, resources={"gpu_count": 8, "allowed_gpu_models": ["A100", "H100"]}))
    m = manifest_of(spec, gpu_model_label="pai.dev/gpu-model")
    validate(m, crd)
    affinity = m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["affinity"]
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == {
        "matchExpressions": [{"key": "pai.dev/gpu-model", "operator": "In", "values": ["A100", "H100"]}]
    }
    with pytest.raises(EngineError, match="no gpu_model_label"):
        manifest_of(spec)


def test_env_and_hyperparameters(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    rs = worker(
        2, args=["--epochs", "3", "--tag=$(NOT_A_VAR)"], env={"MY_VAR": "cost: $5", "WORLD_SIZE": "99"}
    )
    spec = spec_of(tmp_path, rs, hyperparameters={"lr": "0.1", "batch-size": "64"})
    m = manifest_of(spec)
    validate(m, crd)
    c = container(m, "Worker")
    assert c["command"] == ["python", "train.py"]
    # Every $ doubled: Kubernetes' $(VAR) expansion gives back exactly what dlc passes.
    assert c["args"] == ["--epochs", "3", "--tag=$$(NOT_A_VAR)", "--batch-size=64", "--lr=0.1"]
    env = env_of(c)
    assert env["MY_VAR"] == "cost: $$5"
    assert env["WORLD_SIZE"] == "2"  # dlc's variables win over the user's
    assert env["PAI_HP_LR"] == "0.1" and env["PAI_HP_BATCH_SIZE"] == "64"
    assert json.loads(env["PAI_HYPERPARAMETERS"]) == {"batch-size": "64", "lr": "0.1"}


def test_no_command_runs_the_image_entrypoint(
    tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator
) -> None:
    rs = ReplicaSpec(role=ReplicaSpec.WORKER, count=1, args=["--steps", "10"], image="registry.example/own:1")
    m = manifest_of(spec_of(tmp_path, rs))
    validate(m, crd)
    c = container(m, "Worker")
    assert "command" not in c and c["args"] == ["--steps", "10"]
    assert c["image"] == "registry.example/own:1"


def test_processes_per_replica(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    m = manifest_of(spec_of(tmp_path, master(processes_per_replica=8), worker(3, processes_per_replica=8)))
    validate(m, crd)
    assert m["spec"]["nprocPerNode"] == "8"
    env = env_of(container(m, "Worker"))
    assert env["LOCAL_WORLD_SIZE"] == "8" and "PET_NPROC_PER_NODE" not in env  # the operator sets it
    alone = manifest_of(spec_of(tmp_path, worker(3, processes_per_replica=4)))
    validate(alone, crd)
    env = env_of(container(alone, "Worker"))
    assert (env["PET_NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("4", "12")


def test_deadlines_and_restarts(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    spec = spec_of(
        tmp_path, master(), worker(1), max_restarts=3, active_deadline=dt.timedelta(hours=2, milliseconds=1)
    )
    m = manifest_of(spec, clean_pod_policy="Running")
    validate(m, crd)
    assert m["spec"]["runPolicy"] == {
        "backoffLimit": 0,
        "activeDeadlineSeconds": 7201,
        "cleanPodPolicy": "Running",
    }


def test_storage_as_host_paths(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    (tmp_path / "data").mkdir()
    spec = spec_of(
        tmp_path,
        worker(2),
        data_sources=[
            {"uri": file_uri(tmp_path / "data"), "mount_path": "/data/train", "env_var": "TRAIN_DIR"},
            {"uri": file_uri(tmp_path / "data")},
        ],
    )
    m = manifest_of(spec)
    validate(m, crd)
    pod = m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    c = container(m, "Worker")
    ckpt, out = str(local_path(spec.checkpoint_uri)), str(local_path(spec.output_uri))
    mounts = {v["name"]: v["mountPath"] for v in c["volumeMounts"]}
    assert mounts == {
        "code": "/workspace/code",
        "data-0": "/data/train",
        "data-1": "/mnt/data/1",
        "checkpoints": ckpt,
        "output": out,
    }
    hosts = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    assert hosts["code"] == {"path": str(tmp_path / "code"), "type": "Directory"}
    assert hosts["checkpoints"] == {"path": ckpt, "type": "DirectoryOrCreate"}
    assert c["workingDir"] == "/workspace/code"
    env = env_of(c)
    assert env["PAI_CODE_DIR"] == "/workspace/code"
    assert env["TRAIN_DIR"] == env["PAI_DATA_DIR"] == "/data/train" and env["PAI_DATA_DIR_1"] == "/mnt/data/1"
    assert env["PAI_CHECKPOINT_DIR"] == ckpt and env["PAI_OUTPUT_DIR"] == out


def test_storage_from_one_claim(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    root = tmp_path / "storage"
    (root / "code").mkdir(parents=True)
    spec = spec_of(tmp_path, worker(2), code={"uri": file_uri(root / "code"), "mount_path": "/src"})
    m = manifest_of(spec, storage_pvc="pai-storage", storage_root=str(root))
    validate(m, crd)
    pod = m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "storage", "persistentVolumeClaim": {"claimName": "pai-storage"}}]
    subs = {v["mountPath"]: v.get("subPath") for v in container(m, "Worker")["volumeMounts"]}
    assert subs == {
        "/src": "code",
        str(local_path(spec.checkpoint_uri)): f"jobs/{UID}/checkpoints",
        str(local_path(spec.output_uri)): f"jobs/{UID}/output",
    }
    outside = spec_of(tmp_path, worker(2))  # its code directory is not under the storage root
    with pytest.raises(EngineError, match="is not under"):
        manifest_of(outside, storage_pvc="pai-storage", storage_root=str(root))


def test_custom_kind_and_no_code(tmp_path: pathlib.Path, crd: jsonschema.Draft7Validator) -> None:
    m = manifest_of(spec_of(tmp_path, master(), worker(1), with_code=False, kind=JobSpec.CUSTOM))
    validate(m, crd)
    c = container(m, "Master")
    assert "workingDir" not in c and "PAI_CODE_DIR" not in env_of(c)
