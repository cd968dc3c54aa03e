"""How much transfer capacity to ask for, from the remaining work (pure): whether starting Ray pays at all on
the embedded default, and how many transfer slots to ask the Ray autoscaler for on a cluster.

The driver requests `transfer_slot` bundles that worker nodes advertise (see cluster.yaml); the request
follows the backlog: it grows at most by `max_growth` (or `min_step`) per decision so a burst does not
launch a fleet at once, shrinks as soon as the backlog does, and drops to zero when nothing is left, so
idle nodes scale down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class ScalePolicy:
    shards_per_slot: float = 1.0  # a pending shard keeps one slot busy
    bytes_per_slot: int = 4 * GiB  # decided-but-uncopied bytes one slot works off
    max_slots: int = 1024
    max_growth: float = 2.0
    min_step: int = 8


def slots_wanted(pending_shards: int, pending_bytes: int, requested: int, policy: ScalePolicy) -> int:
    """Transfer slots to request now, given the backlog and the slots requested so far."""
    if pending_shards <= 0 and pending_bytes <= 0:
        return 0
    want = max(math.ceil(pending_shards / policy.shards_per_slot), math.ceil(pending_bytes / policy.bytes_per_slot), 1)
    want = min(want, policy.max_slots)
    if want > requested:
        want = min(want, max(int(requested * policy.max_growth), requested + policy.min_step))
    return want


# Ray's start-up costs this machine class ~3 s of wall and ~3-5 s of CPU, its daemons ~0.5 GB (measured:
# README, "Ray only when it pays"); actors add CPUs only where the machine has them to give.
RAY_PAYS_AFTER_S = 30.0  # default of runtime.ray_pays_after_s: the driver alone would need longer than this
RAY_LOOK_AFTER_S = 2.0  # rates need this much work behind them before they mean anything


@dataclass(frozen=True)
class Backlog:
    """What a run has done and what is left, as far as the driver can tell while it runs."""

    elapsed_s: float  # since the driver started copying
    done_objects: int  # results known (copied, skipped, failed)
    done_bytes: int  # of those, bytes listed
    left_objects: int  # estimated still to decide (unlisted shards' share), listed not decided, in flight
    left_bytes: int


def remaining_s(b: Backlog) -> float | None:
    """The time the driver alone would need for what is left, at its rate so far; None before the rates mean
    anything (too early, nothing done yet)."""
    if b.elapsed_s < RAY_LOOK_AFTER_S or b.done_objects == 0:
        return None
    by_objects = b.left_objects / (b.done_objects / b.elapsed_s)
    by_bytes = b.left_bytes / (b.done_bytes / b.elapsed_s) if b.done_bytes else 0.0
    return max(by_objects, by_bytes)


def ray_pays(b: Backlog, threshold_s: float = RAY_PAYS_AFTER_S) -> bool:
    """Whether starting Ray and its actors beside the driver pays: the driver alone needs longer than
    `threshold_s` for what is left, or it has been working that long with nothing done at all."""
    left = remaining_s(b)
    if left is None:
        return b.elapsed_s >= threshold_s and (b.left_objects > 0 or b.left_bytes > 0)
    return left > threshold_s
