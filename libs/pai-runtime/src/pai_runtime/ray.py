"""The Ray backend: each replica runs on a node of a Ray cluster, as a gang placed all at once.

`launch` reserves one placement group per attempt, one bundle per replica (`cpus_per_replica` CPUs
each: a ReplicaLaunch carries no resources, so the backend asks the same for every replica), and
waits for the cluster to place it whole, or fails with "the Ray cluster cannot place the gang". The
placement strategy, unless given, is STRICT_SPREAD (one replica per node) when the cluster has at least
as many live nodes able to hold a bundle as there are replicas, else PACK (as few nodes as possible,
so that the gang's traffic stays inside nodes). Then one actor per replica is started in its bundle,
named `pai-<uid>-<attempt>-<replica>` in the backend's namespace and detached, so it outlives the
owner process that started it. Each actor runs a `LocalBackend` on its node (`pai_runtime.ray_actor`):
the replica's command runs under the same supervisor as with the local backend, in a session of its
own, as a child of the actor.

Rendezvous: what the owner put in the replicas' environment names addresses on the owner's machine.
Once the gang is placed, the backend asks every actor for its node's IP and a free port there, and
hands both to the owner's `rendezvous` function (given at construction), which returns the replicas
as they should start (dlc's rewrites MASTER_ADDR and friends to rank 0's node). Without one, the
replicas start as launched.

Files: the replica's log, exit record and error file are in `gang.run_dir`, as with the local
backend, written by the supervisor on the replica's node and read by the owner on its own. So the run
directory must be on a file system that the owner and every Ray node see at the same path (NFS, say,
on a real cluster; trivially so for a test cluster whose nodes are all on one machine). So must the
replicas' own directories. Every node also needs `pai_runtime` importable by its Ray workers
(installed in the Python that runs them, or shipped with `runtime_env`). A replica's base environment
is its Ray worker's (which has Ray's own RAY_* variables), plus the replica's variables.

Handles: `pid`/`pgid` is the supervisor's on its node, `node` the node's IP, and `engine_ref` the
actor's name followed by the local backend's reference, "pai-<uid>-<attempt>-<replica> pid <pid> start
<ticks>": the start time recognises the supervisor for good even where no actor is left to ask.
`poll` reads the exit records (as the local backend does); a replica without one is checked, at most
every `check_interval` seconds and without waiting (the answer arrives at a later poll), through its
actor, which reports a supervisor gone without a record; or the actor is dead (its node died, or it
was killed): then the replica is lost. (When its actor dies, Ray kills the actor's children, so the
supervisor goes, but the command, in the supervisor's process group, may live on.) `kill` asks each
actor to stop its replica (SIGTERM to the supervisor, SIGKILL to its process group after the grace
period, as the local backend), then kills the actors, and removes the placement group once no actor of
the attempt is left (removing it kills its actors). A replica whose actor is dead but whose node is
alive is killed by a task on that node. Everything is found by name, so a new `RayBackend` after a
restart of its owner watches and kills the replicas an earlier one launched.

Servers: `ready` probes each server replica from the owner's machine at its node's IP (so a server
must listen on an address of its node that the owner reaches, such as 0.0.0.0). `replace` is not
supported yet.

Ray is optional (`pip install 'pai-runtime[ray]'`): it is imported on first use only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from pai_runtime.local import KILL_TIMEOUT
from pai_runtime.probe import PROBE_TIMEOUT, ready_replicas
from pai_runtime.ray_actor import ReplicaActor, kill_on_node
from pai_runtime.ray_connection import (
    RAY_MARGIN,
    RayConnection,
    actor_name,
    capacity,
    choose_strategy,
    group_name,
    reason,
    settle,
)
from pai_runtime.records import ExitRecords, bounded_put, lost
from pai_runtime.spawn import prepare_run_dir
from pai_runtime.types import BackendError, BackendInfo, GangLaunch, ReplicaExit, ReplicaHandle, ReplicaLaunch

__all__ = ["NAMESPACE", "RayBackend", "Rendezvous", "actor_name", "group_name"]

NAMESPACE = "pai"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
LOST_MESSAGE = "the replica's Ray actor is gone (its node may have died) and it recorded no exit"

# The owner's rewrite of a placed gang: the replicas, and for each its node's IP and a port free there.
Rendezvous = Callable[[Sequence[ReplicaLaunch], Sequence[tuple[str, int]]], Sequence[ReplicaLaunch]]

log = logging.getLogger(__name__)


def _actor_of(handle: ReplicaHandle) -> str:
    return handle.engine_ref.split(" ", 1)[0]


def _group_of(handle: ReplicaHandle) -> str:
    return _actor_of(handle).removesuffix(f"-{handle.replica}")


class RayBackend:
    """Runs the replicas of a gang on a Ray cluster (see the module's docstring)."""

    def __init__(
        self,
        address: str,
        *,
        namespace: str = NAMESPACE,
        rendezvous: Rendezvous | None = None,
        cpus_per_replica: float = 1.0,
        strategy: str | None = None,
        placement_timeout: float = 60.0,
        start_timeout: float = 60.0,
        check_interval: float = 2.0,
        connect_timeout: float = 5.0,
        probe_timeout: float = PROBE_TIMEOUT,
        runtime_env: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`address`: the cluster's ("host:port" of its head's GCS, "auto", "ray://..."); nothing
        connects until the backend is first used. `namespace`: the Ray namespace of the actors (one
        per owning service; the process's one Ray connection is in it). `rendezvous`: the owner's
        rewrite of a placed gang (see the module's docstring). `strategy`: a placement group strategy,
        None to choose. `connect_timeout`: for a "host:port" address, how long to try to reach it
        before `ray.init` (which waits for a cluster that is down for many minutes). `runtime_env`
        goes to the actors, `init_options` to `ray.init`."""
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        if cpus_per_replica <= 0:
            raise ValueError("cpus_per_replica must be positive")
        self.address = address
        self.namespace = namespace
        self.rendezvous = rendezvous
        self.cpus_per_replica = cpus_per_replica
        self.strategy = strategy
        self.placement_timeout = placement_timeout
        self.start_timeout = start_timeout
        self.check_interval = check_interval
        self.probe_timeout = probe_timeout
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.info = BackendInfo(
            "ray",
            details={
                "address": address,
                "namespace": namespace,
                "cpus_per_replica": f"{cpus_per_replica:g}",
                "strategy": strategy or "auto",
            },
        )
        self._ray = RayConnection(address, namespace, connect_timeout, init_options or {})
        self._ended: dict[str, ReplicaExit] = {}  # actor name -> how it ended, for replicas without a record
        self._records = ExitRecords()

    # The Backend protocol.

    async def launch(self, gang: GangLaunch) -> list[ReplicaHandle]:
        """Places the gang, starts an actor per replica and, through it, the replica; all or none."""
        ray = await asyncio.to_thread(self._ray.connect)
        run_dir = prepare_run_dir(gang)
        what = f"{gang.owner} attempt {gang.attempt}"
        pg_name = group_name(gang.uid, gang.attempt)
        names = [actor_name(gang.uid, gang.attempt, r.replica) for r in gang.replicas]
        try:
            await self._clear_leftovers(ray, gang.uid, what)
            pg = await self._place(ray, gang, pg_name, what)
            actors = self._start_actors(ray, pg, names)
            places = await self._ray.gather(
                ray, [a.where.remote() for a in actors], self.start_timeout, f"{what}: the replicas' actors"
            )
            places = [(str(ip), int(port)) for ip, port in places]
            replicas = list(gang.replicas)
            if self.rendezvous is not None:
                replicas = list(self.rendezvous(replicas, places))
            one = [dataclasses.replace(gang, run_dir=run_dir, replicas=(r,)) for r in replicas]
            starts = [a.start.remote(o) for a, o in zip(actors, one, strict=True)]
            locals_ = await self._ray.gather(ray, starts, self.start_timeout, f"{what}: the replicas")
        except BaseException as e:
            await asyncio.shield(self._ray.abort(ray, names, [pg_name]))
            if isinstance(e, Exception) and not isinstance(e, BackendError):
                raise BackendError(f"{what}: {reason(e)}") from e  # Ray's own, say the GCS is gone
            raise
        return [
            dataclasses.replace(h, node=ip, engine_ref=f"{name} {h.engine_ref}")
            for h, (ip, _), name in zip(locals_, places, names, strict=True)
        ]

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas that ended: from their exit record, or lost (as their actor says, or as it is gone)."""
        ended: list[ReplicaExit] = []
        for handle in handles:
            result = self._records.get(handle) or self._ended.get(_actor_of(handle))
            if result is None:
                result = self._check(handle)
            if result is not None:
                ended.append(result)
        return ended

    async def ready(self, handles: Sequence[ReplicaHandle]) -> set[str]:
        """The server replicas among `handles` without an exit whose readiness probe, sent from this
        machine to their node's IP, passes now."""
        running = [
            h
            for h in handles
            if h.readiness is not None and self._records.get(h) is None and _actor_of(h) not in self._ended
        ]
        return await ready_replicas(running, lambda h: h.node or None, self.probe_timeout)

    async def replace(self, gang: GangLaunch, handle: ReplicaHandle, grace: float) -> ReplicaHandle:
        """Not supported by this backend yet: raises `BackendError` (kill the gang and launch it again)."""
        raise BackendError("replacing one replica is not supported by this backend yet")

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """None to find: `launch` itself removes the actors and placement group an earlier launch of
        the same owner left (they are named after it)."""
        return []

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """Stops every replica through its actor (or a task on its node), then removes actors and groups.

        Raises `BackendError` when a replica's processes outlive SIGKILL (see `LocalBackend.kill`), or
        Ray does not answer in time; the actors of those replicas are kept, to try again.
        """
        handles = list(handles)
        if not handles:
            return
        ray = await asyncio.to_thread(self._ray.connect)
        try:
            await self._kill(ray, handles, grace)
        except BackendError:
            raise
        except Exception as e:  # Ray's own, say the GCS is gone
            raise BackendError(f"could not kill every replica: {reason(e)}") from e

    # Launching.

    async def _clear_leftovers(self, ray: ModuleType, uid: str, what: str) -> None:
        # An owner has one gang at a time: what is still there was left by a launch the owner did not
        # see through (it crashed meanwhile), or by a kill that failed.
        stale_actors, stale_groups = await asyncio.to_thread(self._ray.leftovers, ray, uid)
        if stale_actors or stale_groups:
            stale = ", ".join(stale_actors + stale_groups)
            log.warning("%s: removing what earlier attempts left: %s", what, stale)
            await self._ray.abort(ray, stale_actors, stale_groups)

    async def _place(self, ray: ModuleType, gang: GangLaunch, pg_name: str, what: str) -> Any:
        """The gang's placement group, once the cluster has placed it whole."""
        from ray.util.placement_group import placement_group

        n = len(gang.replicas)
        strategy = self.strategy or await asyncio.to_thread(choose_strategy, ray, n, self.cpus_per_replica)
        bundle = {"CPU": float(self.cpus_per_replica)}
        pg = placement_group([dict(bundle) for _ in range(n)], strategy, pg_name, "detached")
        if not await asyncio.to_thread(pg.wait, self.placement_timeout):
            raise BackendError(
                f"{what}: the Ray cluster cannot place the gang: {n} bundle{'s' if n != 1 else ''} of "
                f"{self.cpus_per_replica:g} CPU ({strategy}) not placed in {self.placement_timeout:g} s; "
                f"{await asyncio.to_thread(capacity, ray)}"
            )
        return pg

    def _start_actors(self, ray: ModuleType, pg: Any, names: list[str]) -> list[Any]:
        """One detached actor per replica, each in its bundle of `pg`."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        actor_class = ray.remote(ReplicaActor)
        actors: list[Any] = []
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
            self._ray.actors[name] = actor
        return actors

    # Watching.

    def _check(self, handle: ReplicaHandle) -> ReplicaExit | None:
        """Collects the answer of the replica's last check, or sends one when it is due; never waits."""
        ray = self._ray.connect_for_poll()
        if ray is None:
            return None
        name = _actor_of(handle)
        now = time.monotonic()
        try:
            return self._check_actor(ray, handle, name, now)
        except Exception as e:  # poll does not raise: the replica's state is unknown until Ray answers
            self._ray.checks.pop(name, None)
            self._ray.checked[name] = now
            log.warning("cannot check the Ray actor of %s: %s", handle.replica, reason(e))
            return None

    def _check_actor(
        self, ray: ModuleType, handle: ReplicaHandle, name: str, now: float
    ) -> ReplicaExit | None:
        pending = self._ray.checks.get(name)
        if pending is not None:
            ref, _ = pending
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                return None
            del self._ray.checks[name]
            self._ray.checked[name] = now
            try:
                exits: list[ReplicaExit] = ray.get(ref)
            except ray.exceptions.ActorUnavailableError:
                return None  # unreachable for now (a network blip, a restarting raylet): ask again later
            except ray.exceptions.RayActorError:
                return self._note_end(handle, [])
            except ray.exceptions.RayError:
                return None
            return self._note_end(handle, exits) if exits else None
        if now - self._ray.checked.get(name, -self.check_interval) < self.check_interval:
            return None
        actor = self._ray.actor(ray, name)
        if actor is None:
            return self._note_end(handle, [])
        self._ray.checks[name] = (actor.poll.remote(handle), now)
        return None

    def _note_end(self, handle: ReplicaHandle, exits: list[ReplicaExit]) -> ReplicaExit:
        """Remembers how a replica ended: its exit record if there is one now (written just before its
        actor went, say), else as its actor saw it (`exits`), else lost."""
        result = self._records.get(handle) or (exits[0] if exits else lost(handle, LOST_MESSAGE))
        bounded_put(self._ended, _actor_of(handle), result)
        return result

    # Killing.

    async def _kill(self, ray: ModuleType, handles: list[ReplicaHandle], grace: float) -> None:
        grace = max(grace, 0.0)
        timeout = grace + KILL_TIMEOUT + RAY_MARGIN
        problems: list[str] = []
        actors = await asyncio.to_thread(lambda: [self._ray.actor(ray, _actor_of(h)) for h in handles])
        asked = [(h, a) for h, a in zip(handles, actors, strict=True) if a is not None]
        orphans = [h for h, a in zip(handles, actors, strict=True) if a is None]
        results = await settle(ray, [a.kill.remote(h, grace) for h, a in asked], timeout)
        done: list[ReplicaHandle] = []
        for (handle, _), result in zip(asked, results, strict=True):
            if isinstance(result, ray.exceptions.RayActorError) and not isinstance(
                result, ray.exceptions.ActorUnavailableError
            ):
                orphans.append(handle)  # died on the way: its node may still run the replica
            elif isinstance(result, BaseException):
                problems.append(f"{handle.replica}: {reason(result)}")
            else:
                self._note_end(handle, result)
                done.append(handle)
        if orphans:
            killed, failed = await self._kill_orphans(ray, orphans, grace, timeout)
            done += killed
            problems += failed
        groups = {_group_of(h) for h in done}
        await asyncio.to_thread(self._ray.remove, ray, [_actor_of(h) for h in done], groups)
        if problems:
            raise BackendError("could not kill every replica: " + "; ".join(problems))

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
        for on_node, result in zip(targets, await settle(ray, refs, timeout), strict=True):
            for handle in on_node:
                if isinstance(result, BaseException):
                    problems[handle.replica] = f"{handle.replica}: {reason(result)}"
                else:
                    self._note_end(handle, [e for e in result if e.replica == handle.replica])
        done += [h for h in handles if h not in done and h.replica not in problems]
        return done, list(problems.values())
