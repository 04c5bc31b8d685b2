"""Hyperparameter sweeps, Katib-shaped: the search space, the assignments, the objective, early stopping.

Pure functions over the `SweepSpec` message; the sweep controller turns assignments into ordinary
jobs and feeds the trials' reported metrics back in here.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence

from pai.dlc.v1 import sweep_pb2
from pai_dlc.model.spec import Violation

SweepSpec = sweep_pb2.SweepSpec
P = sweep_pb2.ParameterSpec
Goal = sweep_pb2.Objective.Goal
MAX_GRID = 10_000

Points = Sequence[tuple[int, float]]  # (step, value) in report order


def _fmt(x: float, integer: bool) -> str:
    return (
        str(round(x)) if integer else repr(float(f"{x:.12g}"))
    )  # 0.1 + 2 * 0.1 is 0.3, not 0.30000000000000004


def values_of(p: sweep_pb2.ParameterSpec) -> list[str]:
    """A parameter's grid values, as the strings the trial jobs get."""
    if p.type in (P.CATEGORICAL, P.DISCRETE):
        return list(p.values)
    integer = p.type == P.INT
    step = p.step or (1.0 if integer else 0.0)
    if step <= 0:
        raise ValueError(f"{p.name}: a DOUBLE parameter needs `step` for a grid")
    out: list[str] = []
    if p.log_scale:
        lo, hi = math.log(p.min), math.log(p.max)
        x = lo
        while x <= hi + 1e-12 and len(out) <= MAX_GRID:
            out.append(_fmt(math.exp(x), integer))
            x += step
    else:
        n = 0
        while (x := p.min + n * step) <= p.max + 1e-12 and len(out) <= MAX_GRID:
            out.append(_fmt(x, integer))
            n += 1
    return list(dict.fromkeys(out))  # INT on a log scale can repeat


def validate(spec: sweep_pb2.SweepSpec) -> list[Violation]:
    out: list[Violation] = []
    where = "sweep.spec"
    if not spec.objective.metric_key:
        out.append(Violation(f"{where}.objective.metric_key", "the metric to optimise is required"))
    if spec.objective.goal == Goal.GOAL_UNSPECIFIED:
        out.append(Violation(f"{where}.objective.goal", "MINIMIZE or MAXIMIZE is required"))
    if not spec.parameters:
        out.append(Violation(f"{where}.parameters", "at least one parameter is required"))
    names: set[str] = set()
    for i, p in enumerate(spec.parameters):
        at = f"{where}.parameters[{i}]"
        if p.name in names:
            out.append(Violation(f"{at}.name", f"{p.name} appears twice"))
        names.add(p.name)
        if p.type == P.TYPE_UNSPECIFIED:
            out.append(Violation(f"{at}.type", "a type is required"))
        elif p.type in (P.CATEGORICAL, P.DISCRETE):
            if not p.values:
                out.append(Violation(f"{at}.values", "values are required"))
            if p.type == P.DISCRETE:
                for v in p.values:
                    try:
                        float(v)
                    except ValueError:
                        out.append(Violation(f"{at}.values", f"{v!r} is not a number"))
        elif not (math.isfinite(p.min) and math.isfinite(p.max) and math.isfinite(p.step)):
            out.append(Violation(f"{at}.min", "min, max and step must be finite numbers"))
        else:
            if p.min > p.max:
                out.append(Violation(f"{at}.min", "min is above max"))
            if p.log_scale and p.min <= 0:
                out.append(Violation(f"{at}.min", "a log scale needs min > 0"))
            if spec.algorithm.type != sweep_pb2.Algorithm.RANDOM and p.type == P.DOUBLE and p.step <= 0:
                out.append(Violation(f"{at}.step", "a DOUBLE parameter needs `step` for a grid"))
    if spec.algorithm.type == sweep_pb2.Algorithm.RANDOM and spec.max_trials <= 0:
        out.append(Violation(f"{where}.max_trials", "RANDOM needs max_trials"))
    if not out and spec.algorithm.type != sweep_pb2.Algorithm.RANDOM:
        size = math.prod(len(values_of(p)) for p in spec.parameters)
        if size > MAX_GRID:
            out.append(Violation(f"{where}.parameters", f"the grid has {size} points; at most {MAX_GRID}"))
    return out


def assignments(spec: sweep_pb2.SweepSpec) -> list[dict[str, str]]:
    """Every trial's assignment, in order: the grid (first parameter slowest), or seeded samples."""
    names = [p.name for p in spec.parameters]
    if spec.algorithm.type == sweep_pb2.Algorithm.RANDOM:
        rng = random.Random(spec.algorithm.seed)
        return [{p.name: _sample(p, rng) for p in spec.parameters} for _ in range(spec.max_trials)]
    grid = [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*map(values_of, spec.parameters))
    ]
    return grid[: spec.max_trials] if spec.max_trials else grid


def _sample(p: sweep_pb2.ParameterSpec, rng: random.Random) -> str:
    if p.type in (P.CATEGORICAL, P.DISCRETE):
        return rng.choice(list(p.values))
    x = math.exp(rng.uniform(math.log(p.min), math.log(p.max))) if p.log_scale else rng.uniform(p.min, p.max)
    return _fmt(x, p.type == P.INT)


def objective(points: Points, objective: sweep_pb2.Objective) -> float | None:
    """A trial's objective value from its reported points (None before the first report)."""
    if not points:
        return None
    values = [v for _, v in points]
    strategy = objective.strategy
    if strategy == sweep_pb2.Objective.STRATEGY_UNSPECIFIED:
        strategy = sweep_pb2.Objective.MIN if objective.goal == Goal.MINIMIZE else sweep_pb2.Objective.MAX
    if strategy == sweep_pb2.Objective.LATEST:
        return values[-1]
    return min(values) if strategy == sweep_pb2.Objective.MIN else max(values)


def better(a: float, b: float, goal: int) -> bool:
    return a < b if goal == Goal.MINIMIZE else a > b


def reached(value: float, objective: sweep_pb2.Objective) -> bool:
    if not objective.HasField("target_value"):
        return False
    t = objective.target_value
    return value <= t if objective.goal == Goal.MINIMIZE else value >= t


def median_stop(
    running: Points, completed: Sequence[Points], goal: int, min_trials: int, start_step: int
) -> bool:
    """Katib's median rule: stop when the trial's best value so far is worse than the median of the
    completed trials' running averages up to the same step."""
    min_trials = min_trials or 3
    start_step = start_step or 4
    if len(completed) < min_trials or not running:
        return False
    step = running[-1][0]
    if step < start_step:
        return False
    best = min(v for _, v in running) if goal == Goal.MINIMIZE else max(v for _, v in running)
    averages = []
    for pts in completed:
        upto = [v for s, v in pts if s <= step]
        if upto:
            averages.append(statistics.fmean(upto))
    if len(averages) < min_trials:
        return False
    return better(statistics.median(averages), best, goal)
