"""Resource groups, nodes and quotas as the scheduler keeps them (what the API shows of them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pai_common.errors import bad_request
from pai_common.etags import Versioned
from pai_scheduler.domain.capacity import NodeInfo, Policy
from pai_scheduler.domain.quota import QuotaSpec


@dataclass
class ResourceGroup(Versioned):
    id: str
    uid: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"resourceGroups/{self.id}"


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    model: str
    memory_bytes: int = 0
    uuid: str = ""


@dataclass
class NodeRecord(Versioned):
    resource_group: str  # the group's id
    id: str
    uid: str
    source: str  # LOCAL | SIMULATED | RAY | KUBERNETES
    cpu_milli: int
    memory_bytes: int
    gpus: list[Gpu] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    display_name: str = ""
    provider_id: str = ""
    ready: bool = True
    state_message: str = ""
    cordoned: bool = False
    cordon_reason: str = ""
    report_time: dt.datetime | None = None
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"resourceGroups/{self.resource_group}/nodes/{self.id}"

    def info(self) -> NodeInfo:
        models = [g.model for g in sorted(self.gpus, key=lambda g: g.index)]
        return NodeInfo(
            self.id, self.cpu_milli, self.memory_bytes, models, dict(self.labels), self.ready, self.cordoned
        )


@dataclass
class QuotaRecord(Versioned):
    spec: QuotaSpec
    uid: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def resource_group(self) -> str:
        return self.spec.name.split("/")[1]


def check_gpu_indices(gpus: list[Gpu]) -> None:
    """A node's cards are numbered 0..n-1, each once; INVALID_NODE_GPUS on `node.gpus` otherwise."""
    indices = [g.index for g in gpus]
    if sorted(indices) != list(range(len(indices))):
        raise bad_request("node.gpus", "GPU indices must be 0..n-1, each once", "INVALID_NODE_GPUS")
