"""Metrics training code reports: `@pai.metric {"step": 3, "loss": 0.5}` lines on a replica's stdout.

The protocol is a plain line so that training code needs nothing from pai to report (any language
can print it); dlc reads them from the replicas' log files when asked, so there is no second store
to keep in step with the logs.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pai_dlc.domain.job import Job
from pai_runtime.logfile import read_records

PREFIX = "@pai.metric "


def log_files(job: Job) -> list[tuple[str, int, str]]:
    """(replica, attempt, path) of the job's log files, oldest attempt first, replicas by name."""
    return [
        (replica, attempt, path)
        for attempt, files in sorted(job.runtime.logs.items())
        for replica, path in sorted(files.items())
    ]


def reported(
    job: Job, keys: set[str] | None = None
) -> dict[tuple[str, int], list[tuple[int, float, int, int]]]:
    """Every reported value by (key, rank): (step, value, time_ns, attempt) in report order."""
    rank_of = {st.replica: st.rank for st in job.replica_statuses}
    out: dict[tuple[str, int], list[tuple[int, float, int, int]]] = {}
    for replica, attempt, path in log_files(job):
        rank = rank_of.get(replica, 0)
        for r in read_records(path, 0):
            if r.stream != "stdout" or not r.text.startswith(PREFIX):
                continue
            try:
                data: dict[str, Any] = json.loads(r.text[len(PREFIX) :])
                step = int(data.pop("step", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            for k, v in data.items():
                if (keys and k not in keys) or isinstance(v, bool) or not isinstance(v, int | float):
                    continue
                if not math.isfinite(v):  # a diverged NaN loss must not become anyone's best value
                    continue
                out.setdefault((k, rank), []).append((step, float(v), r.time_ns, attempt))
    return out


def series(job: Job, keys: set[str]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of each of `keys` that was reported, from the lowest rank reporting it (the logs
    are read once for all of them)."""
    found = reported(job, keys)
    lowest: dict[str, int] = {}
    for key, rank in found:
        lowest[key] = min(rank, lowest.get(key, rank))
    return {key: [(step, v) for step, v, _, _ in found[(key, rank)]] for key, rank in lowest.items()}


def series_of(job: Job, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` from the lowest rank that reports it."""
    return series(job, {key}).get(key, [])


_KEY = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")


def final_metrics(job: Job) -> dict[str, float]:
    """The last value of every key, from the lowest rank reporting it: what a registered model
    version records as its metrics (keys a model registry cannot hold are left out)."""
    found = reported(job)
    lowest: dict[str, int] = {}
    for key, rank in found:
        if _KEY.match(key) and rank < lowest.get(key, rank + 1):
            lowest[key] = rank
    return {key: found[(key, rank)][-1][1] for key, rank in sorted(lowest.items())}
