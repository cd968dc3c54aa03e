"""Compare one object on two stores: by the full-object checksums both stores checked and keep (S3's CRC64NVME,
a HEAD each, no byte read) where they have them, else by streaming both through MD5 in ranges (never whole
in memory)."""

from __future__ import annotations

import asyncio
import hashlib

from dth_ray.checksums import crc64nvme_value
from dth_ray.engine.digests import digest_update
from dth_ray.engine.limits import Limits
from dth_ray.errors import PreconditionFailed
from dth_ray.model import ByteRange, ObjectMeta
from dth_ray.stores.base import CRC_CHECKED, Reader, StoreFeatures

CHUNK_BYTES = 8 * 1024 * 1024


async def _digest(store: Reader, meta: ObjectMeta, limits: Limits) -> str:
    md5 = hashlib.md5()
    for start in range(0, meta.size, CHUNK_BYTES):
        byte_range = ByteRange(start, min(start + CHUNK_BYTES, meta.size))
        async with limits.budget.hold(byte_range.length):
            got = await limits.call(lambda r=byte_range: store.get(meta.key, r, if_match=meta.etag))
            await digest_update(md5, got.data)
    return md5.hexdigest()


async def same_stored_checksum(src: Reader, src_meta: ObjectMeta, src_features: StoreFeatures, dst: Reader,
                               dst_meta: ObjectMeta, dst_features: StoreFeatures, limits: Limits) -> bool | None:
    """Whether both objects hold the same bytes by the CRC64NVME each store checked when it was written and
    keeps (HEAD with checksum mode); None when either store or object has none. Raises DthError on a
    failed HEAD, PreconditionFailed if either side changed since it was listed."""
    if src_features.crc64nvme != CRC_CHECKED or dst_features.crc64nvme != CRC_CHECKED:
        return None
    heads = await asyncio.gather(limits.call(lambda: src.head(src_meta.key, checksums=True)),
                                 limits.call(lambda: dst.head(dst_meta.key, checksums=True)))
    for listed, info in zip((src_meta, dst_meta), heads, strict=True):
        if listed.etag and info.meta.etag and listed.etag.lower() != info.meta.etag.lower():
            raise PreconditionFailed(f"{listed.key!r} changed since it was listed")
    src_crc, dst_crc = (crc64nvme_value(info.meta.checksum) for info in heads)
    if src_crc is None or dst_crc is None:
        return None
    return src_crc == dst_crc


async def same_content(src: Reader, src_meta: ObjectMeta, dst: Reader, dst_meta: ObjectMeta,
                       limits: Limits) -> bool:
    """Whether both objects hold the same bytes (MD5 over the full content). Raises DthError on read
    failure, PreconditionFailed if either side changed while being read."""
    if src_meta.size != dst_meta.size:
        return False
    if src_meta.size == 0:
        return True
    return await _digest(src, src_meta, limits) == await _digest(dst, dst_meta, limits)
