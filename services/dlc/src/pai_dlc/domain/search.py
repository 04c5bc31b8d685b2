"""Hyperparameter search, Katib-shaped: the space, the assignments, the objective, early stopping."""

from __future__ import annotations

import enum
import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from pai_common.errors import FieldViolation
from pai_dlc.domain.spec import JobSpec

MAX_GRID = 10_000
Points = Sequence[tuple[int, float]]  # (step, value) in report order


class Goal(enum.IntEnum):
    GOAL_UNSPECIFIED = 0
    MINIMIZE = 1
    MAXIMIZE = 2


class Strategy(enum.IntEnum):
    STRATEGY_UNSPECIFIED = 0
    LATEST = 1
    MIN = 2
    MAX = 3


class Algorithm(enum.IntEnum):
    TYPE_UNSPECIFIED = 0
    GRID = 1
    RANDOM = 2


class ParameterType(enum.IntEnum):
    TYPE_UNSPECIFIED = 0
    DOUBLE = 1
    INT = 2
    CATEGORICAL = 3
    DISCRETE = 4


@dataclass(frozen=True, slots=True)
class Objective:
    metric_key: str = ""
    goal: Goal = Goal.GOAL_UNSPECIFIED
    target_value: float | None = None
    strategy: Strategy = Strategy.STRATEGY_UNSPECIFIED
    additional_metric_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str = ""
    type: ParameterType = ParameterType.TYPE_UNSPECIFIED
    min: float = 0.0
    max: float = 0.0
    step: float = 0.0
    values: tuple[str, ...] = ()
    log_scale: bool = False


@dataclass(frozen=True, slots=True)
class EarlyStopping:
    """The median rule (Katib's `medianstop`)."""

    min_trials_required: int = 0
    start_step: int = 0


@dataclass(frozen=True, slots=True)
class SweepSpec:
    job_template: JobSpec = field(default_factory=JobSpec)
    objective: Objective = field(default_factory=Objective)
    algorithm: Algorithm = Algorithm.TYPE_UNSPECIFIED
    seed: int = 0
    parameters: tuple[Parameter, ...] = ()
    parallelism: int = 0
    max_trials: int = 0
    max_failed_trials: int | None = None
    early_stopping: EarlyStopping | None = None


def _fmt(x: float, integer: bool) -> str:
    # 0.1 + 2 * 0.1 is 0.3, not 0.30000000000000004
    return str(round(x)) if integer else repr(float(f"{x:.12g}"))


def values_of(p: Parameter) -> list[str]:
    """A parameter's grid values, as the strings the trial jobs get."""
    if p.type in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
        return list(p.values)
    integer = p.type == ParameterType.INT
    step = p.step or (1.0 if integer else 0.0)
    if step <= 0:
        raise ValueError(f"{p.name}: a DOUBLE parameter needs `step` for a grid")
    out: list[str] = []
    if p.log_scale:
        x, hi = math.log(p.min), math.log(p.max)
        while x <= hi + 1e-12 and len(out) <= MAX_GRID:
            out.append(_fmt(math.exp(x), integer))
            x += step
    else:
        n = 0
        while (x := p.min + n * step) <= p.max + 1e-12 and len(out) <= MAX_GRID:
            out.append(_fmt(x, integer))
            n += 1
    return list(dict.fromkeys(out))  # INT on a log scale can repeat


def validate(spec: SweepSpec, where: str = "sweep.spec") -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if not spec.objective.metric_key:
        out.append(FieldViolation(f"{where}.objective.metric_key", "the metric to optimise is required"))
    if spec.objective.goal == Goal.GOAL_UNSPECIFIED:
        out.append(FieldViolation(f"{where}.objective.goal", "MINIMIZE or MAXIMIZE is required"))
    if not spec.parameters:
        out.append(FieldViolation(f"{where}.parameters", "at least one parameter is required"))
    names: set[str] = set()
    for i, p in enumerate(spec.parameters):
        at = f"{where}.parameters[{i}]"
        if p.name in names:
            out.append(FieldViolation(f"{at}.name", f"{p.name} appears twice"))
        names.add(p.name)
        out += _parameter_problems(p, at, spec.algorithm)
    if spec.algorithm == Algorithm.RANDOM and spec.max_trials <= 0:
        out.append(FieldViolation(f"{where}.max_trials", "RANDOM needs max_trials"))
    if not out and spec.algorithm != Algorithm.RANDOM:
        size = math.prod(len(values_of(p)) for p in spec.parameters)
        if size > MAX_GRID:
            out.append(
                FieldViolation(f"{where}.parameters", f"the grid has {size} points; at most {MAX_GRID}")
            )
    return out


def _parameter_problems(p: Parameter, at: str, algorithm: Algorithm) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if p.type == ParameterType.TYPE_UNSPECIFIED:
        out.append(FieldViolation(f"{at}.type", "a type is required"))
    elif p.type in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
        if not p.values:
            out.append(FieldViolation(f"{at}.values", "values are required"))
        for v in p.values if p.type == ParameterType.DISCRETE else ():
            try:
                float(v)
            except ValueError:
                out.append(FieldViolation(f"{at}.values", f"{v!r} is not a number"))
    elif not (math.isfinite(p.min) and math.isfinite(p.max) and math.isfinite(p.step)):
        out.append(FieldViolation(f"{at}.min", "min, max and step must be finite numbers"))
    else:
        if p.min > p.max:
            out.append(FieldViolation(f"{at}.min", "min is above max"))
        if p.log_scale and p.min <= 0:
            out.append(FieldViolation(f"{at}.min", "a log scale needs min > 0"))
        if algorithm != Algorithm.RANDOM and p.type == ParameterType.DOUBLE and p.step <= 0:
            out.append(FieldViolation(f"{at}.step", "a DOUBLE parameter needs `step` for a grid"))
    return out


def assignments(spec: SweepSpec) -> list[dict[str, str]]:
    """Every trial's assignment, in order: the grid (first parameter slowest), or seeded samples."""
    if spec.algorithm == Algorithm.RANDOM:
        rng = random.Random(spec.seed)
        return [{p.name: _sample(p, rng) for p in spec.parameters} for _ in range(spec.max_trials)]
    names = [p.name for p in spec.parameters]
    grid = [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*map(values_of, spec.parameters))
    ]
    return grid[: spec.max_trials] if spec.max_trials else grid


def _sample(p: Parameter, rng: random.Random) -> str:
    if p.type in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
        return rng.choice(list(p.values))
    x = math.exp(rng.uniform(math.log(p.min), math.log(p.max))) if p.log_scale else rng.uniform(p.min, p.max)
    return _fmt(x, p.type == ParameterType.INT)


def objective_value(points: Points, objective: Objective) -> float | None:
    """A trial's objective value from its reported points (None before the first report)."""
    if not points:
        return None
    values = [v for _, v in points]
    strategy = objective.strategy
    if strategy == Strategy.STRATEGY_UNSPECIFIED:
        strategy = Strategy.MIN if objective.goal == Goal.MINIMIZE else Strategy.MAX
    if strategy == Strategy.LATEST:
        return values[-1]
    return min(values) if strategy == Strategy.MIN else max(values)


def better(a: float, b: float, goal: Goal) -> bool:
    return a < b if goal == Goal.MINIMIZE else a > b


def reached(value: float, objective: Objective) -> bool:
    if objective.target_value is None:
        return False
    t = objective.target_value
    return value <= t if objective.goal == Goal.MINIMIZE else value >= t


def median_stop(running: Points, completed: Sequence[Points], goal: Goal, rule: EarlyStopping) -> bool:
    """Katib's median rule: stop when the trial's best value so far is worse than the median of the
    completed trials' running averages up to the same step."""
    min_trials = rule.min_trials_required or 3
    start_step = rule.start_step or 4
    if len(completed) < min_trials or not running:
        return False
    step = running[-1][0]
    if step < start_step:
        return False
    best = min(v for _, v in running) if goal == Goal.MINIMIZE else max(v for _, v in running)
    averages = [statistics.fmean(upto) for pts in completed if (upto := [v for s, v in pts if s <= step])]
    if len(averages) < min_trials:
        return False
    return better(statistics.median(averages), best, goal)
