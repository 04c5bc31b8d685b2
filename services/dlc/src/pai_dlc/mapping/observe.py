"""A job's log lines and reported metrics ⇄ `pai.dlc.v1` log entries and metric series."""

from __future__ import annotations

import datetime as dt

from pai.dlc.v1 import log_pb2, metric_pb2
from pai_common.wire import ts
from pai_dlc.domain.observed import LogLine, Series
from pai_dlc.domain.spec import Role

Entry = log_pb2.LogEntry
STREAMS = {"stdout": Entry.STDOUT, "stderr": Entry.STDERR, "system": Entry.SYSTEM}
ROLES = {r.label: r for r in Role if r != Role.ROLE_UNSPECIFIED}


def _time(time_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(time_ns / 1e9, dt.UTC)


def log_entry(line: LogLine) -> log_pb2.LogEntry:
    role, _, index = line.replica.rpartition("-")
    return Entry(
        role=int(ROLES.get(role, Role.ROLE_UNSPECIFIED)),  # type: ignore[arg-type]
        index=int(index) if index.isdigit() else 0,
        replica=line.replica,
        attempt=line.attempt,
        offset=line.line,
        stream=STREAMS.get(line.record.stream, Entry.STREAM_UNSPECIFIED),
        time=ts(_time(line.record.time_ns)),
        text=line.record.text,
    )


def metric_series(s: Series, request: metric_pb2.QueryJobMetricsRequest) -> metric_pb2.MetricSeries | None:
    """One series as the request asks for it (from a step or a time, at most `max_points`, or only
    the summary); None when no point is left."""
    since = request.start_time.ToNanoseconds() if request.HasField("start_time") else 0
    pts = [
        metric_pb2.MetricPoint(step=step, value=v, time=ts(_time(t)), attempt=a)
        for step, v, t, a in s.points
        if step >= request.start_step and t >= since
    ]
    if not pts:
        return None
    values = [p.value for p in pts]
    shown = pts
    if request.max_points and len(pts) > request.max_points:
        stride = len(pts) / request.max_points
        shown = [pts[int(i * stride)] for i in range(request.max_points - 1)] + [pts[-1]]
    return metric_pb2.MetricSeries(
        key=s.key, rank=s.rank, points=[] if request.summary_only else shown, last=pts[-1],
        min=min(values), max=max(values), count=len(pts),
    )  # fmt: skip
