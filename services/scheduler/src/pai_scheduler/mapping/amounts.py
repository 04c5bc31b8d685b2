"""Resource amounts on the wire: `Resources` (what is held) and `ResourceLimits` (what may be)."""

from __future__ import annotations

from collections.abc import Mapping

from pai.scheduler.v1 import types_pb2
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, Amounts


def resources(amounts: Mapping[str, int]) -> types_pb2.Resources:
    models = sorted((k[4:], v) for k, v in amounts.items() if k.startswith("gpu/"))
    return types_pb2.Resources(
        cpu_milli=max(0, amounts.get(CPU, 0)),
        memory_bytes=max(0, amounts.get(MEMORY, 0)),
        gpu_milli=max(0, amounts.get(GPU, 0)),
        gpu_models=[types_pb2.GpuModelAmount(model=m, gpu_milli=max(0, v)) for m, v in models],
    )


def limits_from(msg: types_pb2.ResourceLimits) -> Amounts:
    out: Amounts = {}
    for field_name, key in (("cpu_milli", CPU), ("memory_bytes", MEMORY), ("gpu_milli", GPU)):
        if msg.HasField(field_name):  # type: ignore[arg-type]
            out[key] = getattr(msg, field_name)
    for m in msg.gpu_models:
        out[f"gpu/{m.model}"] = m.gpu_milli
    return out


def limits(amounts: Mapping[str, int]) -> types_pb2.ResourceLimits:
    out = types_pb2.ResourceLimits(
        gpu_models=[
            types_pb2.GpuModelAmount(model=k[4:], gpu_milli=v)
            for k, v in sorted(amounts.items())
            if k.startswith("gpu/")
        ]
    )
    if CPU in amounts:
        out.cpu_milli = amounts[CPU]
    if MEMORY in amounts:
        out.memory_bytes = amounts[MEMORY]
    if GPU in amounts:
        out.gpu_milli = amounts[GPU]
    return out
