"""PyTorchJob manifests for the tests: the schemas they must pass, and specs and attempts built the
way dlc's controller builds them.

The schemas: the PyTorchJob CRD's OpenAPI v3 schema (vendored from training-operator, see
`pai_dlc/engine/schemas/README.md`) with `jsonschema`, every replica type's pod template as a Pod
against the Kubernetes core schema with `kubernetes-validate` (strict), and the rules of the
training operator's admission webhook.
"""

from __future__ import annotations

import copy
import functools
import pathlib
import re
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

import pai_dlc.engine
from pai.dlc.v1.job_spec_pb2 import JobSpec, ReplicaSpec
from pai_dlc.domain import spec as d
from pai_dlc.domain.env import Attempt, Cluster, hyperparameter_args, replica_env
from pai_dlc.domain.spec import file_uri, local_path, normalize, replicas
from pai_dlc.engine.pytorchjob import pytorchjob_manifest
from pai_dlc.mapping.specs import spec_from
from pai_runtime.types import GangLaunch, ReplicaLaunch

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


@functools.cache
def crd_validator() -> jsonschema.Draft7Validator:
    """The PyTorchJob CRD's schema, made strict (each test module has it as a fixture)."""
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


# Specs and attempts, built the way dlc builds them: a spec as the API takes it (written here as the
# protobuf message, which is shorter), turned into the domain's and normalized.


def spec_of(tmp: pathlib.Path, *specs: ReplicaSpec, with_code: bool = True, **kw: Any) -> d.JobSpec:
    if with_code:
        (tmp / "code").mkdir(exist_ok=True)
        kw.setdefault("code", {"uri": file_uri(tmp / "code")})
    job = spec_from(JobSpec(replica_specs=list(specs), engine=JobSpec.KUBERNETES, **kw))
    return normalize(job, default_engine=d.Engine.LOCAL, storage_root=tmp / "storage", uid=UID)


def attempt_of(spec: d.JobSpec, attempt: int = 0, job: str = JOB, uid: str = UID) -> GangLaunch:
    everyone = replicas(spec)
    cluster = Cluster("127.0.0.1", 29500, {r.name: 29501 + r.rank for r in everyone})
    code = str(local_path(spec.code.uri)) if spec.code.uri else None
    return GangLaunch(
        owner=job,
        uid=uid,
        attempt=attempt,
        run_dir="/unused",
        replicas=tuple(
            ReplicaLaunch(
                replica=r.name,
                rank=r.rank,
                command=(*r.spec.command, *r.spec.args, *hyperparameter_args(spec)),
                env=replica_env(Attempt(job, uid, attempt, 0), spec, r, everyone, cluster),
                cwd=code,
            )
            for r in everyone
        ),
    )


def manifest_of(spec: d.JobSpec, attempt: int = 0, **kw: Any) -> dict[str, Any]:
    return pytorchjob_manifest(
        attempt_of(spec, attempt), spec, namespace=NAMESPACE, default_image=IMAGE, **kw
    )


def worker(count: int = 2, **kw: Any) -> ReplicaSpec:
    return ReplicaSpec(role=ReplicaSpec.WORKER, count=count, command=["python", "train.py"], **kw)


def master(**kw: Any) -> ReplicaSpec:
    return ReplicaSpec(role=ReplicaSpec.MASTER, command=["python", "train.py"], **kw)


def container(manifest: dict[str, Any], rtype: str) -> dict[str, Any]:
    (c,) = manifest["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names)), "an env var is set twice"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
