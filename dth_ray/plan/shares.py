"""Job-wide budgets split among workers (pure): each worker's share of a rate, from what it used lately.

Max-min fairness by water-filling: a worker that used little gets a little more than it used (room to grow),
one that waited for tokens is asking for more; what the modest ones leave is shared by the others. The shares
always sum to the total, and none is below a floor, so an idle worker can start at once.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOOR_FRACTION = 0.02  # of the total: the least share a worker gets (an idle one can start without waiting)
GROWTH = 1.25  # a worker that did not wait may grow by this much before its next share
STARVED = 2.0  # one that waited asks for twice what it got


@dataclass(frozen=True, slots=True)
class Demand:
    """What one worker did with its share over the last interval."""

    used_per_s: float  # tokens (requests or bytes) it took per second
    waited: bool  # it waited for tokens: its share held it back


def allocate(total: float, demands: dict[str, Demand], floor_fraction: float = FLOOR_FRACTION) -> dict[str, float]:
    """Each worker's share of `total` (> 0); the shares sum to `total`. {} for no workers."""
    if not demands:
        return {}
    n = len(demands)
    floor = min(total * floor_fraction, total / n)
    want = {w: max(floor, d.used_per_s * (STARVED if d.waited else GROWTH)) for w, d in demands.items()}
    shares: dict[str, float] = {}
    left, pending = total, sorted(want, key=want.__getitem__)
    while pending:
        fair = left / len(pending)
        worker = pending[0]
        if want[worker] > fair:  # everyone left wants more than an equal split: split what is left
            for w in pending:
                shares[w] = fair
            return shares
        shares[worker] = want[worker]
        left -= want[worker]
        pending.pop(0)
    # Everyone got what they asked for: the rest goes to all alike (room to grow before the next share).
    extra = left / n
    return {w: s + extra for w, s in shares.items()}
