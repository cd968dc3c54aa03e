"""How large one ranged GET should be: about a second's worth at the rate single streams get from the source.

Across a long, lossy link one TCP stream is slow (CUBIC at 150 ms RTT and 1% loss: ~0.1 MB/s), so a part is
best read as many small ranges in parallel; on a fast path a stream moves hundreds of MB/s and splitting a part
only adds requests. The sizer learns the per-stream rate from finished GETs (a moving average) and sizes the
next ranges from it, between a floor and the part itself. Until a read has finished it assumes the slow case:
the first parts of a run start together, and a far source would otherwise be read a few streams at a time for
the whole of a large object, while on a fast path the extra requests of that first wave cost little.
The floor is small (256 KiB) because readers take pieces as their streams come free (reads.RangedReads):
at 150 ms RTT and 1% loss under CUBIC, a 64 MiB object read as 256 KiB pieces took 7.4-8.5 s, as 1 MiB pieces
12.4-13.0 s (a stream stalled by a loss holds up less); under BBR it cost 0.2-0.4 s of 5 s.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB


class ReadSizer:
    """Piece size for ranged GETs: `fixed_bytes` when set, else learned (starting at `initial_bytes`)."""

    def __init__(self, fixed_bytes: int = 0, initial_bytes: int = 256 * KiB, min_bytes: int = 256 * KiB,
                 target_s: float = 1.0, weight: float = 0.2):
        self._fixed = fixed_bytes
        self._initial = initial_bytes
        self._min = min_bytes
        self._target_s = target_s
        self._weight = weight
        self.rate_bytes_per_s: float | None = None

    def piece_bytes(self) -> int:
        if self._fixed:
            return self._fixed
        if self.rate_bytes_per_s is None:
            return self._initial
        return max(self._min, int(self.rate_bytes_per_s * self._target_s))

    def observe(self, nbytes: int, seconds: float) -> None:
        """One finished GET of `nbytes` that took `seconds` (request to last byte). Short reads say more
        about latency than rate, so only reads of at least the floor size count."""
        if nbytes < self._min or seconds <= 0:
            return  # (learnt with a fixed size too: it also says whether a read keeps up with a sender)
        rate = nbytes / seconds
        previous = self.rate_bytes_per_s
        self.rate_bytes_per_s = rate if previous is None else previous + self._weight * (rate - previous)
