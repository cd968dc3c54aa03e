"""The single-PUT strategy: one verified GET (or parallel ranged GETs) and one PUT with Content-MD5 and, where
the destination takes one, CRC64NVME.

The source's own MD5 ETag goes out as the Content-MD5 where it has one, and its own CRC64NVME where its store
keeps one (S3: a full GET with checksum mode returns it), so the destination checks every byte against the
source without this process hashing it. An object too large for four to fit the byte budget may go as a
streamed PUT instead (engine/streamput.py), fed by a small ring rather than a buffer of its size.
"""

from __future__ import annotations

from dataclasses import replace

from dth_ray.checksums import crc64nvme_value
from dth_ray.engine.context import CopyContext, CopyOutcome
from dth_ray.engine.digests import crc64nvme_digest, is_md5_etag, md5_digest, source_crc64nvme
from dth_ray.engine.reads import MAX_GETS_PER_PART
from dth_ray.engine.streamput import StreamedPut
from dth_ray.errors import IntegrityError, PreconditionFailed
from dth_ray.model import ByteRange, GetResult, ObjectMeta
from dth_ray.plan.parts import choose_part_size
from dth_ray.stores.base import RangeReader


class SinglePut:
    """Copies an object that fits one PUT (see CopyContext.part_plan) as one PUT; always applies."""

    def __init__(self, ctx: CopyContext):
        self._ctx = ctx
        self._streamed = StreamedPut(ctx)

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        """Raises IntegrityError (bytes that do not match the source, or a short read), PreconditionFailed
        (the source changed), and any DthError of the GET or PUT."""
        ctx = self._ctx
        if is_md5_etag(meta.etag, ctx.src_features) and (meta.size > ctx.reads.piece_bytes()
                                                         or self._streamed.applies(meta)):
            # Read in parallel ranges (a long link), as many as its parts would have had: one PUT must not
            # read slower than parts do; into a reused buffer. The whole object is still checked against its
            # MD5. Or streamed through a small ring where that applies, also once it does while this waits
            # for a whole buffer (the first reads of a run tell how fast the source is).
            part_bytes = choose_part_size(meta.size, ctx.dst_features, ctx.settings.part_size_bytes)
            streams = MAX_GETS_PER_PART * -(-meta.size // part_bytes)
            while not self._streamed.applies(meta):
                async with ctx.limits.budget.buffer(meta.size, unless=lambda: self._streamed.applies(meta)) as buf:
                    if buf is not None:
                        got = await ctx.reads.read(meta, ByteRange(0, meta.size), buf, streams)
                        return await self._put(meta, dst_key, got)
            return await self._streamed.copy(meta, dst_key)
        # One GET: a small object, or a backend that checks a whole-object CRC (OSS) on a full read. Into a
        # pooled buffer where the store reads into one (no allocation and zero-fill per object); else the
        # body the store hands over, its bytes held from the budget all the same.
        src = ctx.src
        if isinstance(src, RangeReader):
            async with ctx.limits.budget.buffer(meta.size) as buf:
                info = await ctx.limits.call(lambda: src.get_into(meta.key, None, buf, if_match=meta.etag))
                return await self._put(meta, dst_key, GetResult(data=buf, info=info))
        async with ctx.limits.budget.hold(meta.size):
            got = await ctx.limits.call(lambda: src.get(meta.key, if_match=meta.etag))
            return await self._put(meta, dst_key, got)

    async def _put(self, meta: ObjectMeta, dst_key: str, got: GetResult) -> CopyOutcome:
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
        result = await ctx.limits.call(lambda: ctx.dst.put(dst_key, data, got.info.headers, digest, **extra))
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
