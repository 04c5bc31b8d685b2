"""Specs without I/O: defaults, checks, replicas, trial specs, and the replica environment."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from pai_dlc.domain.env import Attempt, Cluster, hp_key, hyperparameter_args, replica_env
from pai_dlc.domain.spec import (
    CodeSource,
    DataSource,
    Engine,
    JobSpec,
    Kind,
    ReplicaSpec,
    Resources,
    RestartPolicy,
    Role,
    for_trial,
    local_path,
    normalize,
    replicas,
    with_resolved_data,
)
from pai_dlc.domain.validation import validate

LOCAL_ONLY = frozenset({Engine.LOCAL})


def pytorch(workers: int = 2, master: bool = False, **kw: object) -> JobSpec:
    specs = [ReplicaSpec(role=Role.MASTER, command=("python", "train.py"))] if master else []
    specs.append(ReplicaSpec(role=Role.WORKER, count=workers, command=("python", "train.py")))
    return JobSpec(replica_specs=tuple(specs), **kw)  # type: ignore[arg-type]


def norm(spec: JobSpec, tmp: pathlib.Path) -> JobSpec:
    return normalize(spec, default_engine=Engine.LOCAL, storage_root=tmp, uid="u1")


def fields(spec: JobSpec, **kw: object) -> dict[str, str]:
    return {v.field: v.description for v in validate(spec, engines=LOCAL_ONLY, **kw)}  # type: ignore[arg-type]


def test_normalize_fills_every_default(tmp_path: pathlib.Path) -> None:
    spec = norm(JobSpec(replica_specs=(ReplicaSpec(role=Role.WORKER, command=("true",)),)), tmp_path)
    assert spec.kind == Kind.PYTORCH and spec.engine == Engine.LOCAL
    rs = spec.replica_specs[0]
    assert (rs.count, rs.processes_per_replica, rs.restart_policy) == (1, 1, RestartPolicy.ON_FAILURE)
    assert local_path(spec.checkpoint_uri) == (tmp_path / "jobs/u1/checkpoints").resolve()
    assert local_path(spec.output_uri) == (tmp_path / "jobs/u1/output").resolve()
    assert norm(pytorch(checkpoint_uri="file:///data/ck"), tmp_path).checkpoint_uri == "file:///data/ck"


def test_validate_names_each_problem(tmp_path: pathlib.Path) -> None:
    assert validate(norm(pytorch(), tmp_path), engines=LOCAL_ONLY) == []
    bad = JobSpec(
        kind=Kind.PYTORCH,
        replica_specs=(
            ReplicaSpec(role=Role.PS, command=("x",), instance_type="instanceTypes/gpu.small"),
            ReplicaSpec(role=Role.WORKER),
            ReplicaSpec(role=Role.WORKER, command=("x",)),
        ),
        output_uri="s3://bucket/out",
        data_sources=(
            DataSource(dataset_version="workspaces/w/datasets/d/versions/1"),
            DataSource(uri="gs://b/x"),
            DataSource(dataset_version="workspaces/w/datasets/d/versions/2", resolved_uri="s3://b/d/2"),
        ),
        code=CodeSource(uri="s3://code"),
    )
    got = fields(norm(bad, tmp_path))
    assert "a PYTORCH job has roles MASTER, WORKER" in got["job.spec.replica_specs[0].role"]
    assert "dsw's catalog" in got["job.spec.replica_specs[0].instance_type"]
    assert "command is required" in got["job.spec.replica_specs[1].command"]
    assert "appears twice" in got["job.spec.replica_specs[2].role"]
    assert "only file:// URIs" in got["job.spec.output_uri"]
    assert "only file:// URIs" in got["job.spec.code.uri"]
    assert "not resolved" in got["job.spec.data_sources[0].dataset_version"]
    assert "only file:// URIs" in got["job.spec.data_sources[2].dataset_version"]
    assert "only file:// URIs" in got["job.spec.data_sources[1].uri"]
    two_masters = norm(pytorch(master=True), tmp_path)
    two_masters = dataclasses.replace(
        two_masters,
        replica_specs=(
            dataclasses.replace(two_masters.replica_specs[0], count=2),
            two_masters.replica_specs[1],
        ),
    )
    assert list(fields(two_masters)) == ["job.spec.replica_specs[0].count"]
    assert list(fields(norm(pytorch(engine=Engine.RAY), tmp_path))) == ["job.spec.engine"]
    assert list(fields(norm(JobSpec(), tmp_path))) == ["job.spec.replica_specs"]
    assert list(fields(norm(pytorch(), tmp_path), where="sweep.spec.job_template")) == []


def test_the_output_model_must_be_a_model_of_the_jobs_workspace(tmp_path: pathlib.Path) -> None:
    for wrong in ("workspaces/other/models/m", "workspaces/w/models/m:1", "workspaces/w/models/m/versions/2"):
        model = norm(pytorch(output_model=wrong), tmp_path)
        assert list(fields(model, workspace="workspaces/w")) == ["job.spec.output_model"]
    assert (
        fields(norm(pytorch(output_model="workspaces/w/models/m"), tmp_path), workspace="workspaces/w") == {}
    )


def test_replicas_rank_the_coordinator_first(tmp_path: pathlib.Path) -> None:
    rs = replicas(norm(pytorch(workers=2, master=True), tmp_path))
    assert [(r.name, r.rank) for r in rs] == [("master-0", 0), ("worker-0", 1), ("worker-1", 2)]


def test_trials_get_their_assignment_and_directories_of_their_own() -> None:
    template = pytorch(hyperparameters={"lr": "0.1", "bs": "32"}, checkpoint_uri="file:///ck/", output_uri="")
    trial = for_trial(template, "trial-3", {"lr": "0.5"})
    assert trial.hyperparameters == {"lr": "0.5", "bs": "32"}
    assert (trial.checkpoint_uri, trial.output_uri) == ("file:///ck/trial-3", "")


def test_resolved_data_names_the_concrete_version() -> None:
    spec = pytorch(
        data_sources=(
            DataSource(dataset_version="workspaces/w/datasets/d/versions/@latest"),
            DataSource(uri="file:///x"),
        )
    )
    got = with_resolved_data(spec, {0: ("workspaces/w/datasets/d/versions/7", "file:///data/7")})
    assert [(d.dataset_version, d.resolved_uri) for d in got.data_sources] == [
        ("workspaces/w/datasets/d/versions/7", "file:///data/7"), ("", "file:///x")
    ]  # fmt: skip


def test_pytorch_env_follows_the_torchrun_contract(tmp_path: pathlib.Path) -> None:
    worker = ReplicaSpec(
        role=Role.WORKER,
        count=2,
        command=("x",),
        env={"RANK": "99", "MY_VAR": "kept"},
        resources=Resources(cpu_milli=2500),
    )
    spec = norm(
        JobSpec(
            replica_specs=(worker,), hyperparameters={"lr": "0.1", "batch-size": "64"},
            data_sources=(DataSource(uri="file:///data/train"), DataSource(uri="file:///data/eval", env_var="EVAL_DIR")),
        ),
        tmp_path,
    )  # fmt: skip
    everyone = replicas(spec)
    cluster = Cluster("127.0.0.1", 29500, {})
    env = replica_env(Attempt("workspaces/w/jobs/j", "u1", 2, 1), spec, everyone[1], everyone, cluster)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["WORLD_SIZE"], env["RANK"]) == (
        "127.0.0.1",
        "29500",
        "2",
        "1",
    )
    assert (env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"], env["PET_NNODES"], env["PET_NODE_RANK"]) == (
        "0",
        "1",
        "2",
        "1",
    )
    assert env["OMP_NUM_THREADS"] == "2" and env["PYTHONUNBUFFERED"] == "1" and env["MY_VAR"] == "kept"
    assert (env["PAI_RESTART_COUNT"], env["PAI_ATTEMPT"], env["PAI_JOB_NAME"]) == (
        "1",
        "2",
        "workspaces/w/jobs/j",
    )
    assert env["PAI_CHECKPOINT_DIR"] == str(local_path(spec.checkpoint_uri))
    assert (env["PAI_DATA_DIR"], env["PAI_DATA_DIR_0"], env["EVAL_DIR"]) == (
        "/data/train",
        "/data/train",
        "/data/eval",
    )
    assert env["PAI_HP_BATCH_SIZE"] == "64"
    assert json.loads(env["PAI_HYPERPARAMETERS"]) == {"batch-size": "64", "lr": "0.1"}
    assert hyperparameter_args(spec) == ["--batch-size=64", "--lr=0.1"]
    assert hyperparameter_args(dataclasses.replace(spec, omit_hyperparameter_args=True)) == []
    assert hp_key("a.b-c") == "PAI_HP_A_B_C"


def test_tensorflow_env_is_a_tf_config(tmp_path: pathlib.Path) -> None:
    spec = norm(
        JobSpec(
            kind=Kind.TENSORFLOW,
            replica_specs=(
                ReplicaSpec(role=Role.CHIEF, command=("x",)),
                ReplicaSpec(role=Role.WORKER, count=2, command=("x",)),
            ),
        ),
        tmp_path,
    )
    everyone = replicas(spec)
    cluster = Cluster("h", 1, {"chief-0": 10, "worker-0": 11, "worker-1": 12})
    env = replica_env(Attempt("j", "u", 0, 0), spec, everyone[2], everyone, cluster)
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"chief": ["h:10"], "worker": ["h:11", "h:12"]},
        "task": {"type": "worker", "index": 1},
    }
    assert "RANK" not in env
