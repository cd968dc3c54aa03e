"""Server-side strategies within one S3 service: CopyObject, and UploadPartCopy above CopyObject's 5 GiB.

No byte goes through this process. A service that refuses them (PermissionDenied: e.g. no read grant on the
source for this identity) or fakes them (empty parts) turns the strategy off; the copier then moves the bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from dth_ray.engine.context import CopyContext, CopyOutcome
from dth_ray.engine.digests import EMPTY_MD5, is_md5_etag
from dth_ray.errors import IntegrityError, PermissionDenied, PreconditionFailed
from dth_ray.model import ByteRange, ObjectMeta, PartInfo, UploadState
from dth_ray.plan.parts import plan_parts


def _offered(ctx: CopyContext) -> bool:
    """Whether source and destination are one service whose destination store can copy server-side."""
    return bool(ctx.settings.server_side_bucket) and hasattr(ctx.dst, "copy_object")


class ServerSideCopy:
    """CopyObject of the whole object (up to the copy cutoff)."""

    def __init__(self, ctx: CopyContext):
        self._ctx = ctx
        self.enabled = _offered(ctx)

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome | None:
        """CopyObject within one service (no bytes through us); None if the service refuses it (from then on,
        for every object) or is not one service. Raises IntegrityError when the copy's MD5 ETag differs
        from the source's, PreconditionFailed when the source changed, and any other DthError of the call."""
        if not self.enabled:
            return None
        ctx = self._ctx
        try:
            result = await ctx.limits.call(lambda: ctx.dst.copy_object(
                ctx.settings.server_side_bucket, meta.key, dst_key, if_match=meta.etag))
        except PermissionDenied:
            self.enabled = False  # e.g. no read grant on the source for this identity: move bytes
            return None
        verified = is_md5_etag(meta.etag, ctx.src_features)
        if verified and ctx.dst_features.single_put_etag_is_md5 and result.etag and result.etag != meta.etag:
            raise IntegrityError("server-side copy ETag does not match the source ETag")
        return CopyOutcome(src=meta, dst_key=dst_key, dst_etag=result.etag, part_size_bytes=0,
                           verified_source=verified, server_side=True, dst_checksum=result.checksum)


class ServerSideParts:
    """A multipart upload whose parts are UploadPartCopy ranges of the source (above the copy cutoff)."""

    def __init__(self, ctx: CopyContext):
        self._ctx = ctx
        self.enabled = _offered(ctx) and hasattr(ctx.dst, "upload_part_copy")

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome | None:
        """A multipart upload whose parts are UploadPartCopy ranges of the source (CopyObject stops at 5 GiB):
        no bytes through us. Returns None when the service refuses it or stores something else (rclone serve
        s3 accepts UploadPartCopy and keeps empty parts); the caller then moves the bytes itself. Raises
        PreconditionFailed when the source changed, IntegrityError when the object landed with another size
        (this strategy is then off: the retry moves the bytes), and any other DthError of the calls."""
        if not self.enabled:
            return None
        ctx = self._ctx
        plan = plan_parts(meta.size, ctx.dst_features, ctx.settings.part_size_bytes)
        source = await ctx.limits.call(lambda: ctx.src.head(meta.key))  # headers to carry over
        if source.meta.etag and meta.etag and source.meta.etag != meta.etag:
            raise PreconditionFailed("source changed since listing")
        state = UploadState(dst_key, "", meta.etag, meta.size, plan.part_size_bytes)
        await ctx.upload_opened(state)  # intent first, as for any upload (see Multipart)
        upload_id = await ctx.limits.call(lambda: ctx.dst.create_multipart(dst_key, source.headers))
        await ctx.upload_opened(replace(state, upload_id=upload_id))
        gate = asyncio.Semaphore(ctx.settings.parts_in_flight)
        bucket = ctx.settings.server_side_bucket

        async def one(number: int, byte_range: ByteRange) -> PartInfo:
            async with gate:
                etag = await ctx.limits.call(lambda: ctx.dst.upload_part_copy(
                    bucket, meta.key, dst_key, upload_id, number, byte_range, if_match=meta.etag))
            return PartInfo(number, etag, byte_range.length)

        try:
            parts = list(await asyncio.gather(*(one(n, r) for n, r in plan.ranges())))
            if any(not p.etag or (p.etag == EMPTY_MD5 and p.size) for p in parts):
                self.enabled = False  # empty parts stored, or no part ETag: never complete those
                await ctx.abort(dst_key, upload_id)
                return None
            result = await ctx.limits.call(lambda: ctx.dst.complete_multipart(dst_key, upload_id, parts))
        except PermissionDenied:
            self.enabled = False
            await ctx.abort(dst_key, upload_id)
            return None
        except BaseException:
            await ctx.abort(dst_key, upload_id)  # nothing of ours is in the parts: a retry starts afresh
            raise
        await ctx.upload_closed(dst_key, upload_id)
        landed = await ctx.limits.call(lambda: ctx.dst.head(dst_key))
        if landed.meta.size != meta.size:
            self.enabled = False  # the next attempt moves the bytes itself and replaces this
            raise IntegrityError(f"server-side multipart copy left {landed.meta.size} bytes of {meta.size}")
        # The same part layout on both sides gives the same multipart ETag: equal content, part by part.
        verified = bool(result.etag) and result.etag == meta.etag and "-" in meta.etag
        return CopyOutcome(src=meta, dst_key=dst_key, dst_etag=result.etag,
                           part_size_bytes=plan.part_size_bytes, verified_source=verified, server_side=True,
                           dst_checksum=result.checksum)
