"""The Kubernetes backend: each gang is one object that the owner describes (`GangLaunch.manifest`).

The owner alone knows the object's shape (dlc's PyTorchJob, a Deployment for model servers); this
backend creates whatever the manifest holds, watches the pods the object makes, and deletes it. The
manifest's `apiVersion` (`<group>/<version>`) and `kind` name the API: its plural is the lowercase
kind plus "s" unless the constructor's `plurals` says otherwise. Objects of the core group
(`apiVersion: v1`, a bare Pod) are not supported yet. The namespace is the manifest's, else the
backend's `namespace`.

The gang's pods are found by label: `pod_selector` of the object as the API server returns it, by
default every label of the object's metadata (so the pod templates must carry the object's labels);
an object without labels has no pods to this backend, rather than every pod of the namespace. The
owner's `replica_of` (given at construction) says which replica a pod runs, from its labels;
`container` names the container whose exit is the replica's ("": the pod's first). How pods become
`ReplicaExit`s is `pai_runtime.pods`.

Handles: `engine_ref` is `<group>/<version>/namespaces/<namespace>/<plural>/<name>` (the object's API
path); pid and pgid are 0 and the log, exit and error paths are "" (logs live in the API server).
`launch` returns once the object exists, not once its pods run; an object of that name left by an
earlier launch is adopted when it carries every label of the manifest, and refused otherwise. `poll`
never waits on the API server: it answers from the latest snapshot of each object and, when that is
older than `poll_interval`, starts a refresh in a thread. `ready` is the pods' Ready condition (the
kubelet runs the readiness probes the manifest defines), from a fresh snapshot. `kill` deletes the
object with propagation Foreground and its pods with the grace period asked for, then waits until the
object is gone. `replace` is not supported yet. The `kubernetes` package is imported on first use.

What is tested: no API server can run where the tests run, so the calls (create, get, list, delete)
have only been made with no server listening (they build the expected URLs, and failures surface as
`BackendError`); `pai_runtime.pods` is tested on hand-written pod documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pai_runtime.kubernetes_api import ApiError, KubernetesApi, ObjectRef, object_ref
from pai_runtime.pods import ReplicaOf, ready_replicas, replica_exits
from pai_runtime.types import BackendError, BackendInfo, GangLaunch, ReplicaExit, ReplicaHandle

__all__ = ["KubernetesBackend", "ObjectRef", "labels_selector"]

POLL_INTERVAL = 2.0  # seconds between two looks at one object
REQUEST_TIMEOUT = 30.0  # seconds for one request to the API server
KILL_TIMEOUT = 120.0  # seconds, after the grace period, for the object and its pods to be gone
_KILL_TICK = 0.5


def labels_selector(obj: Mapping[str, Any]) -> str:
    """The label selector of every label of `obj`'s metadata ("" when it has none)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@dataclass
class _Snapshot:
    taken: float  # loop or monotonic time
    obj: dict[str, Any] | None  # None: gone
    pods: list[dict[str, Any]]
    deleted: bool = False  # the owner deleted the object
    kind: str = ""


class KubernetesBackend:
    """Runs each gang as the Kubernetes object of its manifest (see the module's docstring).

    `api_client` is a configured `kubernetes.client.ApiClient`; without one the backend loads the
    in-cluster configuration when it runs in a pod, else `kubeconfig` (or the default kubeconfig)
    with `context`. Every request gives up after `request_timeout` seconds.
    """

    def __init__(
        self,
        *,
        replica_of: ReplicaOf,
        container: str = "",
        namespace: str = "default",
        plurals: Mapping[str, str] | None = None,
        pod_selector: Callable[[Mapping[str, Any]], str] = labels_selector,
        api_client: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        poll_interval: float = POLL_INTERVAL,
        kill_timeout: float = KILL_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.replica_of = replica_of
        self.container = container
        self.namespace = namespace
        self.plurals = dict(plurals or {})
        self.pod_selector = pod_selector
        self.poll_interval = poll_interval
        self.kill_timeout = kill_timeout
        self.info = BackendInfo("kubernetes", details={"namespace": namespace})
        self._api = KubernetesApi(api_client, kubeconfig, context, request_timeout)
        self._snapshots: dict[str, _Snapshot] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def launch(self, gang: GangLaunch) -> list[ReplicaHandle]:
        """Creates the gang's object (all or none: one object) and returns its replicas' handles.

        The API server rejects fields the object's schema does not know (fieldValidation=Strict)
        rather than drop them.
        """
        what = f"{gang.owner} attempt {gang.attempt}"
        ref, body = object_ref(gang.manifest, self.namespace, self.plurals, what)
        try:
            await self._api.create(ref, body, f"{what}: cannot create {ref}")
        except ApiError as e:
            if e.status != 409:
                raise
            existing = await self._api.get(ref)
            wanted = (body.get("metadata") or {}).get("labels") or {}
            found = ((existing or {}).get("metadata") or {}).get("labels") or {}
            if not wanted or any(found.get(k) != v for k, v in wanted.items()):
                raise BackendError(f"{what}: {ref} exists and is not this gang's") from e
        self._snapshots.pop(str(ref), None)
        return [
            ReplicaHandle(
                replica=r.replica,
                rank=r.rank,
                attempt=gang.attempt,
                pid=0,
                pgid=0,
                log_path="",
                exit_path="",
                error_path="",
                engine_ref=str(ref),
                readiness=r.readiness,
            )
            for r in gang.replicas
        ]

    def poll(self, handles: Sequence[ReplicaHandle]) -> list[ReplicaExit]:
        """The replicas that ended, as of the latest look at their object (never waits on the API
        server: a look older than `poll_interval` is renewed in the background, for a later poll)."""
        ended: list[ReplicaExit] = []
        for ref, names in _by_ref(handles).items():
            snapshot = self._snapshots.get(ref)
            if snapshot is None or _now() - snapshot.taken >= self.poll_interval:
                self._refresh_soon(ref)
            if snapshot is not None:
                ended += replica_exits(
                    snapshot.obj,
                    snapshot.pods,
                    names,
                    replica_of=self.replica_of,
                    container=self.container,
                    kind=snapshot.kind,
                    deleted=snapshot.deleted,
                )
        return ended

    async def ready(self, handles: Sequence[ReplicaHandle]) -> set[str]:
        """The server replicas among `handles` whose pod is Ready, from a look at most `poll_interval`
        old (one request per object when it is older; a failed look makes none ready)."""
        out: set[str] = set()
        servers = [h for h in handles if h.readiness is not None]
        for ref, names in _by_ref(servers).items():
            snapshot = self._snapshots.get(ref)
            if snapshot is None or _now() - snapshot.taken >= self.poll_interval:
                with contextlib.suppress(BackendError):
                    await self._refresh(ref)
                snapshot = self._snapshots.get(ref)
            if snapshot is not None and snapshot.obj is not None:
                out |= ready_replicas(snapshot.pods, names, replica_of=self.replica_of)
        return out

    async def replace(self, gang: GangLaunch, handle: ReplicaHandle, grace: float) -> ReplicaHandle:
        """Not supported by this backend yet: raises `BackendError` (kill the gang and launch it again)."""
        raise BackendError("replacing one replica is not supported by this backend yet")

    async def unrecorded(self, run_dir: str, attempt: int) -> list[ReplicaHandle]:
        """None to find: the object is named by its owner after the attempt, and `launch` adopts one
        that an earlier launch of the same attempt created."""
        return []

    async def kill(self, handles: Sequence[ReplicaHandle], grace: float) -> None:
        """Deletes each handle's object (propagation Foreground) and its pods with `grace` seconds to
        stop, then waits until the object is gone; `BackendError` if it is still there `kill_timeout`
        seconds after the grace period.

        The object goes first: a controller leaves an object being deleted alone, so it recreates no
        pod. The pods are then deleted with `grace` (the garbage collector would give them their own).
        """
        refs = sorted({h.engine_ref for h in handles if h.engine_ref})
        seconds = max(0, math.ceil(grace))
        for ref in refs:
            with contextlib.suppress(BackendError):  # what already ended keeps its real exit
                await self._refresh(ref)
            snapshot = self._snapshots.get(ref)
            selector = self.pod_selector(snapshot.obj) if snapshot and snapshot.obj else ""
            await self._api.delete(ObjectRef.parse(ref), selector, seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds + self.kill_timeout
        waiting = list(refs)
        while waiting:
            for ref in list(waiting):
                if await self._api.get(ObjectRef.parse(ref)) is None:
                    waiting.remove(ref)
                    old = self._snapshots.get(ref) or _Snapshot(0.0, None, [])
                    self._snapshots[ref] = _Snapshot(_now(), old.obj, old.pods, True, old.kind)
            if waiting and loop.time() > deadline:
                late = seconds + self.kill_timeout
                raise BackendError(f"{', '.join(waiting)} still there {late:.0f} s after being deleted")
            if waiting:
                await asyncio.sleep(_KILL_TICK)

    # Snapshots.

    async def _refresh(self, ref: str) -> None:
        """Takes a new snapshot of the object and its pods."""
        parsed = ObjectRef.parse(ref)
        obj = await self._api.get(parsed)
        pods: list[dict[str, Any]] = []
        selector = self.pod_selector(obj) if obj is not None else ""
        if selector:
            pods = await self._api.pods(parsed.namespace, selector, f"cannot list the pods of {ref}")
        old = self._snapshots.get(ref)
        kind = str((obj or {}).get("kind") or (old.kind if old else ""))
        self._snapshots[ref] = _Snapshot(_now(), obj, pods, bool(old and old.deleted), kind)

    def _refresh_soon(self, ref: str) -> None:
        if ref in self._refreshing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop: nothing can refresh in the background
        self._refreshing.add(ref)

        async def refresh() -> None:
            try:
                await self._refresh(ref)
            except BackendError:
                pass  # not an exit: the next poll looks again
            finally:
                self._refreshing.discard(ref)

        task = loop.create_task(refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _by_ref(handles: Sequence[ReplicaHandle]) -> dict[str, list[str]]:
    by_ref: dict[str, list[str]] = {}
    for handle in handles:
        by_ref.setdefault(handle.engine_ref, []).append(handle.replica)
    return by_ref


def _now() -> float:
    return time.monotonic()
