"""How much transfer capacity to ask the Ray autoscaler for, from the remaining work (pure).

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
