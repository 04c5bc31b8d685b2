"""The kubernetes engine's PyTorchJob manifests, validated against the real schemas.

No API server runs here, so these tests check what the engine would send: every manifest against
the PyTorchJob CRD's OpenAPI v3 schema (vendored from training-operator, see
`pai_dlc/engine/schemas/README.md`) with `jsonschema`, every replica type's pod template as a Pod
against the Kubernetes core schema with `kubernetes-validate` (strict), and the rules of the
training operator's admission webhook. Tests that break a manifest on purpose show that each
validation rejects what it should. The engine's API calls are not exercised anywhere.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import pathlib
import re
import socket
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import pai_dlc.engine
from pai_dlc.engine.base import AttemptLaunch, EngineError, ReplicaHandle, ReplicaLaunch
from pai_dlc.engine.kubernetes import (
    CONTAINER_NAME,
    MAX_NAME,
    OPERATOR_ENV_ALWAYS,
    OPERATOR_ENV_WITH_MASTER,
    PORT,
    PORT_NAME,
    KubernetesEngine,
    job_name,
    pytorchjob_manifest,
    replica_exits,
)
from pai_dlc.model.env import Cluster, hyperparameter_args, replica_env
from pai_dlc.model.spec import JobSpec, ReplicaSpec, Role, file_uri, local_path, normalize, replicas

CRD = pathlib.Path(pai_dlc.engine.__file__).parent / "schemas" / "kubeflow.org_pytorchjobs.yaml"
# The Kubernetes versions whose Pod schema the templates must pass: the one training-operator v1.9
# builds against, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.31", "1.37")
NAMESPACE = "training"
IMAGE = "registry.example/pai/torch:2.13"
JOB = "workspaces/ws1/jobs/resnet-50"
UID = "0b7f3c2e-5d1a-4f6e-9a8b-1c2d3e4f5a6b"


# The schemas.


def _strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its properties.

    The API server prunes fields a structural schema does not name (or rejects them: the engine
    creates with fieldValidation=Strict); plain JSON Schema would let them through, so a misspelled
    field would pass. Maps (`additionalProperties` given) and free objects (no properties) stay open.
    """
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["kind"] == "CustomResourceDefinition" and crd["metadata"]["name"] == "pytorchjobs.kubeflow.org"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def pods_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One Pod per replica type, made of its template the way the operator makes them."""
    name = manifest["metadata"]["name"]
    out = []
    for rtype, rs in manifest["spec"]["pytorchReplicaSpecs"].items():
        template = rs["template"]
        labels = {
            **template["metadata"]["labels"],
            "training.kubeflow.org/job-name": name,
            "training.kubeflow.org/replica-type": rtype.lower(),
            "training.kubeflow.org/replica-index": "0",
        }
        spec = copy.deepcopy(template["spec"])
        spec["restartPolicy"] = "Never" if rs["restartPolicy"] == "ExitCode" else rs["restartPolicy"]
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-{rtype.lower()}-0", "namespace": NAMESPACE, "labels": labels},
                "spec": spec,
            }
        )
    return out


_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def webhook_problems(manifest: dict[str, Any]) -> list[str]:
    """What training-operator's validating webhook (pkg/webhooks/pytorch) would refuse."""
    problems = []
    name = manifest["metadata"]["name"]
    if len(name) > 63 or not _DNS_1035.match(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1035 label")
    for rtype, rs in manifest["spec"]["pytorchReplicaSpecs"].items():
        if rtype not in ("Master", "Worker"):
            problems.append(f"replica type {rtype}")
        containers = rs["template"]["spec"].get("containers") or []
        if not any(c.get("name") == "pytorch" for c in containers):
            problems.append(f"{rtype}: no container named pytorch")
        problems += [f"{rtype}: container without image" for c in containers if not c.get("image")]
        if rtype == "Master" and rs.get("replicas") != 1:
            problems.append("Master: replicas must be 1")
    return problems


def validate(manifest: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    validator.validate(manifest)
    for pod in pods_of(manifest):
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)
    assert webhook_problems(manifest) == []


# Specs and attempts, built the way dlc's controller builds them.


def spec_of(tmp: pathlib.Path, *specs: ReplicaSpec, with_code: bool = True, **kw: Any) -> JobSpec:
    if with_code:
        (tmp / "code").mkdir(exist_ok=True)
        kw.setdefault("code", {"uri": file_uri(tmp / "code")})
    job = JobSpec(replica_specs=list(specs), engine=JobSpec.KUBERNETES, **kw)
    return normalize(job, default_engine=JobSpec.LOCAL, storage_root=tmp / "storage", uid=UID)


def attempt_of(spec: JobSpec, attempt: int = 0, job: str = JOB, uid: str = UID) -> AttemptLaunch:
    everyone = replicas(spec)
    cluster = Cluster("127.0.0.1", 29500, {r.name: 29501 + r.rank for r in everyone})
    code = str(local_path(spec.code.uri)) if spec.code.uri else None
    return AttemptLaunch(
        job=job,
        uid=uid,
        attempt=attempt,
        run_dir="/unused",
        replicas=tuple(
            ReplicaLaunch(
                replica=r.name,
                rank=r.rank,
                command=(*r.spec.command, *r.spec.args, *hyperparameter_args(spec)),
                env=replica_env(
                    job=job,
                    uid=uid,
                    spec=spec,
                    replica=r,
                    everyone=everyone,
                    cluster=cluster,
                    attempt=attempt,
                    restart_count=0,
                ),
                cwd=code,
            )
            for r in everyone
        ),
    )


def manifest_of(spec: JobSpec, attempt: int = 0, **kw: Any) -> dict[str, Any]:
    return pytorchjob_manifest(
        attempt_of(spec, attempt), spec, namespace=NAMESPACE, default_image=IMAGE, **kw
    )


def worker(count: int = 2, **kw: Any) -> ReplicaSpec:
    return ReplicaSpec(role=Role.WORKER, count=count, command=["python", "train.py"], **kw)


def master(**kw: Any) -> ReplicaSpec:
    return ReplicaSpec(role=Role.MASTER, command=["python", "train.py"], **kw)


def container(manifest: dict[str, Any], rtype: str) -> dict[str, Any]:
    (c,) = manifest["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names)), "an env var is set twice"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


# Valid manifests.


def test_two_workers(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    m = manifest_of(spec_of(tmp_path, worker(2)))
    validate(m, crd_validator)
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


def test_master_and_workers(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    spec = spec_of(
        tmp_path, master(restart_policy=ReplicaSpec.EXIT_CODE), worker(3, restart_policy=ReplicaSpec.NEVER)
    )
    m = manifest_of(spec)
    validate(m, crd_validator)
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
    tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator
) -> None:
    # the operator never restarts a pod and never retries the job: dlc restarts the whole gang from
    # the newest checkpoint by the replica group's policy, as with every engine
    for policy in (ReplicaSpec.NEVER, ReplicaSpec.ON_FAILURE, ReplicaSpec.ALWAYS, ReplicaSpec.EXIT_CODE):
        m = manifest_of(spec_of(tmp_path, worker(1, restart_policy=policy), max_restarts=5))  # type: ignore[arg-type]
        validate(m, crd_validator)
        assert m["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] == "Never"
        assert m["spec"]["runPolicy"]["backoffLimit"] == 0


def test_gpus_cpu_and_memory(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    resources = {"cpu_milli": 1500, "memory_bytes": 16 * 2**30, "gpu_count": 2}
    m = manifest_of(spec_of(tmp_path, master(resources=resources), worker(2, resources={"gpu_milli": 1000})))
    validate(m, crd_validator)
    amounts = {"cpu": "1500m", "memory": str(16 * 2**30), "nvidia.com/gpu": "2"}
    assert container(m, "Master")["resources"] == {"requests": amounts, "limits": amounts}
    one = {"nvidia.com/gpu": "1"}  # gpu_milli 1000 is one whole card
    assert container(m, "Worker")["resources"] == {"requests": one, "limits": one}
    assert env_of(container(m, "Master"))["OMP_NUM_THREADS"] == "1"


def test_gpu_models_become_node_affinity(
    tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator
) -> None:
    spec = spec_of(tmp_path, worker(2, resources={"gpu_count": 8, "allowed_gpu_models": ["A100", "H100"]}))
    m = manifest_of(spec, gpu_model_label="pai.dev/gpu-model")
    validate(m, crd_validator)
    affinity = m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["affinity"]
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == {
        "matchExpressions": [{"key": "pai.dev/gpu-model", "operator": "In", "values": ["A100", "H100"]}]
    }
    with pytest.raises(EngineError, match="no gpu_model_label"):
        manifest_of(spec)


def test_env_and_hyperparameters(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    rs = worker(
        2, args=["--epochs", "3", "--tag=$(NOT_A_VAR)"], env={"MY_VAR": "cost: $5", "WORLD_SIZE": "99"}
    )
    spec = spec_of(tmp_path, rs, hyperparameters={"lr": "0.1", "batch-size": "64"})
    m = manifest_of(spec)
    validate(m, crd_validator)
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
    tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator
) -> None:
    rs = ReplicaSpec(role=Role.WORKER, count=1, args=["--steps", "10"], image="registry.example/own:1")
    m = manifest_of(spec_of(tmp_path, rs))
    validate(m, crd_validator)
    c = container(m, "Worker")
    assert "command" not in c and c["args"] == ["--steps", "10"]
    assert c["image"] == "registry.example/own:1"


def test_processes_per_replica(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    m = manifest_of(spec_of(tmp_path, master(processes_per_replica=8), worker(3, processes_per_replica=8)))
    validate(m, crd_validator)
    assert m["spec"]["nprocPerNode"] == "8"
    env = env_of(container(m, "Worker"))
    assert env["LOCAL_WORLD_SIZE"] == "8" and "PET_NPROC_PER_NODE" not in env  # the operator sets it
    alone = manifest_of(spec_of(tmp_path, worker(3, processes_per_replica=4)))
    validate(alone, crd_validator)
    env = env_of(container(alone, "Worker"))
    assert (env["PET_NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("4", "12")


def test_deadlines_and_restarts(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    spec = spec_of(tmp_path, master(), worker(1), max_restarts=3)
    spec.active_deadline.FromTimedelta(dt.timedelta(hours=2, milliseconds=1))
    m = manifest_of(spec, clean_pod_policy="Running")
    validate(m, crd_validator)
    assert m["spec"]["runPolicy"] == {
        "backoffLimit": 0,
        "activeDeadlineSeconds": 7201,
        "cleanPodPolicy": "Running",
    }


def test_storage_as_host_paths(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
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
    validate(m, crd_validator)
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


def test_storage_from_one_claim(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    root = tmp_path / "storage"
    (root / "code").mkdir(parents=True)
    spec = spec_of(tmp_path, worker(2), code={"uri": file_uri(root / "code"), "mount_path": "/src"})
    m = manifest_of(spec, storage_pvc="pai-storage", storage_root=str(root))
    validate(m, crd_validator)
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


def test_custom_kind_and_no_code(tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator) -> None:
    m = manifest_of(spec_of(tmp_path, master(), worker(1), with_code=False, kind=JobSpec.CUSTOM))
    validate(m, crd_validator)
    c = container(m, "Master")
    assert "workingDir" not in c and "PAI_CODE_DIR" not in env_of(c)


# Broken manifests: each validation rejects what it should.


def test_the_crd_schema_rejects_a_broken_manifest(
    tmp_path: pathlib.Path, crd_validator: jsonschema.Draft7Validator
) -> None:
    good = manifest_of(spec_of(tmp_path, master(), worker(2)))
    crd_validator.validate(good)
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
            crd_validator.validate(bad)
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
    spec = spec_of(tmp_path, ReplicaSpec(role=Role.WORKER, count=2, command=["x"]), kind=kind)
    with pytest.raises(EngineError, match="not supported by the kubernetes engine yet"):
        pytorchjob_manifest(attempt_of(spec), spec, namespace=NAMESPACE, default_image=IMAGE)


def test_refuses_what_a_pytorchjob_cannot_say(tmp_path: pathlib.Path) -> None:
    with pytest.raises(EngineError, match="no image"):
        spec = spec_of(tmp_path, worker(2))
        pytorchjob_manifest(attempt_of(spec), spec, namespace=NAMESPACE, default_image="")
    with pytest.raises(EngineError, match="same number of processes"):
        manifest_of(spec_of(tmp_path, master(processes_per_replica=2), worker(2, processes_per_replica=4)))
    with pytest.raises(EngineError, match="MASTER and WORKER replicas, not PS"):
        manifest_of(spec_of(tmp_path, worker(2), ReplicaSpec(role=Role.PS, command=["x"])))
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


def attempt_of_names(job: str, uid: str, attempt: int, spec: JobSpec) -> AttemptLaunch:
    return AttemptLaunch(job=job, uid=uid, attempt=attempt, run_dir="", replicas=())


# From the API server's documents to exits (hand-written pods in the shape of core/v1 Pod).


def pod(replica: str, phase: str, **container_state: Any) -> dict[str, Any]:
    rtype, _, index = replica.rpartition("-")
    status: dict[str, Any] = {"phase": phase}
    if container_state:
        status["containerStatuses"] = [
            {
                "name": "pytorch",
                "image": IMAGE,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": container_state,
            }
        ]
    labels = {"training.kubeflow.org/replica-type": rtype, "training.kubeflow.org/replica-index": index}
    return {"metadata": {"name": f"job-{replica}", "labels": labels}, "status": status}


def test_exits_from_pods() -> None:
    job = {"status": {"conditions": [{"type": "Running", "status": "True"}]}}
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
    ]
    names = ["master-0", "worker-0", "worker-1", "worker-2", "worker-3", "worker-4", "worker-5"]
    exits = {e.replica: e for e in replica_exits(job, pods, names)}
    assert sorted(exits) == ["worker-0", "worker-1", "worker-2", "worker-3"]
    assert exits["worker-0"].succeeded and exits["worker-0"].time_ns == 1767323045 * 10**9
    assert (exits["worker-1"].exit_code, exits["worker-1"].message) == (1, "exit code 1: ValueError: bad lr")
    assert exits["worker-1"].details == "Traceback ..."
    assert (
        exits["worker-2"].exit_code == 137
        and exits["worker-2"].message == "exit code 137 (OOMKilled): Killed"
    )
    assert exits["worker-3"].exit_code is None and "ImagePullBackOff" in exits["worker-3"].message


def test_exits_when_the_job_ends_or_goes() -> None:
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "backoff limit"}]}}
    (lost,) = replica_exits(failed, [], ["worker-0"])
    assert lost.lost and "backoff limit" in lost.message
    (gone,) = replica_exits(None, [], ["worker-0"])
    assert gone.lost
    (killed,) = replica_exits(None, [], ["worker-0"], deleted=True)
    assert killed.exit_code is None and killed.signal == 15 and not killed.lost
    ended = pod("worker-1", "Succeeded", terminated={"exitCode": 0})
    assert [e.succeeded for e in replica_exits(None, [ended], ["worker-1"], deleted=True)] == [True]


def test_exits_from_pods_as_the_client_returns_them() -> None:
    """The engine reads pods through the client's models and `sanitize_for_serialization`."""
    kubernetes = pytest.importorskip("kubernetes")
    doc = pod(
        "worker-1",
        "Failed",
        terminated={"exitCode": 2, "reason": "Error", "finishedAt": "2026-01-02T03:04:05Z"},
    )
    pods = kubernetes.client.V1PodList.from_dict({"apiVersion": "v1", "kind": "PodList", "items": [doc]})
    items = kubernetes.client.ApiClient().sanitize_for_serialization(pods)["items"]
    (ended,) = replica_exits({}, items, ["worker-0", "worker-1"])
    assert (ended.replica, ended.exit_code, ended.time_ns) == ("worker-1", 2, 1767323045 * 10**9)


# The engine's calls, with no server at all: the client takes their arguments, failures are EngineErrors.


async def test_calls_without_a_server_fail_as_engine_errors(tmp_path: pathlib.Path) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}"))
    spec = spec_of(tmp_path, worker(2))

    async def specs(attempt: AttemptLaunch) -> JobSpec:
        return spec

    engine = KubernetesEngine(
        specs=specs, namespace=NAMESPACE, default_image=IMAGE, api_client=client, request_timeout=5
    )
    attempt = attempt_of(spec)
    name = job_name(attempt)
    with pytest.raises(
        EngineError,
        match=f"cannot create {NAMESPACE}/{name}.*/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs",
    ):
        await engine.launch(attempt)
    handle = ReplicaHandle("worker-0", 0, 0, 0, 0, "", "", "", engine_ref=f"{NAMESPACE}/{name}")
    assert engine.poll([handle]) == []  # nothing seen yet; a failed look is no exit
    with pytest.raises(EngineError, match=f"cannot delete {NAMESPACE}/{name}.*propagationPolicy=Foreground"):
        await engine.kill([handle], grace=1)
