"""Draw the extension's toolbar icons (extension/icons/icon-{16,32,48,128}.png).

A blue rounded square with a three-node workflow graph in white; pure Python (zlib), so
it needs no imaging library. Run: python tests/e2e/make_icons.py
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "extension" / "icons"
BLUE = (29, 95, 209)
WHITE = (255, 255, 255)
NODES = [(0.30, 0.30), (0.30, 0.70), (0.72, 0.50)]
EDGES = [(0, 2), (1, 2)]


def _seg_dist(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def _sample(x: float, y: float, size: int) -> tuple[float, float]:
    """(inside the rounded square, inside the white drawing) for a point in 0..1 units."""
    r = 0.2
    cx, cy = min(max(x, r), 1 - r), min(max(y, r), 1 - r)
    inside = math.hypot(x - cx, y - cy) <= r
    node_r = 0.12 if size > 16 else 0.14
    line_w = 0.055 if size > 16 else 0.08
    white = any(math.hypot(x - nx, y - ny) <= node_r for nx, ny in NODES)
    white = white or any(_seg_dist(x, y, *NODES[a], *NODES[b]) <= line_w for a, b in EDGES)
    return float(inside), float(inside and white)


def render(size: int, ss: int = 4) -> bytes:
    rows = []
    for j in range(size):
        row = bytearray([0])  # filter: none
        for i in range(size):
            a = w = 0.0
            for sj in range(ss):
                for si in range(ss):
                    ia, iw = _sample((i + (si + 0.5) / ss) / size, (j + (sj + 0.5) / ss) / size, size)
                    a += ia
                    w += iw
            a /= ss * ss
            w /= ss * ss
            mix = w / a if a else 0.0
            rgb = [round(BLUE[k] * (1 - mix) + WHITE[k] * mix) for k in range(3)]
            row += bytes(rgb + [round(255 * a)])
        rows.append(bytes(row))
    raw = b"".join(rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (16, 32, 48, 128):
        (OUT / f"icon-{size}.png").write_bytes(render(size))
        print(OUT / f"icon-{size}.png")
