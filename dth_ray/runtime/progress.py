"""What a run shows while it goes: a snapshot of its counts (one Tally) and what is in flight, and the
terminal line drawn from it."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from dth_ray.model import Tally


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run so far: every result known (settled or not) and the objects and bytes being copied now."""

    tally: Tally
    objects_in_flight: int = 0
    bytes_in_flight: int = 0
    shards_done: int = 0
    shards_total: int = 0


def progress_line(p: Snapshot, elapsed_s: float) -> str:
    """One status line: counts, bytes, rate, and an ETA for the copies already decided (listing streams)."""
    t = p.tally
    rate = t.bytes_copied / elapsed_s if elapsed_s > 0 else 0.0
    obj_rate = t.copied / elapsed_s if elapsed_s > 0 else 0.0
    eta = f"ETA {p.bytes_in_flight / rate:,.0f}s" if rate > 0 and p.bytes_in_flight > 0 else "ETA -"
    return (f"\rlisted {t.listed:,} · copied {t.copied:,} · skipped {t.skipped:,} · failed {t.failed:,} · "
            f"{t.bytes_copied / 1e6:,.1f} MB · {rate / 1e6:,.1f} MB/s · {obj_rate:,.0f} obj/s · "
            f"{eta} · {elapsed_s:,.0f}s ")


def terminal_progress(p: Snapshot, elapsed_s: float) -> None:
    sys.stderr.write(progress_line(p, elapsed_s))
    sys.stderr.flush()
