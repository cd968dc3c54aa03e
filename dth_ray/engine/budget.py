"""A byte budget and the reusable buffers it hands out: payload memory is taken from it before any GET, so peak
memory is bounded by design, and the same pages serve object after object (no zero-fill or page faults per
object: measured, a fresh 128 MiB bytearray per object put half of the copying thread in page faults)."""

from __future__ import annotations

import asyncio
import mmap
from contextlib import asynccontextmanager

# Buffers are rounded up (whole MiB from 4 MiB, 64 KiB below), so parts and objects of nearby sizes share them.
_ALIGN_LARGE, _ALIGN_SMALL, _LARGE = 1 << 20, 64 << 10, 4 << 20


class ByteBudget:
    """Async counting semaphore over bytes. A request larger than the whole budget waits for all of it.

    Small holds (up to 1/64 of the budget: whole small objects) may go past the budget by up to an eighth of
    it, so peak use is at most 9/8 of the capacity: large objects read across a slow link hold their bytes
    for a long time, and the small objects beside them must not wait that long. Measured at 150 ms RTT, 1%
    loss, CUBIC (2 × 128 MiB + 2,000 × 64 KiB; the two large ones took the driver lane's whole 256 MiB):
    23.2-25.1 s against 25.9-27.0 s in four alternating pairs. Reserving budget for small holds instead
    serialised the large ones (28 s).

    `buffer(n)` holds n bytes and lends a reusable buffer of them. Buffers returned stay idle for the next
    taker of their size class, but idle buffers count against the same bound as the bytes held: whenever
    held + idle would pass 9/8 × capacity, the largest idle ones are dropped (a hold that reads into its own
    bytes, such as a small object's GET, makes room too). So payload memory — buffers in use, idle ones and
    bodies read outside the pool — stays within 9/8 × capacity plus each lent buffer's rounding (under 1 MiB,
    or 64 KiB below 4 MiB). Measured before idle buffers counted: a mix of 1–16 MiB objects left the pool
    full of idle buffers of odd sizes beside the held bodies, 330–350 MB PSS for a 192 MiB budget (then the
    default; it is 160 MiB since, see README "Memory bound").
    """

    def __init__(self, capacity_bytes: int):
        self._set_capacity(capacity_bytes)
        self._free = capacity_bytes
        self._cond = asyncio.Condition()
        self._idle: dict[int, list[mmap.mmap]] = {}  # idle buffers by size (whole size classes, see _take)
        self._idle_bytes = 0
        self.pooled_bytes = 0  # bytes of every buffer allocated and not dropped (in use or idle)
        self.allocations = 0  # buffers allocated so far (a reuse does not count)

    def _set_capacity(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.small_bytes = capacity_bytes // 64
        self.overdraft_bytes = capacity_bytes // 8

    @property
    def in_use_bytes(self) -> int:
        return self.capacity_bytes - self._free

    async def resize(self, capacity_bytes: int) -> None:
        """Change the capacity. Bytes held stay held (after a cut, new holds wait until enough are given
        back); idle buffers beyond the new bound are dropped at once."""
        async with self._cond:
            self._free += capacity_bytes - self.capacity_bytes
            self._set_capacity(capacity_bytes)
            self._trim(0)
            self._cond.notify_all()

    @asynccontextmanager
    async def hold(self, nbytes: int):
        """Hold `nbytes` of the budget (for bytes read outside the pool: idle buffers make room for them)."""
        async with self._held(nbytes):
            self._trim(0)
            yield

    @asynccontextmanager
    async def _held(self, nbytes: int, unless=None):
        """Hold `nbytes`; yields True, or False (nothing held) when `unless()` said so while waiting."""
        async with self._cond:
            await self._cond.wait_for(lambda: (unless is not None and unless()) or self._fits(nbytes))
            held = not (unless is not None and unless()) and self._fits(nbytes)
            if held:
                taken = self._need(nbytes)
                self._free -= taken
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            async with self._cond:
                self._free += taken
                self._cond.notify_all()

    def _need(self, nbytes: int) -> int:
        """What a hold of `nbytes` takes: at most the whole capacity, as it is when asked (a resize may change
        it while a hold waits)."""
        return min(max(nbytes, 1), self.capacity_bytes)

    def _fits(self, nbytes: int) -> bool:
        need = self._need(nbytes)
        return self._free - need >= (-self.overdraft_bytes if need <= self.small_bytes else 0)

    @asynccontextmanager
    async def buffer(self, nbytes: int, unless=None):
        """Hold `nbytes` and lend a writable memoryview of exactly that many bytes, valid inside the block.
        `unless`: asked whenever the budget changes while this waits (and first); once it says True the wait
        ends and None is lent (nothing held): the caller has another way that needs less."""
        async with self._held(nbytes, unless) as held:
            if not held:
                yield None
                return
            buf = self._take(nbytes)  # an idle buffer of its class first: trimming before would drop it
            try:
                yield memoryview(buf)[:nbytes]
            finally:
                self._give(buf)

    def _take(self, nbytes: int) -> mmap.mmap:
        """An idle buffer of the request's size class, else a new one. Only that class is reused (never a much
        larger buffer for a small request), so buffers in use stay within the bytes held plus the rounding.

        Each buffer is its own anonymous mapping, not a bytearray on the C heap: a dropped buffer's pages go
        back to the system at once. Measured on the mixed set beside Ray (a 32 MiB budget, buffers of many
        sizes dropped and made again): heap buffers left the driver ~35 MB above its pool (freed, fragmented,
        kept by malloc); mappings held it at the pool's size. A new mapping's pages are zeroed by the kernel
        on first touch, as a bytearray's are by memset."""
        align = _ALIGN_LARGE if nbytes >= _LARGE else _ALIGN_SMALL
        size = -(-max(nbytes, 1) // align) * align
        same = self._idle.get(size)
        if same:  # held + idle does not grow: the bytes held now are at most the idle buffer's
            self._idle_bytes -= size
            return same.pop()
        self._trim(size - nbytes)  # the new buffer's rounding is memory too
        self.pooled_bytes += size
        self.allocations += 1
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def _trim(self, extra_bytes: int) -> None:
        """Drop the largest idle buffers while held + idle (+ `extra_bytes`) is above 9/8 × capacity."""
        limit = self.capacity_bytes + self.overdraft_bytes
        while self._idle_bytes and self.in_use_bytes + self._idle_bytes + extra_bytes > limit:
            largest = max(k for k, v in self._idle.items() if v)
            self._idle[largest].pop()
            self._idle_bytes -= largest
            self.pooled_bytes -= largest

    def _give(self, buf: mmap.mmap) -> None:
        self._idle.setdefault(len(buf), []).append(buf)
        self._idle_bytes += len(buf)


NEAR_RTT_S = 0.010  # a source that answers within this is near: a small budget keeps its link full


def budget_for_link(full_bytes: int, near_bytes: int, beside_ray: bool, rtt_s: float | None) -> int:
    """The byte budget a worker should hold: `near_bytes` while Ray runs beside it on this machine (its daemons
    and each actor's interpreter already take ~500 MB) and the source is known to be near, else `full_bytes`.
    A near source refills a small budget within milliseconds, so more buys no speed; across a far link the
    budget is the bytes in flight (48 MiB per worker ran the 150 ms / 1% loss link 27-70% slower than 160 MiB),
    and a source whose distance is not known yet is treated as far. `near_bytes` 0: always `full_bytes`."""
    near = near_bytes and beside_ray and rtt_s is not None and rtt_s < NEAR_RTT_S
    return near_bytes if near else full_bytes
