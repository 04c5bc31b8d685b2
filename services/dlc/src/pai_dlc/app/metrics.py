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

from pai_dlc.db.store import StoredJob
from pai_runtime.logfile import read_records

PREFIX = "@pai.metric "


def log_files(s: StoredJob, replicas: list[str], attempt: int | None) -> list[tuple[str, int, str]]:
    """(replica, attempt, path) of the job's log files, oldest attempt first, replicas by name."""
    out = []
    for a, files in sorted(s.runtime.get("logs", {}).items(), key=lambda kv: int(kv[0])):
        if attempt is not None and int(a) != attempt:
            continue
        for replica, path in sorted(files.items()):
            if replicas and replica not in replicas:
                continue
            out.append((replica, int(a), path))
    return out


def reported(
    s: StoredJob, keys: set[str] | None = None
) -> dict[tuple[str, int], list[tuple[int, float, int, int]]]:
    """Every reported value by (key, rank): (step, value, time_ns, attempt) in report order."""
    rank_of = {st.replica: st.rank for st in s.job.replica_statuses}
    out: dict[tuple[str, int], list[tuple[int, float, int, int]]] = {}
    for replica, attempt, path in log_files(s, [], None):
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


def series_of(s: StoredJob, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` from the lowest rank that reports it."""
    found = reported(s, {key})
    if not found:
        return []
    rank = min(r for _, r in found)
    return [(step, v) for step, v, _, _ in found[(key, rank)]]


_KEY = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")


def final_metrics(s: StoredJob) -> dict[str, float]:
    """The last value of every key, from the lowest rank reporting it: what a registered model
    version records as its metrics (keys a model registry cannot hold are left out)."""
    found = reported(s)
    lowest: dict[str, int] = {}
    for key, rank in found:
        if _KEY.match(key) and rank < lowest.get(key, rank + 1):
            lowest[key] = rank
    return {key: found[(key, rank)][-1][1] for key, rank in sorted(lowest.items())}
