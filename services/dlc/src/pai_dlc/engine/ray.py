"""The Ray engine: each replica runs on a node of a Ray cluster, as a gang placed all at once.

`launch` reserves one placement group per attempt, one bundle per replica (`cpus_per_replica` CPUs
each: dlc's ReplicaLaunch carries no resources, so the engine asks the same for every replica), and
waits for the cluster to place it whole, or fails with "the Ray cluster cannot place the gang". The
placement strategy, unless given, is STRICT_SPREAD (one replica per node) when the cluster has at least
as many live nodes able to hold a bundle as there are replicas, else PACK (as few nodes as possible,
so that the gang's traffic stays inside nodes). Then one actor per replica is started in its bundle,
named `pai-<uid>-<attempt>-<replica>` in namespace "pai-dlc" and detached, so it outlives the dlc
process that started it. Each actor runs a `LocalEngine` on its node: the replica's command runs under
the same supervisor as with the local engine, in a session of its own, as a child of the actor.

Rendezvous: the environment dlc builds names an address on dlc's own machine. Once the gang is placed,
the engine asks every actor for its node's IP and a free port there, and rewrites, in every replica's
environment, `MASTER_ADDR`/`PET_MASTER_ADDR` to rank 0's node and `MASTER_PORT`/`PET_MASTER_PORT` to
the port found there (each only where dlc set it), and in `TF_CONFIG` the address of every task of the
cluster to its replica's node and port. An engine may rewrite these rendezvous variables; no other.

Files: the replica's log, exit record and error file are in `attempt.run_dir`, as with the local
engine, written by the supervisor on the replica's node and read by dlc on its own. So the run
directory must be on a file system that dlc and every Ray node see at the same path (NFS, say, on a
real cluster; trivially so for a test cluster whose nodes are all on one machine). So must the job's
code, checkpoint and output directories. Every node also needs `pai-dlc` importable by its Ray workers
(installed in the Python that runs them, or shipped with `runtime_env`). A replica's base environment
is its Ray worker's (which has Ray's own RAY_* variables), plus the replica's variables.

Handles: `pid`/`pgid` is the supervisor's on its node, `node` the node's IP, and `engine_ref` the
actor's name followed by the local engine's reference, "pai-<uid>-<attempt>-<replica> pid <pid> start
<ticks>": the start time recognises the supervisor for good even where no actor is left to ask.
`poll` reads the exit records (as the local engine does); a replica without one is checked, at most
every `check_interval` seconds and without waiting (the answer arrives at a later poll), through its
actor, which reports a supervisor gone without a record; or the actor is dead (its node died, or it
was killed): then the replica is lost. (When its actor dies, Ray kills the actor's children, so the
supervisor goes, but the command, in the supervisor's process group, may live on.) `kill` asks each
actor to stop its replica (SIGTERM to the supervisor, SIGKILL to its process group after the grace
period, as the local engine), then kills the actors, and removes the placement group once no actor of
the attempt is left (removing it kills its actors). A replica whose actor is dead but whose node is
alive is killed by a task on that node. Everything is found by name, so a new `RayEngine` after a
restart of dlc watches and kills the replicas an earlier one launched.

Ray is optional (`pip install 'pai-dlc[ray]'`): it is imported on first use only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

from pai_dlc.engine.base import (
    AttemptLaunch,
    EngineError,
    EngineInfo,
    ReplicaExit,
    ReplicaHandle,
    ReplicaLaunch,
)
from pai_dlc.engine.local import KILL_TIMEOUT, LocalEngine, exit_from_record, prepare_run_dir, stderr_tail

NAMESPACE = "pai-dlc"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
ADDR_VARS = ("MASTER_ADDR", "PET_MASTER_ADDR")
PORT_VARS = ("MASTER_PORT", "PET_MASTER_PORT")
TF_CONFIG = "TF_CONFIG"
LOST_MESSAGE = "the replica's Ray actor is gone (its node may have died) and it recorded no exit"

_RAY_MARGIN = 30.0  # seconds for Ray's own round trips on top of what an actor waits for
_POLL_RECONNECT = 10.0  # seconds between attempts to connect from `poll` after one failed
_CACHED_EXITS = 4096

log = logging.getLogger(__name__)


def actor_name(uid: str, attempt: int, replica: str) -> str:
    return f"pai-{uid}-{attempt}-{replica}"


def group_name(uid: str, attempt: int) -> str:
    """The placement group of an attempt; its actors' names are this, a dash and the replica's name."""
    return f"pai-{uid}-{attempt}"


def _actor_of(handle: ReplicaHandle) -> str:
    return handle.engine_ref.split(" ", 1)[0]


def _group_of(handle: ReplicaHandle) -> str:
    return _actor_of(handle).removesuffix(f"-{handle.replica}")


class RayEngine:
    """Runs the replicas of an attempt as a gang on a Ray cluster (see the module's docstring)."""

    def __init__(
        self,
        address: str,
        *,
        namespace: str = NAMESPACE,
        cpus_per_replica: float = 1.0,
        strategy: str | None = None,
        placement_timeout: float = 60.0,
        start_timeout: float = 60.0,
        check_interval: float = 2.0,
        connect_timeout: float = 5.0,
        runtime_env: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`address`: the cluster's ("host:port" of its head's GCS, "auto", "ray://..."); nothing
        connects until the engine is first used. `strategy`: a placement group strategy, None to
        choose (see the module's docstring). `connect_timeout`: for a "host:port" address, how long
        to try to reach it before `ray.init` (which waits for a cluster that is down for many
        minutes). `runtime_env` goes to the actors, `init_options` to `ray.init`."""
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        if cpus_per_replica <= 0:
            raise ValueError("cpus_per_replica must be positive")
        self.address = address
        self.namespace = namespace
        self.cpus_per_replica = cpus_per_replica
        self.strategy = strategy
        self.placement_timeout = placement_timeout
        self.start_timeout = start_timeout
        self.check_interval = check_interval
        self.connect_timeout = connect_timeout
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.init_options = dict(init_options or {})
        self.info = EngineInfo(
            "ray",
            details={
                "address": address,
                "namespace": namespace,
                "cpus_per_replica": f"{cpus_per_replica:g}",
                "strategy": strategy or "auto",
            },
        )
        self._job_id = ""  # of the connection the caches below belong to
        self._poll_connect_after = 0.0  # monotonic time before which `poll` does not try to connect
        self._actors: dict[str, Any] = {}  # actor name -> handle
        self._checks: dict[str, tuple[Any, float]] = {}  # actor name -> (pending poll, when sent)
        self._checked: dict[str, float] = {}  # actor name -> when its last check answered
        self._ended: dict[str, ReplicaExit] = {}  # actor name -> how it ended, for replicas without a record
        self._records: dict[str, tuple[tuple[int, int], ReplicaExit]] = {}  # exit path -> (version, exit)

    # The Engine protocol.

    async def launch(self, attempt: AttemptLaunch) -> list[ReplicaHandle]:
        """Places the gang, starts an actor per replica and, through it, the replica; all or none."""
        ray = await asyncio.to_thread(self._connect)
        run_dir = prepare_run_dir(attempt)
        what = f"{attempt.job} attempt {attempt.attempt}"
        pg_name = group_name(attempt.uid, attempt.attempt)
        names = [actor_name(attempt.uid, attempt.attempt, r.replica) for r in attempt.replicas]
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        actors: list[Any] = []
        try:
            # A job has one gang at a time: what is still there was left by a launch dlc did not
            # see through (it crashed meanwhile), or by a kill that failed.
            stale_actors, stale_groups = await asyncio.to_thread(self._leftovers, ray, attempt.uid)
            if stale_actors or stale_groups:
                stale = ", ".join(stale_actors + stale_groups)
                log.warning("%s: removing what earlier attempts of the job left: %s", what, stale)
                await self._abort(ray, stale_actors, stale_groups)
            n = len(attempt.replicas)
            strategy = self.strategy or await asyncio.to_thread(self._choose_strategy, ray, n)
            bundle = {"CPU": float(self.cpus_per_replica)}
            pg = placement_group([dict(bundle) for _ in range(n)], strategy, pg_name, "detached")
            if not await asyncio.to_thread(pg.wait, self.placement_timeout):
                raise EngineError(
                    f"{what}: the Ray cluster cannot place the gang: {n} bundle{'s' if n != 1 else ''} of "
                    f"{self.cpus_per_replica:g} CPU ({strategy}) not placed in {self.placement_timeout:g} s; "
                    f"{await asyncio.to_thread(_capacity, ray)}"
                )
            actor_class = ray.remote(ReplicaActor)
            for i, name in enumerate(names):
                options: dict[str, Any] = {
                    "name": name,
                    "namespace": self.namespace,
                    "lifetime": "detached",
                    "num_cpus": self.cpus_per_replica,
                    "max_restarts": 0,
                    "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, i),
                }
                if self.runtime_env is not None:
                    options["runtime_env"] = self.runtime_env
                actor = actor_class.options(**options).remote()
                actors.append(actor)
                self._actors[name] = actor
            places = await self._gather(
                ray, [a.where.remote() for a in actors], self.start_timeout, f"{what}: the replicas' actors"
            )
            replicas = rendezvous(attempt.replicas, [(str(ip), int(port)) for ip, port in places])
            one = [dataclasses.replace(attempt, run_dir=run_dir, replicas=(r,)) for r in replicas]
            locals_ = await self._gather(
                ray,
                [a.start.remote(o) for a, o in zip(actors, one, strict=True)],
                self.start_timeout,
                f"{what}: the replicas",
            )
        except BaseException as e:
            await asyncio.shield(self._abort(ray, names, [pg_name]))
            if isinstance(e, Exception) and not isinstance(e, EngineError):
                raise EngineError(f"{what}: {_reason(e)}") from e  # Ray's own, say the GCS is gone
            raise
        return [
            dataclasses.replace(h, node=str(ip), engine_ref=f"{name} {h.engine_ref}")
            for h, (ip, _), name in zip(locals_, places, names, strict=True)
        ]

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas that ended: from their exit record, or lost (as their actor says, or as it is gone)."""
        ended: list[ReplicaExit] = []
        for handle in handles:
            result = self._recorded_exit(handle) or self._ended.get(_actor_of(handle))
            if result is None:
                result = self._check(handle)
            if result is not None:
                ended.append(result)
        return ended

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """None to find: `launch` itself removes the actors and placement group an earlier launch of
        the same attempt left (they are named after it)."""
        return []

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """Stops every replica through its actor (or a task on its node), then removes actors and groups.

        Raises `EngineError` when a replica's processes outlive SIGKILL (see `LocalEngine.kill`), or
        Ray does not answer in time; the actors of those replicas are kept, to try again.
        """
        handles = list(handles)
        if not handles:
            return
        ray = await asyncio.to_thread(self._connect)
        try:
            await self._kill(ray, handles, grace)
        except EngineError:
            raise
        except Exception as e:  # Ray's own, say the GCS is gone
            raise EngineError(f"could not kill every replica: {_reason(e)}") from e

    async def _kill(self, ray: ModuleType, handles: list[ReplicaHandle], grace: float) -> None:
        grace = max(grace, 0.0)
        timeout = grace + KILL_TIMEOUT + _RAY_MARGIN
        problems: list[str] = []
        actors = await asyncio.to_thread(lambda: [self._actor(ray, _actor_of(h)) for h in handles])
        asked = [(h, a) for h, a in zip(handles, actors, strict=True) if a is not None]
        orphans = [h for h, a in zip(handles, actors, strict=True) if a is None]
        results = await self._settle(ray, [a.kill.remote(h, grace) for h, a in asked], timeout)
        done: list[ReplicaHandle] = []
        for (handle, _), result in zip(asked, results, strict=True):
            if isinstance(result, ray.exceptions.RayActorError) and not isinstance(
                result, ray.exceptions.ActorUnavailableError
            ):
                orphans.append(handle)  # died on the way: its node may still run the replica
            elif isinstance(result, BaseException):
                problems.append(f"{handle.replica}: {_reason(result)}")
            else:
                self._note_end(handle, result)
                done.append(handle)
        if orphans:
            killed, failed = await self._kill_orphans(ray, orphans, grace, timeout)
            done += killed
            problems += failed
        await asyncio.to_thread(self._remove, ray, [_actor_of(h) for h in done], {_group_of(h) for h in done})
        if problems:
            raise EngineError("could not kill every replica: " + "; ".join(problems))

    # Connecting and asking.

    def _connect(self) -> ModuleType:
        """The `ray` module, connected to the cluster (once per process: Ray has one connection)."""
        try:
            import ray
        except ImportError as e:
            raise EngineError(f"the Ray engine needs the ray package (pip install pai-dlc[ray]): {e}") from e
        if not ray.is_initialized():
            self._probe()
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            options.update(self.init_options)
            try:
                ray.init(address=self.address, namespace=self.namespace, **options)
            except Exception as e:  # ConnectionError, TimeoutError, RuntimeError, ...: all mean the same
                raise EngineError(f"cannot connect to the Ray cluster at {self.address}: {_reason(e)}") from e
        context = ray.get_runtime_context()
        if context.namespace != self.namespace:
            raise EngineError(
                f"this process is connected to Ray in namespace {context.namespace!r}, not {self.namespace!r}"
            )
        job_id = context.get_job_id()
        if job_id != self._job_id:  # a new connection: handles from the old one are no good
            self._job_id = job_id
            self._actors.clear()
            self._checks.clear()
        return ray

    def _probe(self) -> None:
        """Fails at once when a "host:port" address does not answer: `ray.init` would wait for it."""
        host, sep, port = self.address.rpartition(":")
        if not sep or "://" in self.address or not port.isdigit():
            return  # "auto", "ray://...": left to Ray
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=self.connect_timeout).close()
        except OSError as e:
            raise EngineError(f"cannot connect to the Ray cluster at {self.address}: {e}") from e

    def _connect_for_poll(self) -> ModuleType | None:
        """`_connect` for `poll`, which must not raise: None (and a warning) while the cluster is away."""
        now = time.monotonic()
        if now < self._poll_connect_after:
            return None
        try:
            return self._connect()
        except EngineError as e:
            self._poll_connect_after = now + _POLL_RECONNECT
            log.warning(
                "cannot check the replicas' Ray actors (trying again in %g s): %s", _POLL_RECONNECT, e
            )
            return None

    def _actor(self, ray: ModuleType, name: str) -> Any:
        """The actor's handle, None when there is no such actor (any more)."""
        actor = self._actors.get(name)
        if actor is None:
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
            self._actors[name] = actor
        return actor

    async def _gather(self, ray: ModuleType, refs: list[Any], timeout: float, what: str) -> list[Any]:
        """The results of `refs`, or `EngineError` saying what failed first or that time ran out."""
        results = await self._settle(ray, refs, timeout)
        for result in results:
            if isinstance(result, TimeoutError):
                raise EngineError(f"{what} did not start in {timeout:g} s")
            if isinstance(result, BaseException):
                raise EngineError(f"{what} did not start: {_reason(result)}")
        return results

    async def _settle(self, ray: ModuleType, refs: list[Any], timeout: float) -> list[Any]:
        """Waits for `refs` together; each one's result or exception (TimeoutError when it is late)."""
        futures = [asyncio.wrap_future(ref.future()) for ref in refs]
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        results: list[Any] = []
        for ref, future in zip(refs, futures, strict=True):
            if not future.done() or future.cancelled():
                future.cancel()
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
                results.append(TimeoutError())
            elif future.exception() is not None:
                results.append(future.exception())
            else:
                results.append(future.result())
        return results

    # Launching.

    def _choose_strategy(self, ray: ModuleType, replicas: int) -> str:
        able = [
            node
            for node in ray.nodes()
            if node.get("Alive") and node.get("Resources", {}).get("CPU", 0.0) >= self.cpus_per_replica
        ]
        return "STRICT_SPREAD" if len(able) >= replicas else "PACK"

    def _leftovers(self, ray: ModuleType, uid: str) -> tuple[list[str], list[str]]:
        """The actors and placement groups of job `uid` (of any attempt) that are there now."""
        prefix = re.escape(f"pai-{uid}-")
        actors = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == self.namespace and re.fullmatch(prefix + r"\d+-.+", a["name"])
        ]
        groups = {
            g.get("name", "")
            for g in ray.util.placement_group_table().values()
            if g.get("state") != "REMOVED" and re.fullmatch(prefix + r"\d+", g.get("name", ""))
        }
        return actors, sorted(groups)

    async def _abort(self, ray: ModuleType, names: list[str], groups: list[str]) -> None:
        """Stops the replicas of the actors `names` at once, then removes the actors and `groups`."""

        def stop() -> list[Any]:
            return [a.stop.remote() for a in (self._actor(ray, name) for name in names) if a is not None]

        refs = await asyncio.to_thread(stop)
        await self._settle(ray, refs, KILL_TIMEOUT + _RAY_MARGIN)
        await asyncio.to_thread(self._remove, ray, names, groups)

    def _remove(self, ray: ModuleType, names: Iterable[str], groups: Iterable[str]) -> None:
        """Kills the actors `names`, and removes each group of `groups` that has no other actor left."""
        from ray.util import get_placement_group, remove_placement_group

        names, groups = list(names), list(groups)
        for name in names:
            actor = self._actor(ray, name)
            self._actors.pop(name, None)
            self._checks.pop(name, None)
            self._checked.pop(name, None)
            if actor is not None:
                with contextlib.suppress(ValueError, ray.exceptions.RayError):
                    ray.kill(actor, no_restart=True)
        if not groups:
            return
        gone = set(names)
        others = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == self.namespace and a["name"] not in gone
        ]
        for group in groups:
            # Removing a group kills its actors: never while another replica of the attempt runs.
            if any(other.startswith(f"{group}-") for other in others):
                continue
            with contextlib.suppress(ValueError):
                remove_placement_group(get_placement_group(group))

    # Watching.

    def _recorded_exit(self, handle: ReplicaHandle) -> ReplicaExit | None:
        try:
            st = os.stat(handle.exit_path)
        except FileNotFoundError:
            return None
        version = (st.st_ino, st.st_mtime_ns)
        cached = self._records.get(handle.exit_path)
        if cached is not None and cached[0] == version and cached[1].replica == handle.replica:
            return cached[1]
        result = exit_from_record(handle)
        _bounded_put(self._records, handle.exit_path, (version, result))
        return result

    def _check(self, handle: ReplicaHandle) -> ReplicaExit | None:
        """Collects the answer of the replica's last check, or sends one when it is due; never waits."""
        ray = self._connect_for_poll()
        if ray is None:
            return None
        name = _actor_of(handle)
        now = time.monotonic()
        try:
            return self._check_actor(ray, handle, name, now)
        except Exception as e:  # poll does not raise: the replica's state is unknown until Ray answers
            self._checks.pop(name, None)
            self._checked[name] = now
            log.warning("cannot check the Ray actor of %s: %s", handle.replica, _reason(e))
            return None

    def _check_actor(
        self, ray: ModuleType, handle: ReplicaHandle, name: str, now: float
    ) -> ReplicaExit | None:
        pending = self._checks.get(name)
        if pending is not None:
            ref, _ = pending
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                return None
            del self._checks[name]
            self._checked[name] = now
            try:
                exits: list[ReplicaExit] = ray.get(ref)
            except ray.exceptions.ActorUnavailableError:
                return None  # unreachable for now (a network blip, a restarting raylet): ask again later
            except ray.exceptions.RayActorError:
                return self._note_end(handle, [])
            except ray.exceptions.RayError:
                return None
            return self._note_end(handle, exits) if exits else None
        if now - self._checked.get(name, -self.check_interval) < self.check_interval:
            return None
        actor = self._actor(ray, name)
        if actor is None:
            return self._note_end(handle, [])
        self._checks[name] = (actor.poll.remote(handle), now)
        return None

    def _note_end(self, handle: ReplicaHandle, exits: list[ReplicaExit]) -> ReplicaExit:
        """Remembers how a replica ended: its exit record if there is one now (written just before its
        actor went, say), else as its actor saw it (`exits`), else lost."""
        lost = ReplicaExit(handle.replica, None, message=LOST_MESSAGE, details=stderr_tail(handle), lost=True)
        result = self._recorded_exit(handle) or (exits[0] if exits else lost)
        _bounded_put(self._ended, _actor_of(handle), result)
        return result

    # Killing replicas whose actor is gone.

    async def _kill_orphans(
        self, ray: ModuleType, handles: list[ReplicaHandle], grace: float, timeout: float
    ) -> tuple[list[ReplicaHandle], list[str]]:
        """Kills replicas whose actor is gone by a task on their node; (those done, what failed)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = await asyncio.to_thread(ray.nodes)
        task = ray.remote(num_cpus=0, max_retries=0)(kill_on_node)
        refs: list[Any] = []
        targets: list[list[ReplicaHandle]] = []
        done: list[ReplicaHandle] = []
        for ip in sorted({h.node for h in handles}):
            on_node = [h for h in handles if h.node == ip]
            node_ids = [n["NodeID"] for n in nodes if n.get("Alive") and n.get("NodeManagerAddress") == ip]
            if not node_ids:  # the node is dead, and its processes with it
                for handle in on_node:
                    self._note_end(handle, [])
                done += on_node
                continue
            for node_id in node_ids:  # several raylets may share an address (a test cluster)
                strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
                refs.append(task.options(scheduling_strategy=strategy).remote(on_node, grace))
                targets.append(on_node)
        problems: dict[str, str] = {}
        for on_node, result in zip(targets, await self._settle(ray, refs, timeout), strict=True):
            for handle in on_node:
                if isinstance(result, BaseException):
                    problems[handle.replica] = f"{handle.replica}: {_reason(result)}"
                else:
                    self._note_end(handle, [e for e in result if e.replica == handle.replica])
        done += [h for h in handles if h not in done and h.replica not in problems]
        return done, list(problems.values())


class ReplicaActor:
    """A replica's agent on its node (a Ray actor): starts the replica there, watches it, stops it."""

    def __init__(self) -> None:
        self._engine = LocalEngine()
        self._starting: asyncio.Future[list[ReplicaHandle]] | None = None
        self._handle: ReplicaHandle | None = None

    def where(self) -> tuple[str, int]:
        """This node's IP and a port free on it."""
        import ray.util

        node_ip: Callable[[], str] = ray.util.get_node_ip_address
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))  # free on every address of the node
            port: int = s.getsockname()[1]
        return node_ip(), port

    async def start(self, attempt: AttemptLaunch) -> ReplicaHandle:
        self._starting = asyncio.ensure_future(self._engine.launch(attempt))
        (self._handle,) = await self._starting
        return self._handle

    def poll(self, handle: ReplicaHandle) -> list[ReplicaExit]:
        return self._engine.poll([handle])

    async def kill(self, handle: ReplicaHandle, grace: float) -> list[ReplicaExit]:
        await self._engine.kill([handle], grace)
        return self._engine.poll([handle])

    async def stop(self) -> None:
        """Kills the replica at once, if one started (its launch failed elsewhere in the gang)."""
        starting = self._starting
        if starting is not None:
            # A start still under way ends first: it kills what it started itself if it fails.
            await asyncio.wait([starting])
            if self._handle is None and not starting.cancelled() and starting.exception() is None:
                (self._handle,) = starting.result()
        if self._handle is not None:
            await self._engine.kill([self._handle], 0)


def kill_on_node(handles: list[ReplicaHandle], grace: float) -> list[ReplicaExit]:
    """A Ray task on the replicas' node: kills them when their actor is gone (by their command line)."""
    engine = LocalEngine()

    async def kill() -> list[ReplicaExit]:
        await engine.kill(handles, grace)
        return engine.poll(handles)

    return asyncio.run(kill())


def rendezvous(replicas: Sequence[ReplicaLaunch], places: Sequence[tuple[str, int]]) -> list[ReplicaLaunch]:
    """`replicas` with their rendezvous variables pointing at where the gang runs.

    `places[i]` is the IP of the node of `replicas[i]` and a port free there. MASTER_ADDR and
    PET_MASTER_ADDR become the node of the replica of the lowest rank (rank 0), MASTER_PORT and
    PET_MASTER_PORT its port, each only in an environment that has it; in TF_CONFIG, the address of
    each task whose replica is in the gang becomes that replica's node and port.
    """
    if not replicas:
        return []
    master = min(range(len(replicas)), key=lambda i: replicas[i].rank)
    addr, port = places[master]
    tasks: dict[tuple[str, int], str] = {}
    for replica, (ip, p) in zip(replicas, places, strict=True):
        task = _tf_task(replica.env.get(TF_CONFIG))
        if task is not None:
            tasks[task] = f"{ip}:{p}"
    out: list[ReplicaLaunch] = []
    for replica in replicas:
        env = dict(replica.env)
        for var in ADDR_VARS:
            if var in env:
                env[var] = addr
        for var in PORT_VARS:
            if var in env:
                env[var] = str(port)
        if TF_CONFIG in env and tasks:
            env[TF_CONFIG] = _tf_rewrite(env[TF_CONFIG], tasks)
        out.append(dataclasses.replace(replica, env=env))
    return out


def _tf_task(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    try:
        task = json.loads(text)["task"]
        kind, index = task["type"], task["index"]
    except (ValueError, TypeError, KeyError):
        return None
    return (kind, index) if isinstance(kind, str) and type(index) is int else None


def _tf_rewrite(text: str, tasks: Mapping[tuple[str, int], str]) -> str:
    try:
        doc = json.loads(text)
        cluster = doc["cluster"]
        for kind, addresses in cluster.items():
            if isinstance(addresses, list):
                cluster[kind] = [tasks.get((kind, i), a) for i, a in enumerate(addresses)]
    except (ValueError, TypeError, KeyError, AttributeError):
        return text  # not dlc's shape: leave it as the user wrote it
    return json.dumps(doc)


def _capacity(ray: ModuleType) -> str:
    """What the cluster has, for the message of a gang it cannot place."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources().get("CPU", 0.0)
        free = ray.available_resources().get("CPU", 0.0)
    except Exception as e:  # only for a message
        return f"the cluster's resources are unknown ({_reason(e)})"
    per_node = ", ".join(
        f"{n.get('NodeManagerAddress')}: {n.get('Resources', {}).get('CPU', 0):g}" for n in nodes
    )
    return f"the cluster has {len(nodes)} live node(s) ({per_node} CPU), {free:g} of {total:g} CPU free"


def _reason(e: BaseException) -> str:
    """An exception as one line for a person: the remote cause of a Ray task error, collapsed."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 500 else text[:499] + "…"


def _bounded_put(cache: dict[str, Any], key: str, value: Any) -> None:
    if key not in cache and len(cache) >= _CACHED_EXITS:
        del cache[next(iter(cache))]
    cache[key] = value
