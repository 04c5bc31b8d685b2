"""`pai.dlc.report`: how training code tells the platform its metrics (hand-written, not generated).

    from pai.dlc import report
    report(step=100, loss=0.25, accuracy=0.91)

It prints one line, `@pai.metric {"step": 100, "loss": 0.25, "accuracy": 0.91}`, on stdout and
flushes it; dlc reads those lines from the replica's log (`QueryJobMetrics`, `pai job metrics`, sweeps'
objectives). Nothing else is imported, and code in any language can print the same line.
"""

from __future__ import annotations

import json
import math
import sys
from typing import TextIO

PREFIX = "@pai.metric "

__all__ = ["PREFIX", "report"]


def report(step: int, *, stream: TextIO | None = None, **metrics: float) -> None:
    """Report `metrics` (names to finite numbers) at training step `step`."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if not metrics:
        raise ValueError("report at least one metric, e.g. report(step=1, loss=0.5)")
    values: dict[str, int | float] = {"step": step}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"metric {name} must be a finite number, got {value!r}")
        values[name] = float(value)
    out = stream if stream is not None else sys.stdout
    out.write(PREFIX + json.dumps(values) + "\n")
    out.flush()
