"""What a job's replicas printed and reported, as the app reads it from their logs."""

from __future__ import annotations

from dataclasses import dataclass

from pai_runtime.logfile import LogRecord


@dataclass(frozen=True)
class LogLine:
    replica: str
    attempt: int
    line: int  # the line's number in its replica's log of that attempt (where a reader resumes)
    record: LogRecord


@dataclass(frozen=True)
class Series:
    """One reported metric of one rank."""

    key: str
    rank: int
    points: list[tuple[int, float, int, int]]  # (step, value, time_ns, attempt), in report order
