"""The single-PUT strategy: one verified GET (or parallel ranged GETs) and one PUT with Content-MD5 and, where
the destination takes one, CRC64NVME.

The source's own MD5 ETag goes out as the Content-MD5 where it has one, and its own CRC64NVME where its store
keeps one (S3: a full GET with checksum mode returns it), so the destination checks every byte against the
source without this process hashing it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from dth_ray.checksums import crc64nvme_value
from dth_ray.engine.context import CopyContext, CopyOutcome
from dth_ray.engine.digests import crc64nvme_digest, is_md5_etag, md5_digest, source_crc64nvme
from dth_ray.engine.reads import MAX_GETS_PER_PART
from dth_ray.errors import IntegrityError, PreconditionFailed
from dth_ray.model import ByteRange, GetResult, ObjectMeta
from dth_ray.plan.parts import choose_part_size
from dth_ray.stores.growing import GrowingBody


class SinglePut:
    """Copies an object that fits one PUT (see CopyContext.part_plan) as one PUT; always applies."""

    def __init__(self, ctx: CopyContext):
        self._ctx = ctx

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        """Raises IntegrityError (bytes that do not match the source, or a short read), PreconditionFailed
        (the source changed), and any DthError of the GET or PUT."""
        ctx = self._ctx
        if meta.size > ctx.reads.piece_bytes() and is_md5_etag(meta.etag, ctx.src_features):
            # Read in parallel ranges (a long link), as many as its parts would have had: one PUT must not
            # read slower than parts do; into a reused buffer. The whole object is still checked against its
            # MD5.
            part_bytes = choose_part_size(meta.size, ctx.dst_features, ctx.settings.part_size_bytes)
            streams = MAX_GETS_PER_PART * -(-meta.size // part_bytes)
            async with ctx.limits.budget.buffer(meta.size) as buf:
                if self._streams():
                    return await self._read_while_put(meta, dst_key, buf, streams)
                got = await ctx.reads.read(meta, ByteRange(0, meta.size), buf, streams)
                return await self._put(meta, dst_key, got)
        async with ctx.limits.budget.hold(meta.size):
            # One GET: a small object, or a backend that checks a whole-object CRC (OSS) on a full read.
            got = await ctx.limits.call(lambda: ctx.src.get(meta.key, if_match=meta.etag))
            return await self._put(meta, dst_key, got)

    def _streams(self) -> bool:
        """Whether the PUT may start while the object is still being read: where the destination takes a body
        that is still arriving and checks it against the source's MD5 as Content-MD5 (so nothing here hashes
        the whole body first), with no CRC of ours to send (it would have to be computed before the headers)."""
        ctx = self._ctx
        return ctx.dst_features.put_streams_body and ctx.dst_features.put_checks_content_md5 and not ctx.crc.send

    async def _read_while_put(self, meta: ObjectMeta, dst_key: str, buf: memoryview, streams: int) -> CopyOutcome:
        """Read the object in ranges into `buf` and send it as one PUT at once, each slice as soon as the bytes
        before it are in: GET and PUT overlap instead of following each other. The Content-MD5 is the source's
        MD5, so the destination refuses any body that is not exactly the listed object; a read that fails
        cancels the PUT before its body is complete, and the destination keeps nothing of it."""
        ctx = self._ctx
        body = GrowingBody(buf)
        first: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_piece(piece: ByteRange, info) -> None:
            body.add(piece.start, piece.end)
            if not first.done():
                first.set_result(info)

        reading = asyncio.ensure_future(ctx.reads.read(meta, ByteRange(0, meta.size), buf, streams, on_piece))
        putting: asyncio.Future | None = None
        try:
            await asyncio.wait([first, reading], return_when=asyncio.FIRST_COMPLETED)
            if not first.done():  # the read failed before any piece was in
                return await reading  # raises its error
            info = first.result()
            putting = asyncio.ensure_future(self._put(meta, dst_key, GetResult(data=body, info=info), paired=True))
            await asyncio.wait([reading, putting], return_when=asyncio.FIRST_EXCEPTION)
            for task in (reading, putting):  # the first error (a failed read before the PUT it fails)
                if task.done() and task.exception() is not None:
                    raise task.exception()
            await reading  # every piece came from the listed version (If-Match) and had its size
            return await putting
        except BaseException as exc:
            body.fail(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise
        finally:
            for task in (reading, putting):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in (reading, putting) if t is not None), return_exceptions=True)
            if not first.done():
                first.cancel()

    async def _put(self, meta: ObjectMeta, dst_key: str, got: GetResult, paired: bool = False) -> CopyOutcome:
        """Send what was read as one PUT whose Content-MD5 is the source's MD5 where it has one, and whose
        CRC64NVME (where the destination takes one) is the source's where it keeps one we trust."""
        ctx = self._ctx
        data = got.data
        if len(data) != meta.size and meta.etag:
            raise IntegrityError(f"read {len(data)} bytes of {meta.size}")
        if len(data) != meta.size:
            raise PreconditionFailed("source size changed since listing")
        source_etag = got.info.meta.etag or meta.etag
        verified = is_md5_etag(source_etag, ctx.src_features)
        source_crc = source_crc64nvme(got.info.meta.checksum, ctx.src_features)
        digest: bytes | None
        if verified and ctx.dst_features.put_checks_content_md5:
            # The source's own MD5 goes out as Content-MD5: the destination refuses any body that does not
            # hash to it (BadDigest, retried), so every byte written is checked against the source there,
            # without hashing it here as well.
            digest = bytes.fromhex(source_etag)
        elif ctx.crc.checked and not verified:
            digest = None  # no MD5 to check against: the CRC64NVME below covers the body on the wire
        else:
            digest = await md5_digest(data)
            if verified and source_etag != digest.hex():
                raise IntegrityError("bytes read do not match the source ETag")
        # A CRC the source store keeps and checked is sent as it is: the destination then checks every byte
        # against the source, end to end; else ours, which covers the hop from here.
        crc = None
        if ctx.crc.send:
            crc = source_crc if source_crc is not None else await crc64nvme_digest(data)
        extra = {"crc64nvme": crc} if crc is not None else {}
        put = ctx.limits.call_paired if paired else ctx.limits.call  # paired: a body its reads are landing
        result = await put(lambda: ctx.dst.put(dst_key, data, got.info.headers, digest, **extra))
        if crc is not None:
            ctx.crc.answered(crc, result.checksum)
        if ctx.dst_features.single_put_etag_is_md5 and digest is not None and result.etag \
                and result.etag != digest.hex():
            raise IntegrityError("destination ETag does not match the MD5 of the bytes sent")
        # The backend checked its own CRC on a full read (OSS); S3's CRC64NVME proves the bytes only where the
        # destination checked the source's value.
        read_checked = bool(got.info.meta.checksum) and crc64nvme_value(got.info.meta.checksum) is None
        verified = verified or read_checked or (source_crc is not None and crc == source_crc and ctx.crc.checked)
        # Record the source as its listing shows it, so the next run's diff compares like with like.
        src = replace(meta, checksum=got.info.meta.checksum or meta.checksum)
        return CopyOutcome(src=src, dst_key=dst_key, dst_etag=result.etag, part_size_bytes=0,
                           verified_source=verified, dst_checksum=result.checksum)
