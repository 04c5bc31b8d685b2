"""Sweeps without I/O: the search space, objectives, the median rule, and how a sweep follows its trials."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from pai_dlc.domain import search
from pai_dlc.domain.job import Job, JobState
from pai_dlc.domain.search import (
    Algorithm,
    EarlyStopping,
    Goal,
    Objective,
    Parameter,
    ParameterType,
    Strategy,
    SweepSpec,
)
from pai_dlc.domain.spec import JobSpec
from pai_dlc.domain.sweep import End, Sweep, SweepState, Trial, TrialCounts, TrialState, all_ended, best_of

P, T = ParameterType, TrialState
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def spec(*params: Parameter, **kw: object) -> SweepSpec:
    kw.setdefault("objective", Objective("loss", Goal.MINIMIZE))
    return SweepSpec(parameters=params, **kw)  # type: ignore[arg-type]


def test_the_grid_is_every_combination_first_parameter_slowest() -> None:
    s = spec(
        Parameter("lr", P.DOUBLE, 0.1, 0.3, 0.1), Parameter("opt", P.CATEGORICAL, values=("sgd", "adam"))
    )
    got = [(a["lr"], a["opt"]) for a in search.assignments(s)]
    assert got == [
        ("0.1", "sgd"),
        ("0.1", "adam"),
        ("0.2", "sgd"),
        ("0.2", "adam"),
        ("0.3", "sgd"),
        ("0.3", "adam"),
    ]
    assert len(search.assignments(dataclasses.replace(s, max_trials=2))) == 2
    ints = search.values_of(Parameter("bs", P.INT, 16, 128, 1, log_scale=True))
    assert ints == ["16", "43", "118"]  # steps of 1 in the natural logarithm


def test_random_is_seeded_and_in_range() -> None:
    s = spec(
        Parameter("lr", P.DOUBLE, 1e-4, 1e-1, log_scale=True),
        max_trials=20,
        algorithm=Algorithm.RANDOM,
        seed=7,
    )
    a, b = search.assignments(s), search.assignments(s)
    assert a == b and len(a) == 20 and all(1e-4 <= float(x["lr"]) <= 1e-1 for x in a)
    assert search.assignments(dataclasses.replace(s, seed=8)) != a


def test_validate_names_each_problem() -> None:
    bad = SweepSpec(
        parameters=(
            Parameter("a", P.DOUBLE, 1, 0),
            Parameter("a", P.DISCRETE, values=("x",)),
            Parameter("c", P.INT, 0, 4, log_scale=True),
        ),
        objective=Objective("loss", Goal.GOAL_UNSPECIFIED),
    )
    fields = {v.field for v in search.validate(bad)}
    assert {
        "sweep.spec.objective.goal", "sweep.spec.parameters[0].min", "sweep.spec.parameters[0].step",
        "sweep.spec.parameters[1].name", "sweep.spec.parameters[1].values", "sweep.spec.parameters[2].min",
    } <= fields  # fmt: skip
    inf = spec(Parameter("x", P.INT, 0, float("inf")))
    assert [v.field for v in search.validate(inf)] == ["sweep.spec.parameters[0].min"]
    huge = spec(*(Parameter(f"p{i}", P.INT, 0, 9) for i in range(5)))
    assert [v.field for v in search.validate(huge)] == ["sweep.spec.parameters"]
    rnd = spec(Parameter("lr", P.DOUBLE, 0, 1), algorithm=Algorithm.RANDOM)
    assert [v.field for v in search.validate(rnd)] == ["sweep.spec.max_trials"]


def test_objective_strategies_and_target() -> None:
    pts = [(1, 3.0), (2, 1.0), (3, 2.0)]
    o = Objective("loss", Goal.MINIMIZE)
    assert search.objective_value(pts, o) == 1.0
    assert search.objective_value(pts, dataclasses.replace(o, strategy=Strategy.LATEST)) == 2.0
    assert search.objective_value([], o) is None
    assert search.objective_value(pts, Objective("acc", Goal.MAXIMIZE)) == 3.0
    assert search.better(0.9, 0.8, Goal.MAXIMIZE) and search.better(0.1, 0.2, Goal.MINIMIZE)
    assert not search.reached(0.5, o)
    target = dataclasses.replace(o, target_value=0.5)
    assert search.reached(0.4, target) and not search.reached(0.6, target)


def test_the_median_rule_stops_a_trial_worse_than_the_median() -> None:
    done = [[(s, 1.0 / s) for s in range(1, 11)] for _ in range(3)]  # running averages well below 1
    bad, good = [(s, 2.0) for s in range(1, 6)], [(s, 0.01) for s in range(1, 6)]
    rule = EarlyStopping(3, 4)
    assert search.median_stop(bad, done, Goal.MINIMIZE, rule)
    assert not search.median_stop(good, done, Goal.MINIMIZE, rule)
    assert not search.median_stop(bad[:3], done, Goal.MINIMIZE, rule)  # before start_step
    assert not search.median_stop(bad, done[:2], Goal.MINIMIZE, rule)  # too few completed trials


def job(state: JobState, **kw: object) -> Job:
    return Job("workspaces/w/jobs/j", "u", JobSpec(), state=state, reason="R", message="m", **kw)  # type: ignore[arg-type]


def test_a_trial_follows_its_job_until_it_is_done() -> None:
    s = spec(
        Parameter("lr", P.DOUBLE, 0.1, 0.2, 0.1),
        objective=Objective("loss", Goal.MINIMIZE, additional_metric_keys=("acc",)),
    )
    t = Trial("t0", {"lr": "0.1"}, job="workspaces/w/jobs/j")
    t.observe(job(JobState.QUEUED), [], {}, s)
    assert t.state == T.PENDING
    t.observe(job(JobState.RUNNING, start_time=T0), [(1, 0.9), (2, 0.5)], {"acc": 0.7}, s)
    assert (t.state, t.start_time, t.objective_value, t.metrics) == (T.RUNNING, T0, 0.5, {"acc": 0.7})
    t.observe(job(JobState.FAILED, end_time=T0), [(3, 0.4)], {}, s)
    assert (t.state, t.reason, t.end_time, t.objective_value) == (T.FAILED, "R", T0, 0.4)
    t.observe(job(JobState.SUCCEEDED), [(4, 0.1)], {}, s)  # done: nothing changes any more
    assert (t.state, t.objective_value) == (T.FAILED, 0.4)
    gone = Trial("t1", {}, job="workspaces/w/jobs/x")
    gone.observe(None, [], {}, s)
    assert (gone.state, gone.reason) == (T.FAILED, "JOB_DELETED")


def trial(state: TrialState, value: float | None = None, name: str = "t") -> Trial:
    return Trial(name, {}, state=state, objective_value=value)


def test_the_best_trial_is_the_best_succeeded_one() -> None:
    s = spec(Parameter("x", P.INT, 0, 1))
    trials = [
        trial(T.SUCCEEDED, 0.3, "a"),
        trial(T.FAILED, 0.1, "b"),
        trial(T.SUCCEEDED, 0.2, "c"),
        trial(T.SUCCEEDED, None, "d"),
    ]
    assert best_of(trials, s) is trials[2]
    assert best_of(trials, dataclasses.replace(s, objective=Objective("acc", Goal.MAXIMIZE))) is trials[0]
    assert best_of([trial(T.RUNNING, 0.1)], s) is None


def sweep(state: SweepState = SweepState.RUNNING, reason: str = "RUNNING", **kw: object) -> Sweep:
    return Sweep(
        "workspaces/w/sweeps/s", "u", spec(Parameter("x", P.INT, 0, 3), **kw), state=state, reason=reason
    )


@pytest.mark.parametrize(
    ("reason", "end"),
    [
        ("STOP_REQUESTED", End(SweepState.STOPPED, "STOPPED", "stopped by a user")),
        ("MAX_FAILED_TRIALS_REACHED", End(SweepState.FAILED, "MAX_FAILED_TRIALS_REACHED", "why")),
        ("GOAL_REACHED", End(SweepState.SUCCEEDED, "GOAL_REACHED", "why")),
    ],
)
def test_a_stopping_sweep_ends_as_its_reason_says(reason: str, end: End) -> None:
    s = sweep(SweepState.STOPPING, reason)
    s.message = "why"
    assert s.ending([], None) == end


def test_a_sweep_ends_on_failures_or_the_target_and_stops_what_runs_first() -> None:
    failing = sweep(max_failed_trials=1)
    assert failing.ending([trial(T.FAILED)], None) is None
    assert failing.ending([trial(T.FAILED), trial(T.FAILED)], None) == End(
        SweepState.FAILED, "MAX_FAILED_TRIALS_REACHED", "2 trials failed"
    )
    target = sweep(objective=Objective("loss", Goal.MINIMIZE, target_value=0.2))
    best = trial(T.SUCCEEDED, 0.1, "a")
    end = target.ending([best], best)
    assert end == End(SweepState.SUCCEEDED, "GOAL_REACHED", "a reached the target")
    assert target.move(end, live=2) == End(SweepState.STOPPING, "GOAL_REACHED", "a reached the target")
    assert target.move(end, live=0) == end
    assert target.move(None, live=0) is None


def test_a_sweep_ends_once_every_planned_trial_has_ended() -> None:
    assert all_ended([trial(T.SUCCEEDED, 1.0)], planned=2, best=None) is None
    assert all_ended([trial(T.SUCCEEDED), trial(T.RUNNING)], planned=2, best=None) is None
    done = [trial(T.SUCCEEDED, 1.0, "a"), trial(T.FAILED)]
    assert all_ended(done, 2, done[0]) == End(
        SweepState.SUCCEEDED, "SUCCEEDED", "every trial ended; the best is a"
    )
    assert all_ended(done, 2, None) == End(
        SweepState.FAILED, "NO_SUCCESSFUL_TRIAL", "every trial ended and none succeeded"
    )


def test_counts_cover_the_planned_trials_not_started_yet() -> None:
    counts = TrialCounts.of([trial(T.SUCCEEDED), trial(T.RUNNING), trial(T.EARLY_STOPPED)], planned=5)
    assert counts == TrialCounts(total=5, pending=2, running=1, succeeded=1, early_stopped=1)


def test_a_state_change_is_recorded_with_a_snapshot() -> None:
    s = sweep()
    s.transition_to(SweepState.STOPPING, "STOP_REQUESTED", "stopping", T0)
    s.transition_to(SweepState.STOPPED, "STOPPED", "stopped", T0)
    changes = s.take_changes()
    assert [(c.previous, c.snapshot.state) for c in changes] == [
        (SweepState.RUNNING, SweepState.STOPPING), (SweepState.STOPPING, SweepState.STOPPED)
    ]  # fmt: skip
    assert s.end_time == T0 and s.changes == []
