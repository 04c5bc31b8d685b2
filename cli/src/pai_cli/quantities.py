"""Resource amounts as people write them (`gpu=0.5,cpu=16,memory=64Gi`) and as the scheduler counts them.

The scheduler's units: CPU in milli-cores, memory in bytes, GPU in milli-GPUs (1000 = one card).
People write cores, cards (fractions allowed, to a thousandth) and memory with a binary suffix.
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation

from pai.scheduler.v1 import types_pb2

MILLI = 1000
# What the scheduler's `available` says when nothing at this level limits a resource (1 << 62).
UNLIMITED = 1 << 61
EMPTY = "-"

_BINARY = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|Pi)?")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ALIASES = {"gpu": "gpu", "cpu": "cpu", "memory": "memory", "mem": "memory"}
_SYNTAX = "amounts are KEY=VALUE[,KEY=VALUE...] with keys gpu, cpu, memory and gpu/<MODEL>"


class AmountError(ValueError):
    """An amount that cannot be read; the message says what is expected."""


def _decimal(value: str, what: str) -> Decimal:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise AmountError(f"{what} is not a number: {value!r}") from None
    if not number.is_finite() or number < 0:
        raise AmountError(f"{what} must be a number of at least 0: {value!r}")
    return number


def _milli(value: str, what: str, unit: str) -> int:
    """`0.5` (of `unit`) → 500; more precision than a thousandth is refused, not rounded away."""
    number = _decimal(value, what) * MILLI
    if number != number.to_integral_value():
        raise AmountError(f"{what} is counted in thousandths of {unit} at most: {value!r}")
    return int(number)


def gpu_milli(value: str) -> int:
    """GPU cards, possibly fractional (`4`, `0.5`), in milli-GPUs."""
    return _milli(value, "gpu", "a card")


def cpu_milli(value: str) -> int:
    """CPU cores (`16`, `0.5`) or milli-cores (`500m`), in milli-cores."""
    text = value.strip()
    if text.endswith("m"):
        number = _decimal(text[:-1], "cpu")
        if number != number.to_integral_value():
            raise AmountError(f"cpu in milli-cores must be a whole number: {value!r}")
        return int(number)
    return _milli(text, "cpu", "a core")


def memory_bytes(value: str) -> int:
    """Bytes, or a number with Ki, Mi, Gi, Ti or Pi (`64Gi`, `1.5Ti`), in bytes."""
    match = _MEMORY.fullmatch(value.strip())
    if match is None:
        raise AmountError(f"memory is bytes or a number with Ki, Mi, Gi, Ti or Pi (e.g. 64Gi): {value!r}")
    number = Decimal(match.group(1)) * _BINARY[match.group(2) or ""]
    if number != number.to_integral_value():
        raise AmountError(f"memory must come to a whole number of bytes: {value!r}")
    return int(number)


def parse_limits(text: str) -> types_pb2.ResourceLimits:
    """`gpu=4,cpu=16,memory=64Gi,gpu/A100=2` as ResourceLimits; only the keys given are set."""
    limits = types_pb2.ResourceLimits()
    seen: set[str] = set()
    models: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise AmountError(f"{_SYNTAX}, e.g. gpu=4,cpu=16,memory=64Gi: got {part.strip()!r}")
        lowered = key.lower()
        resource = _ALIASES.get(lowered) or (f"gpu/{key[4:]}" if lowered.startswith("gpu/") else key)
        if resource in seen:
            raise AmountError(f"{resource} is given twice")
        seen.add(resource)
        if resource == "gpu":
            limits.gpu_milli = gpu_milli(value)
        elif resource == "cpu":
            limits.cpu_milli = cpu_milli(value)
        elif resource == "memory":
            limits.memory_bytes = memory_bytes(value)
        elif resource.startswith("gpu/"):
            model = resource[4:]
            if not _MODEL.fullmatch(model):
                raise AmountError(f"not a GPU model name (like A100 or V100M32): {model!r}")
            models[model] = _milli(value, resource, "a card")
        else:
            raise AmountError(f"unknown resource {key!r}: {_SYNTAX}")
    for model in sorted(models):
        limits.gpu_models.append(types_pb2.GpuModelAmount(model=model, gpu_milli=models[model]))
    return limits


def limits_argument(text: str) -> types_pb2.ResourceLimits:
    """An argparse type for `--min` / `--max`: a bad amount is a usage error (exit 2)."""
    try:
        return parse_limits(text)
    except AmountError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# Formatting, for tables.


def milli_text(milli: int) -> str:
    """Milli-units as a decimal: 4000 → `4`, 500 → `0.5`, 1250 → `1.25`."""
    if milli >= UNLIMITED:
        return "unlimited"
    sign = "-" if milli < 0 else ""
    whole, rest = divmod(abs(milli), MILLI)
    return f"{sign}{whole}" + (f".{rest:03d}".rstrip("0") if rest else "")


def memory_text(n_bytes: int) -> str:
    """Bytes in the largest binary unit that keeps them readable: `64Gi`, `1.5Ti`, `512`."""
    if n_bytes >= UNLIMITED:
        return "unlimited"
    for suffix, size in reversed(_BINARY.items()):
        if size > 1 and abs(n_bytes) >= size:
            value = n_bytes / size
            return f"{value:.0f}{suffix}" if n_bytes % size == 0 else f"{value:.1f}{suffix}"
    return str(n_bytes)


def limits_text(limits: types_pb2.ResourceLimits) -> str:
    """`gpu=4, cpu=16, memory=64Gi, gpu/A100=2`, only what is set; `-` when nothing is."""
    parts: list[str] = []
    if limits.HasField("gpu_milli"):
        parts.append(f"gpu={milli_text(limits.gpu_milli)}")
    if limits.HasField("cpu_milli"):
        parts.append(f"cpu={milli_text(limits.cpu_milli)}")
    if limits.HasField("memory_bytes"):
        parts.append(f"memory={memory_text(limits.memory_bytes)}")
    parts.extend(f"gpu/{m.model}={milli_text(m.gpu_milli)}" for m in limits.gpu_models)
    return ", ".join(parts) or EMPTY


def gpu_limit_text(limits: types_pb2.ResourceLimits) -> str:
    """The GPU part of limits: `4`, `4 (A100=2)`, `- (A100=2)`, or `-` when no GPU limit is set."""
    total = milli_text(limits.gpu_milli) if limits.HasField("gpu_milli") else EMPTY
    models = ", ".join(f"{m.model}={milli_text(m.gpu_milli)}" for m in limits.gpu_models)
    return f"{total} ({models})" if models else total
