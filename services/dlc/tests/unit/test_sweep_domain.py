"""Unit tests of the sweep search space, objective and median stopping rule."""

from __future__ import annotations

from pai.dlc.v1 import sweep_pb2
from pai_dlc.model import sweep as search

P = sweep_pb2.ParameterSpec
O = sweep_pb2.Objective  # noqa: E741


def spec(*params: sweep_pb2.ParameterSpec, **kw: object) -> sweep_pb2.SweepSpec:
    s = sweep_pb2.SweepSpec(parameters=params, objective=O(metric_key="loss", goal=O.MINIMIZE), **kw)  # type: ignore[arg-type]
    return s


def test_grid_is_every_combination_first_parameter_slowest() -> None:
    s = spec(
        P(name="lr", type=P.DOUBLE, min=0.1, max=0.3, step=0.1),
        P(name="opt", type=P.CATEGORICAL, values=["sgd", "adam"]),
    )
    got = search.assignments(s)
    assert [(a["lr"], a["opt"]) for a in got] == [
        ("0.1", "sgd"), ("0.1", "adam"), ("0.2", "sgd"), ("0.2", "adam"),
        ("0.3", "sgd"), ("0.3", "adam"),
    ]  # fmt: skip
    s.max_trials = 2
    assert len(search.assignments(s)) == 2
    ints = search.values_of(P(name="bs", type=P.INT, min=16, max=128, step=1, log_scale=True))
    assert ints == ["16", "43", "118"]  # steps of 1 in the natural logarithm


def test_random_is_seeded_and_in_range() -> None:
    s = spec(P(name="lr", type=P.DOUBLE, min=1e-4, max=1e-1, log_scale=True), max_trials=20)
    s.algorithm.type = sweep_pb2.Algorithm.RANDOM
    s.algorithm.seed = 7
    a, b = search.assignments(s), search.assignments(s)
    assert a == b and len(a) == 20
    assert all(1e-4 <= float(x["lr"]) <= 1e-1 for x in a)
    s.algorithm.seed = 8
    assert search.assignments(s) != a


def test_validate_names_each_problem() -> None:
    bad = spec(
        P(name="a", type=P.DOUBLE, min=1, max=0),
        P(name="a", type=P.DISCRETE, values=["x"]),
        P(name="c", type=P.INT, min=0, max=4, log_scale=True),
    )
    bad.objective.goal = O.GOAL_UNSPECIFIED
    fields = {v.field for v in search.validate(bad)}
    assert {
        "sweep.spec.objective.goal",
        "sweep.spec.parameters[0].min",
        "sweep.spec.parameters[0].step",
        "sweep.spec.parameters[1].name",
        "sweep.spec.parameters[1].values",
        "sweep.spec.parameters[2].min",
    } <= fields
    inf = spec(P(name="x", type=P.INT, min=0, max=float("inf")))
    assert [v.field for v in search.validate(inf)] == ["sweep.spec.parameters[0].min"]
    huge = spec(*(P(name=f"p{i}", type=P.INT, min=0, max=9) for i in range(5)))
    assert [v.field for v in search.validate(huge)] == ["sweep.spec.parameters"]
    rnd = spec(P(name="lr", type=P.DOUBLE, min=0, max=1))
    rnd.algorithm.type = sweep_pb2.Algorithm.RANDOM
    assert [v.field for v in search.validate(rnd)] == ["sweep.spec.max_trials"]


def test_objective_strategies_and_target() -> None:
    pts = [(1, 3.0), (2, 1.0), (3, 2.0)]
    o = O(metric_key="loss", goal=O.MINIMIZE)
    assert search.objective(pts, o) == 1.0
    o.strategy = O.LATEST
    assert search.objective(pts, o) == 2.0
    assert search.objective([], o) is None
    o2 = O(metric_key="acc", goal=O.MAXIMIZE)
    assert search.objective(pts, o2) == 3.0
    assert search.better(0.9, 0.8, O.MAXIMIZE) and search.better(0.1, 0.2, O.MINIMIZE)
    assert not search.reached(0.5, o)
    o.target_value = 0.5
    assert search.reached(0.4, o) and not search.reached(0.6, o)


def test_median_rule_stops_a_trial_worse_than_the_median() -> None:
    done = [[(s, 1.0 / s) for s in range(1, 11)] for _ in range(3)]  # running averages well below 1
    bad = [(s, 2.0) for s in range(1, 6)]
    good = [(s, 0.01) for s in range(1, 6)]
    assert search.median_stop(bad, done, O.MINIMIZE, 3, 4)
    assert not search.median_stop(good, done, O.MINIMIZE, 3, 4)
    assert not search.median_stop(bad[:3], done, O.MINIMIZE, 3, 4)  # before start_step
    assert not search.median_stop(bad, done[:2], O.MINIMIZE, 3, 4)  # too few completed trials
