"""Ranged reads of one source range into a lent buffer, with as many concurrent GETs as the link rewards.

Across a long lossy link one TCP stream's rate is capped by RTT and loss, so parallel streams multiply it; the
piece size is learnt from finished reads (ReadSizer). Every GET carries If-Match on the listed ETag.
"""

from __future__ import annotations

import asyncio
import time

from dth_ray.engine.landing import landed
from dth_ray.engine.limits import Limits
from dth_ray.engine.readsize import ReadSizer
from dth_ray.errors import PreconditionFailed
from dth_ray.model import ByteRange, GetResult, ObjectInfo, ObjectMeta
from dth_ray.plan.parts import PieceCursor
from dth_ray.stores.base import RangeReader, Reader

MAX_GETS_PER_PART = 16


class RangedReads:
    """Reads ranges of `src` objects under `limits`, sizing pieces by `get_range_bytes` (0: learnt)."""

    def __init__(self, src: Reader, limits: Limits, get_range_bytes: int = 0):
        self.src = src
        self._limits = limits
        self._sizer = ReadSizer(get_range_bytes)

    def piece_bytes(self) -> int:
        """How large one ranged GET should be now (see ReadSizer)."""
        return self._sizer.piece_bytes()

    def stream_rate_bytes_per_s(self) -> float:
        """What one GET stream has moved per second lately (0 until a read of at least the floor finished)."""
        return self._sizer.rate_bytes_per_s or 0.0

    async def read(self, meta: ObjectMeta, byte_range: ByteRange, out: memoryview,
                   max_streams: int = MAX_GETS_PER_PART) -> GetResult:
        """Read one range with up to `max_streams` concurrent ranged GETs, when it is larger than one read
        should be (see ReadSizer): across a long lossy link one TCP stream's rate is capped by RTT and loss,
        so parallel streams multiply it. Each stream takes the next piece when it is free, sized at that
        moment: a stream slowed by a loss holds up one small piece, not a fixed share of the range, and once
        a fast path is learnt the rest goes in a few large reads. The pieces land in `out` (a buffer the
        caller holds, exactly the range's length): written in place by a store that reads into a buffer
        (RangeReader), copied there otherwise. Raises PreconditionFailed when the source changed (If-Match,
        or another size), and the DthError of a failed GET."""
        pieces = PieceCursor(byte_range)
        src = self.src
        into = isinstance(src, RangeReader)
        got: list[tuple[int, ObjectInfo]] = []  # (piece start, what the GET said about the object)

        async def read(r: ByteRange) -> tuple[int, ObjectInfo]:
            started = time.monotonic()
            window = out[r.start - byte_range.start:r.end - byte_range.start]
            if into:
                info = await src.get_into(meta.key, r, window, if_match=meta.etag)
            else:
                piece = await src.get(meta.key, r, if_match=meta.etag)
                window[:] = piece.data
                info = piece.info
            self._sizer.observe(r.length, time.monotonic() - started)
            landed(r.length)
            return r.start, info

        def pick():
            r = pieces.take(self._sizer.piece_bytes())
            return None if r is None else (r.length, lambda: read(r))

        async def stream() -> None:
            while (result := await self._limits.call_sized(pick)) is not None:
                got.append(result)

        # As many streams as the first pieces fill (the sizer never answers 0), at most max_streams.
        streams = [asyncio.ensure_future(stream())
                   for _ in range(min(max_streams, -(-byte_range.length // self._sizer.piece_bytes())))]
        try:
            await asyncio.gather(*streams)
        except BaseException:
            for task in streams:  # the range is read again whole: the other streams must not read on
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            raise
        got.sort(key=lambda item: item[0])
        if any(info.meta.size != meta.size for _, info in got):
            raise PreconditionFailed("source size changed since listing")
        return GetResult(data=out, info=got[0][1])
