"""Digests of the bytes a copy moves (MD5, the source's CRC-64) and which ETags are whole-content MD5s.

Large buffers are hashed off the event loop's thread: hashlib releases the GIL, the loop keeps moving bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import string

from dth_ray.checksums import crc64ecma_value, crc64nvme, crc64nvme_value, new_crc64ecma
from dth_ray.stores.base import CRC_CHECKED, StoreFeatures

EMPTY_MD5 = hashlib.md5(b"").hexdigest()
_OFFLOAD_BYTES = 1 << 20  # hash larger buffers in a thread: hashlib releases the GIL, the loop keeps moving
_CRC_OFFLOAD_BYTES = 64 << 20  # CRC64NVME runs at GB/s: a thread hop pays only for the largest buffers


async def digest_update(md5, data: bytes) -> None:
    """Feed `data` to a running digest (MD5, CRC); large buffers are hashed off the event loop thread."""
    if len(data) < _OFFLOAD_BYTES:
        md5.update(data)
    else:
        await asyncio.to_thread(md5.update, data)


async def md5_digest(data: bytes) -> bytes:
    """MD5 of `data`; large buffers are hashed off the event loop thread (in parallel with the I/O)."""
    if len(data) < _OFFLOAD_BYTES:
        return hashlib.md5(data).digest()
    return await asyncio.to_thread(lambda: hashlib.md5(data).digest())


async def crc64nvme_digest(data: bytes) -> int:
    """CRC64NVME of `data` (awscrt, hardware accelerated; the largest buffers off the event loop thread)."""
    if len(data) < _CRC_OFFLOAD_BYTES:
        return crc64nvme(data)
    return await asyncio.to_thread(crc64nvme, data)


def source_crc64nvme(checksum: str, features: StoreFeatures) -> int | None:
    """The source's full-object CRC64NVME in `checksum`, where its store checks and keeps it (else None: a
    value a store merely kept from a client is not proof of the bytes)."""
    return crc64nvme_value(checksum) if features.crc64nvme == CRC_CHECKED else None


class InOrderDigest:
    """A whole-object digest (MD5, or the source's CRC-64) fed by parts that finish out of order: each part
    waits for its turn, so the running value sees every byte in order."""

    def __init__(self, running, expected: str | int, name: str) -> None:
        self._running = running  # hashlib.md5() (expected: hex) or a running CRC (expected: its int value)
        self._expected = expected
        self.name = name
        self._next = 1
        self._cond = asyncio.Condition()

    async def feed(self, part_number: int, data: bytes) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self._next == part_number)
            await digest_update(self._running, data)
            self._next += 1
            self._cond.notify_all()

    def matches(self) -> bool:
        running = self._running
        value = running.hexdigest() if isinstance(self._expected, str) else running.value
        return value == self._expected


def is_md5_etag(etag: str, features: StoreFeatures) -> bool:
    """Whether `etag` is the MD5 of the object's bytes (a single-PUT ETag of a store whose such ETags are)."""
    return len(etag) == 32 and all(c in string.hexdigits for c in etag) and features.single_put_etag_is_md5


def whole_digest(etag: str, checksum: str, features: StoreFeatures) -> InOrderDigest | None:
    """The running digest that can check a whole object read in parts against the source: the whole-object
    CRC-64 it published (OSS, COS: 30 times cheaper than MD5), else its MD5 ETag; None when it has neither."""
    crc = crc64ecma_value(checksum) if "crc64ecma" in features.checksum_kinds else None
    if crc is not None:
        return InOrderDigest(new_crc64ecma(), crc, "CRC-64")
    return InOrderDigest(hashlib.md5(), etag, "MD5 ETag") if is_md5_etag(etag, features) else None
