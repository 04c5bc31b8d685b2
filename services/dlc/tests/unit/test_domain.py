"""Unit tests of dlc's pure domain: spec defaults and checks, replica environment, exit verdicts."""

from __future__ import annotations

import json
import pathlib

import pytest

from pai_dlc.engine.base import ReplicaExit
from pai_dlc.model.env import Cluster, hp_key, hyperparameter_args, replica_env
from pai_dlc.model.lifecycle import TERMINAL, State, can_move, judge
from pai_dlc.model.spec import JobSpec, ReplicaSpec, Role, local_path, normalize, replicas, validate

LOCAL_ONLY = frozenset({JobSpec.LOCAL})


def pytorch(workers: int = 2, master: bool = False, **kw: object) -> JobSpec:
    specs = []
    if master:
        specs.append(ReplicaSpec(role=Role.MASTER, command=["python", "train.py"]))
    specs.append(ReplicaSpec(role=Role.WORKER, count=workers, command=["python", "train.py"]))
    return JobSpec(replica_specs=specs, **kw)  # type: ignore[arg-type]


def norm(spec: JobSpec, tmp: pathlib.Path) -> JobSpec:
    return normalize(spec, default_engine=JobSpec.LOCAL, storage_root=tmp, uid="u1")


def test_normalize_fills_every_default(tmp_path: pathlib.Path) -> None:
    spec = norm(JobSpec(replica_specs=[ReplicaSpec(role=Role.WORKER, command=["true"])]), tmp_path)
    assert spec.kind == JobSpec.PYTORCH and spec.engine == JobSpec.LOCAL
    rs = spec.replica_specs[0]
    assert (rs.count, rs.processes_per_replica, rs.restart_policy) == (1, 1, ReplicaSpec.ON_FAILURE)
    assert local_path(spec.checkpoint_uri) == (tmp_path / "jobs/u1/checkpoints").resolve()
    assert local_path(spec.output_uri) == (tmp_path / "jobs/u1/output").resolve()
    given = norm(pytorch(checkpoint_uri="file:///data/ck", engine=JobSpec.LOCAL), tmp_path)
    assert given.checkpoint_uri == "file:///data/ck"


def test_validate_names_each_problem(tmp_path: pathlib.Path) -> None:
    assert validate(norm(pytorch(), tmp_path), engines=LOCAL_ONLY) == []
    bad = JobSpec(
        kind=JobSpec.PYTORCH,
        replica_specs=[
            ReplicaSpec(role=Role.PS, command=["x"], instance_type="instanceTypes/gpu.small"),
            ReplicaSpec(role=Role.WORKER),
            ReplicaSpec(role=Role.WORKER, command=["x"]),
        ],
        output_uri="s3://bucket/out",
        data_sources=[
            {"dataset_version": "workspaces/w/datasets/d/versions/1"},
            {"uri": "gs://b/x"},
            {"dataset_version": "workspaces/w/datasets/d/versions/2", "resolved_uri": "s3://b/d/2"},
        ],
        code={"uri": f"file://{tmp_path}/missing"},
    )
    fields = {v.field: v.description for v in validate(norm(bad, tmp_path), engines=LOCAL_ONLY)}
    assert "a PYTORCH job has roles MASTER, WORKER" in fields["job.spec.replica_specs[0].role"]
    assert "dsw's catalog" in fields["job.spec.replica_specs[0].instance_type"]
    assert "command is required" in fields["job.spec.replica_specs[1].command"]
    assert "appears twice" in fields["job.spec.replica_specs[2].role"]
    assert "only file:// URIs" in fields["job.spec.output_uri"]
    assert "is not a directory" in fields["job.spec.code.uri"]
    assert "not resolved" in fields["job.spec.data_sources[0].dataset_version"]
    assert "only file:// URIs" in fields["job.spec.data_sources[2].dataset_version"]
    assert "only file:// URIs" in fields["job.spec.data_sources[1].uri"]
    two_masters = pytorch(master=True)
    two_masters.replica_specs[0].count = 2
    ray = norm(pytorch(engine=JobSpec.RAY), tmp_path)
    assert [v.field for v in validate(norm(two_masters, tmp_path), engines=LOCAL_ONLY)] == [
        "job.spec.replica_specs[0].count"
    ]
    assert [v.field for v in validate(ray, engines=LOCAL_ONLY)] == ["job.spec.engine"]
    model = norm(pytorch(), tmp_path)
    for wrong in ("workspaces/other/models/m", "workspaces/w/models/m:1", "workspaces/w/models/m/versions/2"):
        model.output_model = wrong
        assert [v.field for v in validate(model, engines=LOCAL_ONLY, workspace="workspaces/w")] == [
            "job.spec.output_model"
        ]
    model.output_model = "workspaces/w/models/m"
    assert validate(model, engines=LOCAL_ONLY, workspace="workspaces/w") == []
    empty = norm(JobSpec(), tmp_path)
    assert [v.field for v in validate(empty, engines=LOCAL_ONLY)] == ["job.spec.replica_specs"]


def test_replicas_rank_the_master_first(tmp_path: pathlib.Path) -> None:
    rs = replicas(norm(pytorch(workers=2, master=True), tmp_path))
    assert [(r.name, r.rank) for r in rs] == [("master-0", 0), ("worker-0", 1), ("worker-1", 2)]


def test_pytorch_env_follows_the_torchrun_contract(tmp_path: pathlib.Path) -> None:
    spec = norm(pytorch(workers=2, hyperparameters={"lr": "0.1", "batch-size": "64"}), tmp_path)
    spec.replica_specs[0].env["RANK"] = "99"  # dlc's own variables win over the user's
    spec.replica_specs[0].env["MY_VAR"] = "kept"
    spec.replica_specs[0].resources.cpu_milli = 2500
    spec.data_sources.add(uri="file:///data/train")
    spec.data_sources.add(uri="file:///data/eval", env_var="EVAL_DIR")
    everyone = replicas(spec)
    cluster = Cluster("127.0.0.1", 29500, {"worker-0": 1, "worker-1": 2})
    env = replica_env(
        job="workspaces/w/jobs/j",
        uid="u1",
        spec=spec,
        replica=everyone[1],
        everyone=everyone,
        cluster=cluster,
        attempt=2,
        restart_count=1,
    )
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] == "29500"
    assert (env["WORLD_SIZE"], env["RANK"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == (
        "2",
        "1",
        "0",
        "1",
    )
    assert (env["PET_NNODES"], env["PET_NODE_RANK"], env["PET_NPROC_PER_NODE"]) == ("2", "1", "1")
    assert env["OMP_NUM_THREADS"] == "2" and env["PYTHONUNBUFFERED"] == "1"
    assert (
        env["PAI_RESTART_COUNT"] == "1" and env["PAI_ATTEMPT"] == "2" and env["PAI_JOB_NAME"].endswith("/j")
    )
    assert env["PAI_CHECKPOINT_DIR"] == str(local_path(spec.checkpoint_uri))
    assert env["MY_VAR"] == "kept"
    assert (env["PAI_DATA_DIR"], env["PAI_DATA_DIR_0"], env["EVAL_DIR"]) == (
        "/data/train",
        "/data/train",
        "/data/eval",
    )
    assert env["PAI_HP_BATCH_SIZE"] == "64" and json.loads(env["PAI_HYPERPARAMETERS"]) == {
        "batch-size": "64",
        "lr": "0.1",
    }
    assert hyperparameter_args(spec) == ["--batch-size=64", "--lr=0.1"]
    spec.omit_hyperparameter_args = True
    assert hyperparameter_args(spec) == []
    assert hp_key("a.b-c") == "PAI_HP_A_B_C"


def test_tensorflow_env_is_a_tf_config(tmp_path: pathlib.Path) -> None:
    spec = norm(
        JobSpec(
            kind=JobSpec.TENSORFLOW,
            replica_specs=[
                ReplicaSpec(role=Role.CHIEF, command=["x"]),
                ReplicaSpec(role=Role.WORKER, count=2, command=["x"]),
            ],
        ),
        tmp_path,
    )
    everyone = replicas(spec)
    cluster = Cluster("h", 1, {"chief-0": 10, "worker-0": 11, "worker-1": 12})
    env = replica_env(
        job="j", uid="u", spec=spec, replica=everyone[2], everyone=everyone, cluster=cluster, attempt=0,
        restart_count=0,
    )  # fmt: skip
    tf = json.loads(env["TF_CONFIG"])
    assert tf == {
        "cluster": {"chief": ["h:10"], "worker": ["h:11", "h:12"]},
        "task": {"type": "worker", "index": 1},
    }
    assert "RANK" not in env


def ok(name: str) -> ReplicaExit:
    return ReplicaExit(name, 0)


def test_judge_success_needs_every_pytorch_replica(tmp_path: pathlib.Path) -> None:
    spec = norm(pytorch(workers=2), tmp_path)
    rs = replicas(spec)
    assert judge(spec, rs, {"worker-0": ok("worker-0")}, 0).action == "run"
    both = {"worker-0": ok("worker-0"), "worker-1": ok("worker-1")}
    assert judge(spec, rs, both, 0).action == "succeed"


def test_judge_restarts_until_max_restarts_and_names_the_first_failing_rank(tmp_path: pathlib.Path) -> None:
    spec = norm(pytorch(workers=3, max_restarts=2), tmp_path)
    rs = replicas(spec)
    exits = {
        "worker-2": ReplicaExit("worker-2", None, signal=9, message="killed by signal SIGKILL (9)"),
        "worker-1": ReplicaExit("worker-1", 1, message="exit code 1"),
    }
    v = judge(spec, rs, exits, 0)
    assert v.action == "restart" and v.culprit is not None and v.culprit.replica == "worker-1"
    assert "worker-1 (rank 1) exit code 1" in v.message
    v = judge(spec, rs, exits, 2)
    assert (v.action, v.reason) == ("fail", "MAX_RESTARTS_EXCEEDED")
    never = norm(pytorch(workers=1), tmp_path)
    v = judge(never, replicas(never), {"worker-0": ReplicaExit("worker-0", 1, message="exit code 1")}, 0)
    assert (v.action, v.reason) == ("fail", "REPLICA_FAILED")  # max_restarts 0
    assert "worker-0 (rank 0) exit code 1" in v.message


@pytest.mark.parametrize(
    ("exit_code", "signal", "lost", "action"),
    [(1, 0, False, "fail"), (127, 0, False, "fail"), (137, 0, False, "restart"), (None, 9, False, "restart"),
     (None, 0, True, "restart")],
)  # fmt: skip
def test_exit_code_policy_retries_only_signals(
    exit_code: int | None, signal: int, lost: bool, action: str
) -> None:
    spec = pytorch(workers=1, max_restarts=3)
    spec.replica_specs[0].restart_policy = ReplicaSpec.EXIT_CODE
    ex = ReplicaExit("worker-0", exit_code, signal=signal, lost=lost)
    assert judge(spec, replicas(spec), {"worker-0": ex}, 0).action == action


def test_never_policy_fails_at_once(tmp_path: pathlib.Path) -> None:
    spec = norm(pytorch(workers=1, max_restarts=5), tmp_path)
    spec.replica_specs[0].restart_policy = ReplicaSpec.NEVER
    v = judge(spec, replicas(spec), {"worker-0": ReplicaExit("worker-0", None, signal=9)}, 0)
    assert v.action == "fail" and "NEVER" in v.message


def test_tensorflow_succeeds_with_its_chief(tmp_path: pathlib.Path) -> None:
    spec = norm(
        JobSpec(
            kind=JobSpec.TENSORFLOW,
            replica_specs=[
                ReplicaSpec(role=Role.CHIEF, command=["x"]),
                ReplicaSpec(role=Role.PS, command=["x"], instance_type="instanceTypes/gpu.small"),
            ],
        ),
        tmp_path,
    )
    assert judge(spec, replicas(spec), {"chief-0": ok("chief-0")}, 0).action == "succeed"


def test_state_machine() -> None:
    assert can_move(State.QUEUED, State.STARTING)
    assert can_move(State.RUNNING, State.PREEMPTED) and can_move(State.PREEMPTED, State.QUEUED)
    assert not can_move(State.SUCCEEDED, State.RUNNING)
    assert not can_move(State.CREATING, State.RUNNING)
    for t in TERMINAL:
        assert not can_move(t, State.QUEUED)


def test_the_first_replica_to_fail_is_the_culprit(tmp_path: pathlib.Path) -> None:
    # rank 1 failed first; rank 0 followed when its peer closed the connection
    spec = norm(pytorch(workers=2), tmp_path)
    exits = {
        "worker-0": ReplicaExit("worker-0", 1, message="exit code 1", time_ns=2_000),
        "worker-1": ReplicaExit("worker-1", 1, message="exit code 1", time_ns=1_000),
    }
    v = judge(spec, replicas(spec), exits, 0)
    assert v.culprit is not None and v.culprit.replica == "worker-1"
    exits["worker-1"] = ReplicaExit("worker-1", 1)  # time unknown: the known one wins
    v = judge(spec, replicas(spec), exits, 0)
    assert v.culprit is not None and v.culprit.replica == "worker-0"
