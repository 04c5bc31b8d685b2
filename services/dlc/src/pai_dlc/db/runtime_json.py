"""A job's `Runtime` as the JSON of its row's `runtime` column (the keys rows have always had)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from pai_dlc.domain.runtime import Admission, Outcome, PreemptNotice, Runtime
from pai_runtime.types import ReplicaExit, ReplicaHandle


def dump(rt: Runtime) -> dict[str, Any]:
    out: dict[str, Any] = {"attempt": rt.attempt, "logs": {str(a): dict(f) for a, f in rt.logs.items()}}
    if rt.launching is not None:
        out["launching"] = rt.launching
    if rt.handles:
        out["handles"] = [dataclasses.asdict(h) for h in rt.handles]
    if rt.launched_ns:
        out["launched_ns"] = rt.launched_ns
    if rt.exits:
        out["exits"] = {name: dataclasses.asdict(ex) for name, ex in rt.exits.items()}
    if rt.finish is not None:
        out["finish"] = int(rt.finish)
    if rt.preempt is not None:
        out["preempt"] = {"deadline": rt.preempt.deadline.isoformat(), "message": rt.preempt.message}
    if rt.admitted is not None:
        out["admitted"] = {"nodes": rt.admitted.nodes, "version": rt.admitted.version}
    if rt.workload_version:
        out["workload_version"] = rt.workload_version
    if rt.queued_at is not None:
        out["queued_at"] = rt.queued_at.isoformat()
    if rt.stop_grace is not None:
        out["stop_grace"] = rt.stop_grace
    if rt.lost_workload:
        out["lost_workload"] = rt.lost_workload
    return out


def load(d: dict[str, Any] | None) -> Runtime:
    d = d or {}
    preempt, admitted, queued = d.get("preempt"), d.get("admitted"), d.get("queued_at")
    return Runtime(
        attempt=int(d.get("attempt", -1)),
        launching=int(d["launching"]) if d.get("launching") is not None else None,
        handles=[ReplicaHandle.from_dict(h) for h in d.get("handles", [])],
        logs={int(a): dict(files) for a, files in d.get("logs", {}).items()},
        launched_ns=int(d.get("launched_ns", 0)),
        exits={name: ReplicaExit(**ex) for name, ex in d.get("exits", {}).items()},
        finish=Outcome(int(d["finish"])) if d.get("finish") is not None else None,
        preempt=PreemptNotice(dt.datetime.fromisoformat(preempt["deadline"]), preempt["message"])
        if preempt
        else None,
        admitted=Admission(admitted["nodes"], int(admitted["version"])) if admitted else None,
        workload_version=int(d.get("workload_version", 0)),
        queued_at=dt.datetime.fromisoformat(queued) if queued else None,
        stop_grace=float(d["stop_grace"]) if d.get("stop_grace") is not None else None,
        lost_workload=str(d.get("lost_workload", "")),
    )
