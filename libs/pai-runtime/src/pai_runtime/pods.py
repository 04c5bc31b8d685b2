"""From a gang's Kubernetes object and its pods, as the API server returns them, to how replicas ended.

Pure functions of JSON documents (camelCase keys, as `ApiClient.sanitize_for_serialization` gives
them), so they are tested on hand-written pods. Which pod is which replica is the owner's business
(`replica_of`, from the pod's labels); everything else is generic Kubernetes: pod phases, container
states, termination messages (a torchelastic error file, or the last lines of the log under
FallbackToLogsOnError), and the Succeeded/Complete/Failed conditions that workload objects carry.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pai_runtime.records import error_file_message, first_line
from pai_runtime.types import ReplicaExit

# The replica a pod runs ("worker-1"), from its labels; None for a pod that is none of the gang's.
ReplicaOf = Callable[[Mapping[str, Any]], str | None]

# Waiting reasons of a container that will not start without a change to the object.
CANNOT_START = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "ImagePullBackOff"}
)
_SUCCEEDED = ("Succeeded", "Complete")  # a kubeflow job's condition, a batch/v1 Job's


def replica_exits(
    obj: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    replicas: Sequence[str],
    *,
    replica_of: ReplicaOf,
    container: str = "",
    kind: str = "",
    deleted: bool = False,
) -> list[ReplicaExit]:
    """The replicas among `replicas` that have ended, judged from the gang's object (None once it is
    gone) and its pods.

    A replica ends when its pod ends (Succeeded, or Failed: the exit code and termination message of
    `container`, or of the pod's first container when "" is given), or when that container cannot
    start (an invalid image, an image that cannot be pulled, a bad container configuration). A replica
    without an ended pod ends with the object: lost when it failed or is gone (with its message),
    successful when it succeeded and the pod was cleaned up, killed when the owner deleted it
    (`deleted`). `kind` names the object in messages when the object itself is gone.
    """
    by_replica: dict[str, Mapping[str, Any]] = {}
    for doc in pods:
        name = replica_of(doc)
        if name is not None:
            by_replica[name] = doc
    what = f"the {(obj or {}).get('kind') or kind or 'object'}"
    finished = _finished(obj)
    out: list[ReplicaExit] = []
    for replica in replicas:
        pod = by_replica.get(replica)
        ended = _pod_exit(replica, pod, container) if pod is not None else None
        if ended is None:
            if deleted:
                message = f"killed: its owner deleted {what} (SIGTERM, SIGKILL after the grace period)"
                ended = ReplicaExit(replica, None, int(signal.SIGTERM), message)
            elif obj is None:
                ended = ReplicaExit(replica, None, message=f"{what} is gone", lost=True)
            elif finished is not None:
                state, message = finished
                if state == "Succeeded" and pod is None:
                    ended = ReplicaExit(replica, 0, message=f"{what} succeeded: {message}")
                elif state == "Failed":
                    ended = ReplicaExit(replica, None, message=f"{what} failed: {message}", lost=True)
        if ended is not None:
            out.append(ended)
    return out


def ready_replicas(
    pods: Sequence[Mapping[str, Any]], replicas: Sequence[str], *, replica_of: ReplicaOf
) -> set[str]:
    """The replicas among `replicas` whose pod runs and has the condition Ready (its containers'
    readiness probes, which the owner's manifest defines, pass)."""
    out: set[str] = set()
    for pod in pods:
        name = replica_of(pod)
        status = pod.get("status") or {}
        if name not in replicas or status.get("phase") != "Running":
            continue
        conditions = status.get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            out.add(str(name))
    return out


def _finished(obj: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """("Succeeded" | "Failed", message) once the object has that condition."""
    if obj is None:
        return None
    for cond in (obj.get("status") or {}).get("conditions") or []:
        kind = cond.get("type")
        if cond.get("status") == "True" and (kind in _SUCCEEDED or kind == "Failed"):
            state = "Failed" if kind == "Failed" else "Succeeded"
            return state, str(cond.get("message") or cond.get("reason") or "")
    return None


def _container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == container or not container:
            return dict(status)
    return {}


def _pod_exit(replica: str, pod: Mapping[str, Any], container: str) -> ReplicaExit | None:
    phase = (pod.get("status") or {}).get("phase")
    status = _container_status(pod, container)
    state = status.get("state") or {}
    if phase not in ("Succeeded", "Failed"):
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in CANNOT_START:
            message = f"cannot start: {waiting['reason']}" + (
                f": {waiting['message']}" if waiting.get("message") else ""
            )
            details = str(waiting.get("message") or "")
            return ReplicaExit(replica, None, message=first_line(message), details=details)
        return None
    terminated = state.get("terminated") or (status.get("lastState") or {}).get("terminated") or {}
    if not terminated:
        reason = pod.get("status", {}).get("reason") or phase
        message = pod.get("status", {}).get("message") or ""
        exit_code = 0 if phase == "Succeeded" else None
        text = f"pod {phase.lower()}: {reason}" + (f": {message}" if message else "")
        return ReplicaExit(replica, exit_code, message=first_line(text), lost=exit_code is None)
    code = terminated.get("exitCode")
    exit_code = code if isinstance(code, int) else (0 if phase == "Succeeded" else None)
    sig = terminated.get("signal")
    sig = sig if isinstance(sig, int) else 0
    when = time_ns(terminated.get("finishedAt"))
    if exit_code == 0:
        return ReplicaExit(replica, 0, message="exit code 0", time_ns=when)
    head = f"exit code {exit_code}" if exit_code is not None else f"killed by signal {sig}"
    reason = terminated.get("reason")
    if reason and reason not in ("Error", "Completed"):
        head += f" ({reason})"
    summary, details = termination_message(str(terminated.get("message") or ""))
    message = f"{head}: {summary}" if summary else head
    return ReplicaExit(replica, exit_code, sig, first_line(message), details, time_ns=when)


def termination_message(text: str) -> tuple[str, str]:
    """(one line, details) from a termination message: a torchelastic error file or the log's tail."""
    try:
        doc = json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        return (lines[-1] if lines else ""), text
    return error_file_message(doc) or ("", text)


def time_ns(value: Any) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time ("...Z" from the API server, "+00:00" from the
    client's serialization); 0 when there is none."""
    if not isinstance(value, str):
        return 0
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return calendar.timegm(when.utctimetuple()) * 1_000_000_000 + when.microsecond * 1000
