"""Reading a job's logs and reported metrics: from the replicas' log files (dlc's own store of them,
kept after the job ends), every attempt of every replica in its own file, recorded on the job when it
was launched. Files are read in a thread: a long job's logs are large."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from pai_dlc.app import metrics
from pai_dlc.app.metrics import log_files
from pai_dlc.domain.job import Job
from pai_dlc.domain.observed import LogLine, Series
from pai_runtime.logfile import read_records

FOLLOW_INTERVAL = 0.2  # seconds between looks at the files while following


def selected(
    job: Job, wanted: Sequence[str], attempt: int | None, *, later: bool = False
) -> list[tuple[str, int, str]]:
    """(replica, attempt, path) of the logs a request selects: `wanted` holds roles (`worker`) or
    replicas (`worker-1`), empty for all; attempt None is the latest (and every later one if `later`)."""
    files = log_files(job)
    if not files:
        return []
    if attempt is None:
        latest = max(a for _, a, _ in files)
        files = [f for f in files if (f[1] >= latest if later else f[1] == latest)]
    else:
        files = [f for f in files if f[1] == attempt]
    if wanted:
        files = [f for f in files if f[0] in wanted or f[0].rpartition("-")[0] in wanted]
    return files


def _read(
    job: Job, wanted: Sequence[str], attempt: int | None, offset: int, since_ns: int, tail: int
) -> list[LogLine]:
    out: list[LogLine] = []
    for replica, a, path in selected(job, wanted, attempt):
        lines = list(enumerate(read_records(path, 0)))
        if tail:
            lines = lines[-tail:]
        out += [LogLine(replica, a, n, r) for n, r in lines if n >= offset and r.time_ns >= since_ns]
    return out


async def read(
    job: Job, wanted: Sequence[str], attempt: int | None, offset: int, since_ns: int, tail: int
) -> list[LogLine]:
    """The selected logs' lines past `offset`, since `since_ns`, the last `tail` of each."""
    return await asyncio.to_thread(_read, job, wanted, attempt, offset, since_ns, tail)


@dataclass(frozen=True)
class Follow:
    """What a `stream` call follows: the replicas, the attempt (None: the latest, and later ones when
    following), where to start, and whether to wait for more."""

    wanted: tuple[str, ...]
    attempt: int | None
    offset: int
    since_ns: int
    tail: int
    follow: bool


async def stream(job: Job, f: Follow, refresh: Callable[[], Awaitable[Job]]) -> AsyncIterator[list[LogLine]]:
    """Batches of new lines until the logs end (when not following: what is there now); `refresh`
    reads the job again, so a follower sees attempts that start later and the job's end."""
    first = {path for _, _, path in selected(job, f.wanted, f.attempt)}
    positions: dict[str, tuple[int, int]] = {}  # path -> (byte position, lines read)
    while True:
        batch: list[LogLine] = []
        for replica, a, path in selected(job, f.wanted, f.attempt, later=f.follow):
            pos, count = positions.get(path, (0, 0))
            records = await asyncio.to_thread(read_records, path, pos)
            numbered = list(enumerate(records, start=count))
            positions[path] = (records[-1].next_offset, count + len(records)) if records else (pos, count)
            if count == 0 and path in first and f.tail:
                numbered = numbered[-f.tail :]
            skip = f.offset if path in first else 0  # where the caller resumes (its first attempt)
            batch += [LogLine(replica, a, n, r) for n, r in numbered if n >= skip and r.time_ns >= f.since_ns]
        if batch:
            yield batch
        if not f.follow or (job.terminal and not batch):
            return
        await asyncio.sleep(FOLLOW_INTERVAL)
        job = await refresh()


def _series(job: Job, keys: set[str] | None) -> list[Series]:
    found = metrics.reported(job, keys)
    return [Series(k, rank, pts) for (k, rank), pts in sorted(found.items())]


async def reported(job: Job, keys: set[str] | None) -> list[Series]:
    """Every reported metric of the job, by key and rank."""
    return await asyncio.to_thread(_series, job, keys)
