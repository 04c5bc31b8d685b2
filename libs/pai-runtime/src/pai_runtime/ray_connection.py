"""The Ray backend's connection to its cluster, and the calls it makes through it.

One process has one Ray connection (`ray.init`), made on first use and kept: it lives in one Ray
namespace, where the backend's actors are named. A "host:port" address is tried with a plain TCP
connection first, because `ray.init` waits many minutes for a cluster that is down. Actor handles
and pending checks belong to one connection (one Ray job id): a new connection drops them.

Ray is optional (`pip install 'pai-runtime[ray]'`): it is imported on first use only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from pai_runtime.local import KILL_TIMEOUT
from pai_runtime.types import BackendError

RAY_MARGIN = 30.0  # seconds for Ray's own round trips on top of what an actor waits for
POLL_RECONNECT = 10.0  # seconds between attempts to connect from `poll` after one failed

log = logging.getLogger(__name__)


def actor_name(uid: str, attempt: int, replica: str) -> str:
    return f"pai-{uid}-{attempt}-{replica}"


def group_name(uid: str, attempt: int) -> str:
    """The placement group of an attempt; its actors' names are this, a dash and the replica's name."""
    return f"pai-{uid}-{attempt}"


def reason(e: BaseException) -> str:
    """An exception as one line for a person: the remote cause of a Ray task error, collapsed."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 500 else text[:499] + "…"


class RayConnection:
    """The connection to one cluster, in one namespace, with the actor handles it has looked up."""

    def __init__(
        self, address: str, namespace: str, connect_timeout: float, init_options: Mapping[str, Any]
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.connect_timeout = connect_timeout
        self.init_options = dict(init_options)
        self.actors: dict[str, Any] = {}  # actor name -> handle
        self.checks: dict[str, tuple[Any, float]] = {}  # actor name -> (pending poll, when sent)
        self.checked: dict[str, float] = {}  # actor name -> when its last check answered
        self._job_id = ""  # of the connection the caches above belong to
        self._poll_connect_after = 0.0  # monotonic time before which `poll` does not try to connect

    def connect(self) -> ModuleType:
        """The `ray` module, connected to the cluster (once per process: Ray has one connection)."""
        try:
            import ray
        except ImportError as e:
            raise BackendError(
                f"the Ray backend needs the ray package (pip install pai-runtime[ray]): {e}"
            ) from e
        if not ray.is_initialized():
            self._probe()
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            options.update(self.init_options)
            try:
                ray.init(address=self.address, namespace=self.namespace, **options)
            except Exception as e:  # ConnectionError, TimeoutError, RuntimeError, ...: all mean the same
                raise BackendError(f"cannot connect to the Ray cluster at {self.address}: {reason(e)}") from e
        context = ray.get_runtime_context()
        if context.namespace != self.namespace:
            raise BackendError(
                f"this process is connected to Ray in namespace {context.namespace!r}, not {self.namespace!r}"
            )
        job_id = context.get_job_id()
        if job_id != self._job_id:  # a new connection: handles from the old one are no good
            self._job_id = job_id
            self.actors.clear()
            self.checks.clear()
        return ray

    def _probe(self) -> None:
        """Fails at once when a "host:port" address does not answer: `ray.init` would wait for it."""
        host, sep, port = self.address.rpartition(":")
        if not sep or "://" in self.address or not port.isdigit():
            return  # "auto", "ray://...": left to Ray
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=self.connect_timeout).close()
        except OSError as e:
            raise BackendError(f"cannot connect to the Ray cluster at {self.address}: {e}") from e

    def connect_for_poll(self) -> ModuleType | None:
        """`connect` for `poll`, which must not raise: None (and a warning) while the cluster is away."""
        now = time.monotonic()
        if now < self._poll_connect_after:
            return None
        try:
            return self.connect()
        except BackendError as e:
            self._poll_connect_after = now + POLL_RECONNECT
            log.warning("cannot check the replicas' Ray actors (trying again in %g s): %s", POLL_RECONNECT, e)
            return None

    def actor(self, ray: ModuleType, name: str) -> Any:
        """The actor's handle, None when there is no such actor (any more)."""
        actor = self.actors.get(name)
        if actor is None:
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
            self.actors[name] = actor
        return actor

    async def gather(self, ray: ModuleType, refs: list[Any], timeout: float, what: str) -> list[Any]:
        """The results of `refs`, or `BackendError` saying what failed first or that time ran out."""
        results = await settle(ray, refs, timeout)
        for result in results:
            if isinstance(result, TimeoutError):
                raise BackendError(f"{what} did not start in {timeout:g} s")
            if isinstance(result, BaseException):
                raise BackendError(f"{what} did not start: {reason(result)}")
        return results

    def leftovers(self, ray: ModuleType, uid: str) -> tuple[list[str], list[str]]:
        """The actors and placement groups of owner `uid` (of any attempt) that are there now."""
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

    async def abort(self, ray: ModuleType, names: list[str], groups: list[str]) -> None:
        """Stops the replicas of the actors `names` at once, then removes the actors and `groups`."""

        def stop() -> list[Any]:
            return [a.stop.remote() for a in (self.actor(ray, name) for name in names) if a is not None]

        refs = await asyncio.to_thread(stop)
        await settle(ray, refs, KILL_TIMEOUT + RAY_MARGIN)
        await asyncio.to_thread(self.remove, ray, names, groups)

    def remove(self, ray: ModuleType, names: Iterable[str], groups: Iterable[str]) -> None:
        """Kills the actors `names`, and removes each group of `groups` that has no other actor left."""
        from ray.util import get_placement_group, remove_placement_group

        names, groups = list(names), list(groups)
        for name in names:
            actor = self.actor(ray, name)
            self.actors.pop(name, None)
            self.checks.pop(name, None)
            self.checked.pop(name, None)
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


async def settle(ray: ModuleType, refs: list[Any], timeout: float) -> list[Any]:
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


def choose_strategy(ray: ModuleType, replicas: int, cpus_per_replica: float) -> str:
    """STRICT_SPREAD when enough live nodes can each hold a replica, else PACK."""
    able = [
        node
        for node in ray.nodes()
        if node.get("Alive") and node.get("Resources", {}).get("CPU", 0.0) >= cpus_per_replica
    ]
    return "STRICT_SPREAD" if len(able) >= replicas else "PACK"


def capacity(ray: ModuleType) -> str:
    """What the cluster has, for the message of a gang it cannot place."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources().get("CPU", 0.0)
        free = ray.available_resources().get("CPU", 0.0)
    except Exception as e:  # only for a message
        return f"the cluster's resources are unknown ({reason(e)})"
    per_node = ", ".join(
        f"{n.get('NodeManagerAddress')}: {n.get('Resources', {}).get('CPU', 0):g}" for n in nodes
    )
    return f"the cluster has {len(nodes)} live node(s) ({per_node} CPU), {free:g} of {total:g} CPU free"
