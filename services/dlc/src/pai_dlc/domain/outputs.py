"""Which model version a job's output became: lineage registers a succeeded job's output directory as
the next version of the job's output model and says so; the job takes the version only if it is
really its own output."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pai_dlc.domain.job import Job, JobState


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version lineage registered (`workspaces/w/models/m/versions/v`)."""

    name: str
    source_job: str
    artifact_uri: str
    create_time: dt.datetime | None

    @property
    def model(self) -> str:
        return self.name.rsplit("/versions/", 1)[0]


def takes(job: Job, v: RegisteredVersion) -> bool:
    """Only a SUCCEEDED job that asked for that model, has no version yet, and whose output directory
    is the version's artifact takes it, and not a version registered before the job ended: a version
    registered by hand with `source_job`, or the output of an earlier job deleted and created again
    under the same name, is left alone."""
    if job.state != JobState.SUCCEEDED or job.output_model_version:
        return False
    if v.model != job.spec.output_model or v.artifact_uri != job.spec.output_uri:
        return False
    return not (v.create_time is not None and job.end_time is not None and v.create_time < job.end_time)
