"""Compare one object's bytes on two stores by streaming both through MD5 in ranges (never whole in memory)."""

from __future__ import annotations

import hashlib

from dth_ray.engine.digests import digest_update
from dth_ray.engine.limits import Limits
from dth_ray.model import ByteRange, ObjectMeta
from dth_ray.stores.base import Reader

CHUNK_BYTES = 8 * 1024 * 1024


async def _digest(store: Reader, meta: ObjectMeta, limits: Limits) -> str:
    md5 = hashlib.md5()
    for start in range(0, meta.size, CHUNK_BYTES):
        byte_range = ByteRange(start, min(start + CHUNK_BYTES, meta.size))
        async with limits.budget.hold(byte_range.length):
            got = await limits.call(lambda r=byte_range: store.get(meta.key, r, if_match=meta.etag))
            await digest_update(md5, got.data)
    return md5.hexdigest()


async def same_content(src: Reader, src_meta: ObjectMeta, dst: Reader, dst_meta: ObjectMeta,
                       limits: Limits) -> bool:
    """Whether both objects hold the same bytes (MD5 over the full content). Raises DthError on read
    failure, PreconditionFailed if either side changed while being read."""
    if src_meta.size != dst_meta.size:
        return False
    if src_meta.size == 0:
        return True
    return await _digest(src, src_meta, limits) == await _digest(dst, dst_meta, limits)
