"""A small line chart written as a PNG with the standard library (zlib), for `pai job metrics --png`.

One panel per metric key, one line per rank, step on x, value on y; no text (the table printed beside
it names the series). Enough to see a loss fall without pulling a plotting library into the CLI.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))
PANEL_W, PANEL_H, MARGIN = 480, 200, 12

Series = tuple[str, int, Sequence[tuple[float, float]]]  # key, rank, (step, value) points


def render(series: Sequence[Series]) -> bytes:
    """PNG bytes: panels stacked vertically, one per key in the order first seen."""
    keys = list(dict.fromkeys(k for k, _, _ in series)) or ["-"]
    width, height = PANEL_W + 2 * MARGIN, len(keys) * (PANEL_H + MARGIN) + MARGIN
    pixels = bytearray(b"\xff" * (width * height * 3))

    def put(x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            i = (y * width + x) * 3
            pixels[i : i + 3] = bytes(rgb)

    def line(x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int]) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for t in range(steps + 1):
            x = x0 + (x1 - x0) * t // steps
            y = y0 + (y1 - y0) * t // steps
            put(x, y, rgb)
            put(x, y + 1, rgb)

    for p, key in enumerate(keys):
        top = MARGIN + p * (PANEL_H + MARGIN)
        left, bottom, right = MARGIN, top + PANEL_H, MARGIN + PANEL_W
        grey = (180, 180, 180)
        line(left, top, right, top, grey)
        line(left, bottom, right, bottom, grey)
        line(left, top, left, bottom, grey)
        line(right, top, right, bottom, grey)
        mine = [(rank, pts) for k, rank, pts in series if k == key and pts]
        xs = [x for _, pts in mine for x, _ in pts]
        ys = [y for _, pts in mine for _, y in pts]
        if not xs:
            continue
        x_lo, x_hi = min(xs), max(xs)
        y_lo, y_hi = min(ys), max(ys)
        x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
        for n, (_, pts) in enumerate(mine):
            rgb = COLOURS[n % len(COLOURS)]
            coords = [
                (
                    left + 4 + int((x - x_lo) / x_span * (PANEL_W - 8)),
                    bottom - 4 - int((y - y_lo) / y_span * (PANEL_H - 8)),
                )
                for x, y in pts
            ]
            if len(coords) == 1:
                put(*coords[0], rgb)
            for (a, b), (c, d) in itertools.pairwise(coords):
                line(a, b, c, d, rgb)
    return _png(width, height, pixels)


def _png(width: int, height: int, pixels: bytearray) -> bytes:
    """An RGB image as PNG bytes (filter 0 on every row)."""
    raw = b"".join(b"\x00" + bytes(pixels[y * width * 3 : (y + 1) * width * 3]) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
