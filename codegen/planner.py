"""Static memory planning: every buffer gets an offset in one arena, fixed at compile time.

1. Each buffer has a size and a lifetime [first, last] in step indices (inclusive): activations live from
   the step that writes them to the last step that reads them, kernel scratch only during its step, and
   callers (the trainer) may add buffers of their own with any lifetime.
2. Buffers are placed one by one, each at the lowest aligned offset where it overlaps no already-placed buffer
   that is alive at the same time, in two orders: largest first (ties: earliest first use; TFLM's greedy-by-size
   planner), and longest-lived first; the order giving the smaller arena is kept.
3. The arena is the highest end offset. `check_overlaps` verifies the result independently.
"""
from dataclasses import dataclass

ALIGN = 8


@dataclass
class Buffer:
    name: str
    size: int
    first: int
    last: int
    offset: int = -1


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _alive_together(a, b):
    return a.first <= b.last and b.first <= a.last


# Orders tried (the smallest arena wins): greedy by size (TFLM's), and longest-lived first, which stacks the
# buffers alive all along (a trainer's weights and kept activations) below the short-lived ones.
ORDERS = (lambda b: (-b.size, b.first, b.name), lambda b: (b.first - b.last, -b.size, b.name))


def _place(buffers, order):
    placed = []
    for buf in sorted(buffers, key=order):
        if buf.size == 0:
            buf.offset = 0
            continue
        offset = 0
        for other in sorted((p for p in placed if _alive_together(p, buf)), key=lambda p: p.offset):
            if offset + buf.size <= other.offset:
                break  # fits in the gap below `other`
            offset = max(offset, _align(other.offset + other.size))
        buf.offset = offset
        placed.append(buf)
    return max((_align(b.offset + b.size) for b in buffers), default=0)


def plan(buffers):
    """Assign `offset` to every buffer; returns the arena size in bytes."""
    best = min((_place(buffers, order), k) for k, order in enumerate(ORDERS))
    return _place(buffers, ORDERS[best[1]])


def check_overlaps(buffers):
    """Pairs of buffers alive at the same time whose bytes overlap (empty when the plan is sound)."""
    bad = []
    live = [b for b in buffers if b.size]
    for i, a in enumerate(live):
        for b in live[i + 1:]:
            if _alive_together(a, b) and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                bad.append((a.name, b.name))
    return bad


def render(buffers, arena_bytes, width=64):
    """The plan as text: one row per buffer, its bytes drawn over the arena, then its lifetime."""
    scale = max(arena_bytes, 1) / width
    rows = [f"arena {arena_bytes:,} B; each column {scale:,.0f} B"]
    for b in sorted(buffers, key=lambda b: (b.first, b.offset)):
        start, end = int(b.offset / scale), max(int(b.offset / scale) + 1, int((b.offset + b.size) / scale))
        bar = "." * start + "#" * (end - start) + "." * max(0, width - end)
        rows.append(f"{bar[:width]} {b.offset:>7} +{b.size:<7} steps {b.first}-{b.last}  {b.name}")
    return "\n".join(rows)
