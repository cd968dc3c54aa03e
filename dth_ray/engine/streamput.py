"""The streamed single PUT: a large object goes out as one PUT while its ranged GETs still land, through a small
ring of the byte budget instead of a buffer of its whole size, so several large objects move at once.

With whole-object buffers a 160 MiB budget moves one 128 MiB object at a time: the source serves its GETs,
then the destination its PUT, each idle half the time. Streamed, four move at once in the same budget.

It applies where nothing has to be computed over the body before it is sent: the source's ETag is its MD5 and
goes out as the Content-MD5, which the destination checks (every byte checked against the source there, none
hashed here), and no CRC64NVME of ours rides along. And only while one GET stream reads a slot within a second
(a near source): across a long lossy link a single stream is slow, and a whole-object buffer read by many
parallel streams is faster than a ring a few slots deep (see readsize.py); the rate is learnt from finished
reads, so a run's first large object takes a whole buffer. A PUT is sent once (its chunks are given back as
they go): a failure fails the attempt, and the copier's retry reads the object again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import replace

from dth_ray.engine.context import CopyContext, CopyOutcome
from dth_ray.engine.digests import is_md5_etag
from dth_ray.errors import IntegrityError
from dth_ray.model import ByteRange, GetResult, ObjectMeta
from dth_ray.stores.base import StreamedBody, StreamWriter

SLOTS = 4  # the sender sends one slot while the next three are read (CopySettings.stream_slot_bytes each)


class StreamedPut:
    """Copies an object that fits one PUT as a streamed PUT fed by a ring of ranged GETs, where it applies."""

    def __init__(self, ctx: CopyContext):
        self._ctx = ctx

    def applies(self, meta: ObjectMeta) -> bool:
        """An object too large for four to fit the budget at once, where the body needs no digest of ours
        (see the module's notes) and single GET streams keep up with a sender."""
        ctx = self._ctx
        slot_bytes = ctx.settings.stream_slot_bytes
        return (meta.size > 2 * SLOTS * slot_bytes and 4 * meta.size > ctx.limits.budget.capacity_bytes
                and isinstance(ctx.dst, StreamWriter) and ctx.dst_features.put_checks_content_md5
                and is_md5_etag(meta.etag, ctx.src_features) and not ctx.crc.send
                and ctx.reads.stream_rate_bytes_per_s() >= slot_bytes)

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        """Raises PreconditionFailed (the source changed), IntegrityError, and any DthError of a GET or the
        PUT (a Transient for a PUT that a new attempt may finish)."""
        ctx = self._ctx
        async with ctx.limits.budget.buffer(SLOTS * ctx.settings.stream_slot_bytes) as ring:
            ring_reads = _RingReads(ctx, meta, ring)
            try:
                first = await ring_reads.first()
                source_etag = first.info.meta.etag or meta.etag
                digest = bytes.fromhex(source_etag)
                body = StreamedBody(meta.size, ring_reads.chunks())
                result = await ctx.limits.call_beside(
                    lambda: ctx.dst.put_streamed(dst_key, body, first.info.headers, digest))
            finally:
                await ring_reads.close()
        if ctx.dst_features.single_put_etag_is_md5 and result.etag and result.etag != source_etag:
            raise IntegrityError("destination ETag does not match the MD5 of the bytes sent")
        src = replace(meta, checksum=first.info.meta.checksum or meta.checksum)
        return CopyOutcome(src=src, dst_key=dst_key, dst_etag=result.etag, part_size_bytes=0,
                           verified_source=True, dst_checksum=result.checksum)


class _RingReads:
    """An object's consecutive slots read into a ring, up to SLOTS ahead of the slot being sent."""

    def __init__(self, ctx: CopyContext, meta: ObjectMeta, ring: memoryview):
        self._ctx = ctx
        self._meta = meta
        self._ring = ring
        self._slot_bytes = slot = ctx.settings.stream_slot_bytes
        self._ranges = [ByteRange(start, min(start + slot, meta.size)) for start in range(0, meta.size, slot)]
        self._pending: deque[asyncio.Future] = deque()
        self._next = 0
        self._chunks = None
        while self._next < min(SLOTS, len(self._ranges)):
            self._start_next()

    def _start_next(self) -> None:
        r = self._ranges[self._next]
        offset = (self._next % SLOTS) * self._slot_bytes
        view = self._ring[offset:offset + r.length]
        self._pending.append(asyncio.ensure_future(self._ctx.reads.read(self._meta, r, view)))
        self._next += 1

    async def first(self) -> GetResult:
        """The first slot's read (its answer carries the object's headers), without giving it to the sender."""
        return await self._pending[0]

    async def _generate(self):
        for _ in self._ranges:
            got = await self._pending[0]
            yield got.data
            # The sender asked for the next chunk: this slot is free to be read into again.
            self._pending.popleft()
            if self._next < len(self._ranges):
                self._start_next()

    def chunks(self):
        """The slots in order, each handed over once read; a slot is read into again once the next is asked
        for."""
        self._chunks = self._generate()
        return self._chunks

    async def close(self) -> None:
        """Stop the reads still going (the PUT ended or failed) and wait for them to let go of the ring."""
        if self._chunks is not None:
            await self._chunks.aclose()
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
