"""A lineage model version ⇄ the domain's `RegisteredVersion`."""

from __future__ import annotations

import datetime as dt

from pai.lineage.v1 import model_pb2
from pai_dlc.domain.outputs import RegisteredVersion


def registered(v: model_pb2.ModelVersion) -> RegisteredVersion:
    created = v.create_time.ToDatetime(dt.UTC) if v.HasField("create_time") else None
    return RegisteredVersion(v.name, v.source_job, v.artifact_uri, created)
