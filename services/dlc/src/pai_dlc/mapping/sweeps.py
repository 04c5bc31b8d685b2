"""`pai.dlc.v1.Sweep`, its spec, its trials and their events ⇄ the domain's sweep types."""

from __future__ import annotations

from pai.dlc.v1 import events_pb2, sweep_pb2
from pai_common.events import OutboxEvent
from pai_common.wire import ts
from pai_dlc.domain import search as d
from pai_dlc.domain.sweep import Sweep, SweepChange, SweepState, Trial, TrialCounts, TrialState
from pai_dlc.mapping.jobs import SOURCE, when
from pai_dlc.mapping.specs import spec_from, spec_to


def sweep_spec_from(m: sweep_pb2.SweepSpec) -> d.SweepSpec:
    o = m.objective
    return d.SweepSpec(
        job_template=spec_from(m.job_template),
        objective=d.Objective(
            o.metric_key, d.Goal(o.goal), o.target_value if o.HasField("target_value") else None,
            d.Strategy(o.strategy), tuple(o.additional_metric_keys),
        ),
        algorithm=d.Algorithm(m.algorithm.type), seed=m.algorithm.seed,
        parameters=tuple(
            d.Parameter(p.name, d.ParameterType(p.type), p.min, p.max, p.step, tuple(p.values), p.log_scale)
            for p in m.parameters
        ),
        parallelism=m.parallelism, max_trials=m.max_trials,
        max_failed_trials=m.max_failed_trials if m.HasField("max_failed_trials") else None,
        early_stopping=(
            d.EarlyStopping(m.early_stopping.min_trials_required, m.early_stopping.start_step)
            if m.HasField("early_stopping") else None
        ),
    )  # fmt: skip


def sweep_spec_to(s: d.SweepSpec) -> sweep_pb2.SweepSpec:
    o = s.objective
    out = sweep_pb2.SweepSpec(
        job_template=spec_to(s.job_template),
        objective=sweep_pb2.Objective(
            metric_key=o.metric_key, goal=int(o.goal), target_value=o.target_value,  # type: ignore[arg-type]
            strategy=int(o.strategy), additional_metric_keys=list(o.additional_metric_keys),  # type: ignore[arg-type]
        ),
        algorithm=sweep_pb2.Algorithm(type=int(s.algorithm), seed=s.seed),  # type: ignore[arg-type]
        parameters=[
            sweep_pb2.ParameterSpec(
                name=p.name, type=int(p.type), min=p.min, max=p.max, step=p.step, values=list(p.values),  # type: ignore[arg-type]
                log_scale=p.log_scale,
            )
            for p in s.parameters
        ],
        parallelism=s.parallelism, max_trials=s.max_trials, max_failed_trials=s.max_failed_trials,
    )  # fmt: skip
    if s.early_stopping is not None:
        e = s.early_stopping
        out.early_stopping.CopyFrom(
            sweep_pb2.EarlyStopping(
                type=sweep_pb2.EarlyStopping.MEDIAN, min_trials_required=e.min_trials_required,
                start_step=e.start_step,
            )
        )  # fmt: skip
    return out


def trial_to(t: Trial) -> sweep_pb2.Trial:
    return sweep_pb2.Trial(
        name=t.name,
        parameter_assignments=[
            sweep_pb2.ParameterAssignment(name=k, value=v) for k, v in t.parameter_assignments.items()
        ],
        job=t.job, state=int(t.state), reason=t.reason, message=t.message,  # type: ignore[arg-type]
        objective_value=t.objective_value, metrics=t.metrics, create_time=ts(t.create_time),
        update_time=ts(t.update_time), start_time=ts(t.start_time), end_time=ts(t.end_time),
    )  # fmt: skip


def trial_from(m: sweep_pb2.Trial) -> Trial:
    return Trial(
        name=m.name, parameter_assignments={a.name: a.value for a in m.parameter_assignments}, job=m.job,
        state=TrialState(m.state), reason=m.reason, message=m.message,
        objective_value=m.objective_value if m.HasField("objective_value") else None,
        metrics=dict(m.metrics), create_time=when(m.create_time, m.HasField("create_time")),
        update_time=when(m.update_time, m.HasField("update_time")),
        start_time=when(m.start_time, m.HasField("start_time")),
        end_time=when(m.end_time, m.HasField("end_time")),
    )  # fmt: skip


def sweep_to(s: Sweep) -> sweep_pb2.Sweep:
    c = s.trial_counts
    return sweep_pb2.Sweep(
        name=s.name, uid=s.uid, display_name=s.display_name, description=s.description, labels=s.labels,
        spec=sweep_spec_to(s.spec), state=int(s.state), reason=s.reason, message=s.message,  # type: ignore[arg-type]
        state_time=ts(s.state_time),
        trial_counts=sweep_pb2.TrialCounts(
            total=c.total, pending=c.pending, running=c.running, succeeded=c.succeeded, failed=c.failed,
            early_stopped=c.early_stopped, stopped=c.stopped,
        ),
        best_trial=trial_to(s.best_trial) if s.best_trial is not None else None,
        creator=s.creator, create_time=ts(s.create_time), update_time=ts(s.update_time),
        end_time=ts(s.end_time), etag=s.etag if s.version else "",
    )  # fmt: skip


def sweep_from(m: sweep_pb2.Sweep, *, version: int = 0, request_id: str | None = None) -> Sweep:
    c = m.trial_counts
    return Sweep(
        name=m.name, uid=m.uid, spec=sweep_spec_from(m.spec), creator=m.creator,
        display_name=m.display_name, description=m.description, labels=dict(m.labels),
        state=SweepState(m.state), reason=m.reason, message=m.message,
        state_time=when(m.state_time, m.HasField("state_time")),
        trial_counts=TrialCounts(
            c.total, c.pending, c.running, c.succeeded, c.failed, c.early_stopped, c.stopped
        ),
        best_trial=trial_from(m.best_trial) if m.HasField("best_trial") else None,
        create_time=when(m.create_time, m.HasField("create_time")),
        update_time=when(m.update_time, m.HasField("update_time")),
        end_time=when(m.end_time, m.HasField("end_time")), version=version, request_id=request_id,
    )  # fmt: skip


def _event(subject: str, message: object) -> OutboxEvent:
    return OutboxEvent(subject, message, SOURCE)  # type: ignore[arg-type]


def sweep_created(s: Sweep) -> OutboxEvent:
    return _event("pai.dlc.sweep.created", events_pb2.SweepCreated(sweep=sweep_to(s)))


def sweep_updated(s: Sweep) -> OutboxEvent:
    return _event("pai.dlc.sweep.updated", events_pb2.SweepUpdated(sweep=sweep_to(s)))


def sweep_deleted(s: Sweep) -> OutboxEvent:
    return _event("pai.dlc.sweep.deleted", events_pb2.SweepDeleted(sweep=sweep_to(s)))


def sweep_state_changed(change: SweepChange) -> OutboxEvent:
    previous = int(change.previous)
    message = events_pb2.SweepStateChanged(sweep=sweep_to(change.snapshot), previous_state=previous)  # type: ignore[arg-type]
    return _event("pai.dlc.sweep.state_changed", message)


def trial_created(t: Trial) -> OutboxEvent:
    return _event("pai.dlc.trial.created", events_pb2.TrialCreated(trial=trial_to(t)))


def trial_completed(t: Trial, sweep: str) -> OutboxEvent:
    return _event("pai.dlc.trial.completed", events_pb2.TrialCompleted(trial=trial_to(t), sweep=sweep))
