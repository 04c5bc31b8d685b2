"""A job's gang on its engine: launch an attempt, watch it, kill it; and telling the scheduler how a job
ended. Shared by the reconciler and the use cases that stop, restart or delete a job.

The launch is everything a backend needs (commands, environments, working directories, the run
directory and, for Kubernetes, the object to create): backends never call back into dlc.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import time
from collections.abc import Mapping

from pai_common.clock import utcnow
from pai_dlc.app.common import Options, save
from pai_dlc.app.ports import RemoteError, Runner, Scheduler, UnitOfWorkFactory
from pai_dlc.domain import attempts
from pai_dlc.domain.env import Attempt, Cluster, hyperparameter_args, replica_env
from pai_dlc.domain.job import Job
from pai_dlc.domain.spec import Engine, Kind, local_path, replicas
from pai_runtime.logfile import last_write_ns
from pai_runtime.probe import free_port
from pai_runtime.types import BackendError, GangLaunch, ReplicaLaunch

log = logging.getLogger(__name__)


class Gangs:
    def __init__(self, engines: Mapping[Engine, Runner], options: Options) -> None:
        self.engines = engines
        self.options = options

    def runner(self, job: Job) -> Runner:
        runner = self.engines.get(job.spec.engine)
        if runner is None:
            raise BackendError(f"engine {job.spec.engine.name} is not configured")
        return runner

    def run_dir(self, job: Job, attempt: int) -> pathlib.Path:
        return self.options.storage_root / "jobs" / job.uid / f"attempt-{attempt}"

    def plan(self, job: Job, attempt: int) -> GangLaunch:
        """The launch of `attempt`: every replica's command and environment (and the directories
        it writes to, made here)."""
        spec = job.spec
        everyone = replicas(spec)
        ports = {r.name: free_port() for r in everyone} if spec.kind == Kind.TENSORFLOW else {}
        cluster = Cluster("127.0.0.1", free_port(), ports)
        for uri in (spec.checkpoint_uri, spec.output_uri):
            local_path(uri).mkdir(parents=True, exist_ok=True)
        code = str(local_path(spec.code.uri)) if spec.code.uri else None
        run = Attempt(job.name, job.uid, attempt, job.restart_count)
        gang = GangLaunch(
            owner=job.name, uid=job.uid, attempt=attempt, run_dir=str(self.run_dir(job, attempt)),
            replicas=tuple(
                ReplicaLaunch(
                    replica=r.name, rank=r.rank, command=(*r.spec.command, *r.spec.args, *hyperparameter_args(spec)),
                    env=replica_env(run, spec, r, everyone, cluster), cwd=code,
                )
                for r in everyone
            ),
        )  # fmt: skip
        runner = self.runner(job)
        if runner.manifest is not None:
            gang = dataclasses.replace(gang, manifest=runner.manifest(gang, spec))
        return gang

    async def kill(self, job: Job, grace: float | None = None, *, record: bool = True) -> None:
        """Kill the current attempt's gang, and what a crashed dlc may have started of an attempt
        without storing its handles; with `record`, say on the job how each replica ended (a gang
        killed to restart it, or with its job deleted, keeps its statuses until the next launch)."""
        if job.runtime.launching is not None:
            await self.kill_unrecorded(job, job.runtime.launching)
        handles = job.runtime.handles
        if not handles:
            return
        backend = self.runner(job).backend
        await backend.kill(handles, self.options.kill_grace if grace is None else grace)
        if record:
            attempts.ended(job, backend.poll(handles), utcnow())

    async def kill_unrecorded(self, job: Job, attempt: int) -> None:
        """Kill the replicas of an attempt whose handles were never stored (the backend finds them)."""
        backend = self.runner(job).backend
        found = await backend.unrecorded(str(self.run_dir(job, attempt)), attempt)
        if found:
            log.warning(
                "%s: stopping %d replicas of attempt %d started before dlc stopped",
                job.name,
                len(found),
                attempt,
            )
            await backend.kill(found, self.options.kill_grace)

    def quiet_seconds(self, job: Job) -> float | None:
        """Seconds since any replica of the running attempt wrote a log line (None: no log files here)."""
        paths = [h.log_path for h in job.runtime.handles if h.log_path]
        if not paths:
            return None
        last = max([job.runtime.launched_ns, *(last_write_ns(p) or 0 for p in paths)])
        return (time.time_ns() - last) / 1e9

    def remove_files(self, job: Job) -> None:
        """The attempts' directories (logs, and with them the reported metrics) go with the job."""
        for attempt in (self.options.storage_root / "jobs" / job.uid).glob("attempt-*"):
            shutil.rmtree(attempt, ignore_errors=True)


class Finisher:
    """Tells the scheduler how a job ended, until it has heard."""

    def __init__(self, scheduler: Scheduler, uows: UnitOfWorkFactory) -> None:
        self.scheduler = scheduler
        self.uows = uows
        self._retrying: set[str] = set()  # workloads whose end could not be reported yet

    async def report(self, job: Job) -> None:
        if job.runtime.finish is None:
            return
        try:
            await self.scheduler.finish(job.workload, job.runtime.finish, job.message)
        except RemoteError as e:
            if not e.permanent:
                if job.workload not in self._retrying:  # said once; every step tries again
                    self._retrying.add(job.workload)
                    log.warning("finishing %s: %s (will retry)", job.workload, e)
                return
            log.warning("finishing %s: %s (giving up)", job.workload, e)
        self._retrying.discard(job.workload)
        job.runtime.finish = None
        await save(self.uows, job)
