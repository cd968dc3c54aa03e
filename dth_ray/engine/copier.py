"""Copy one object: a verified single GET+PUT, or a multipart upload whose ranged GETs are pipelined.

Integrity: every PUT and part carries Content-MD5; the PUT/part/Complete ETags are checked against our own
MD5s where the destination's ETags are MD5-based; the bytes read are checked against the source's ETag (or
CRC64) where that is a whole-content digest. Every ranged GET carries If-Match on the listed ETag, so a source
changed mid-copy is re-read from its new version and never stitched into a torn object.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, replace
from typing import Protocol

from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.ratelimit import AdaptiveLimit, TokenBucket
from dth_ray.engine.retry import backoff_s
from dth_ray.errors import (
    DthError,
    IntegrityError,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    Unreadable,
)
from dth_ray.model import ByteRange, ObjectMeta, PartInfo, PartPlan
from dth_ray.plan.parts import multipart_etag, needs_multipart, plan_parts
from dth_ray.stores.base import Reader, StoreFeatures, Writer


@dataclass(frozen=True)
class CopySettings:
    multipart_threshold_bytes: int
    part_size_bytes: int | None  # None: chosen per object within the destination's limits
    parts_in_flight: int
    max_attempts: int
    server_side_bucket: str = ""  # set when source and destination are one S3 service: CopyObject is used


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    """A finished copy: the source version copied, the destination ETag, and how it was verified."""

    src: ObjectMeta
    dst_key: str
    dst_etag: str
    part_size_bytes: int
    verified_source: bool
    server_side: bool = False


class UploadJournal(Protocol):
    """Where open multipart uploads are recorded before their first part, so a crash can clean them up."""

    async def upload_opened(self, dst_key: str, upload_id: str, part_size_bytes: int) -> None: ...

    async def upload_closed(self, dst_key: str, upload_id: str) -> None: ...


class Limits:
    """Shared pacing for one actor: byte budget, AIMD request concurrency, request rate and bandwidth."""

    def __init__(self, budget: ByteBudget, concurrency: AdaptiveLimit, requests: TokenBucket,
                 bandwidth: TokenBucket):
        self.budget = budget
        self.concurrency = concurrency
        self.requests = requests
        self.bandwidth = bandwidth

    async def call(self, coro_fn, nbytes: int = 0):
        """Run one store request under the caps; a throttle answer halves the concurrency cap."""
        if self.requests.rate_per_s > 0:
            await self.requests.take()
        if nbytes and self.bandwidth.rate_per_s > 0:
            await self.bandwidth.take(nbytes)
        await self.concurrency.acquire()
        throttled = False
        try:
            return await coro_fn()
        except Throttled:
            throttled = True
            raise
        finally:
            await self.concurrency.release(throttled)


class _InOrderDigest:
    """MD5 of a whole object fed by parts that finish out of order (each waits for its turn)."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5()
        self._next = 1
        self._cond = asyncio.Condition()

    async def feed(self, part_number: int, data: bytes) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self._next == part_number)
            self._md5.update(data)
            self._next += 1
            self._cond.notify_all()

    def hexdigest(self) -> str:
        return self._md5.hexdigest()


def _is_md5_etag(etag: str, features: StoreFeatures) -> bool:
    return bool(etag) and "-" not in etag and len(etag) == 32 and features.single_put_etag_is_md5


class Copier:
    """Copies objects from `src` to `dst`; one instance per actor, shared by all in-flight copies."""

    def __init__(self, src: Reader, dst: Writer, src_features: StoreFeatures, dst_features: StoreFeatures,
                 settings: CopySettings, limits: Limits, journal: UploadJournal | None = None):
        self._src = src
        self._dst = dst
        self._src_features = src_features
        self._dst_features = dst_features
        self._settings = settings
        self._limits = limits
        self._journal = journal
        self.retries = 0
        self._server_side = bool(settings.server_side_bucket) and hasattr(dst, "copy_object")

    def part_plan(self, size_bytes: int) -> PartPlan | None:
        """The part plan for an object of this size, or None when a single PUT is used."""
        if not needs_multipart(size_bytes, self._settings.multipart_threshold_bytes, self._dst_features):
            return None
        return plan_parts(size_bytes, self._dst_features, self._settings.part_size_bytes)

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        """Copy one object, retrying retryable errors and re-reading a source that changed mid-copy.

        Raises the last DthError when attempts run out; Unreadable (archived source) is never retried.
        """
        attempts = self._settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                if self._server_side and meta.size <= self._dst_features.max_single_put_bytes:
                    outcome = await self._copy_server_side(meta, dst_key)
                    if outcome is not None:
                        return outcome
                plan = self.part_plan(meta.size)
                if plan is None:
                    return await self._copy_single(meta, dst_key)
                return await self._copy_multipart(meta, dst_key, plan)
            except PreconditionFailed:
                if attempt == attempts:
                    raise
                self.retries += 1
                # The source changed since listing: copy its current version instead (never a torn mix).
                meta = (await self._limits.call(lambda m=meta: self._src.head(m.key))).meta
            except Unreadable:
                raise
            except DthError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                self.retries += 1
                delay = exc.delay_s if isinstance(exc, Throttled) and exc.delay_s else backoff_s(attempt)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _copy_server_side(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome | None:
        """CopyObject within one service (no bytes through us); None if the service refuses it."""
        try:
            result = await self._limits.call(lambda: self._dst.copy_object(
                self._settings.server_side_bucket, meta.key, dst_key, if_match=meta.etag))
        except PermissionDenied:
            self._server_side = False  # e.g. no read grant on the source for this identity: move bytes
            return None
        verified = _is_md5_etag(meta.etag, self._src_features)
        if verified and self._dst_features.single_put_etag_is_md5 and result.etag and result.etag != meta.etag:
            raise IntegrityError("server-side copy ETag does not match the source ETag")
        return CopyOutcome(src=meta, dst_key=dst_key, dst_etag=result.etag, part_size_bytes=0,
                           verified_source=verified, server_side=True)

    async def _copy_single(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        async with self._limits.budget.hold(meta.size):
            got = await self._limits.call(lambda: self._src.get(meta.key, if_match=meta.etag), meta.size)
            data = got.data
            if len(data) != meta.size and meta.etag:
                raise IntegrityError(f"read {len(data)} bytes of {meta.size}")
            if len(data) != meta.size:
                raise PreconditionFailed("source size changed since listing")
            digest = hashlib.md5(data).digest()
            source_etag = got.info.meta.etag or meta.etag
            verified = False
            if _is_md5_etag(source_etag, self._src_features):
                if source_etag != digest.hex():
                    raise IntegrityError("bytes read do not match the source ETag")
                verified = True
            verified = verified or bool(got.info.meta.checksum)  # the backend checked its CRC on a full read
            result = await self._limits.call(lambda: self._dst.put(dst_key, data, got.info.headers, digest))
        if self._dst_features.single_put_etag_is_md5 and result.etag and result.etag != digest.hex():
            raise IntegrityError("destination ETag does not match the MD5 of the bytes sent")
        # Record the source as its listing shows it, so the next run's diff compares like with like.
        src = replace(meta, checksum=got.info.meta.checksum or meta.checksum)
        return CopyOutcome(src=src, dst_key=dst_key, dst_etag=result.etag, part_size_bytes=0,
                           verified_source=verified)

    async def _copy_multipart(self, meta: ObjectMeta, dst_key: str, plan: PartPlan) -> CopyOutcome:
        ranges = list(plan.ranges())
        part_md5s: dict[int, bytes] = {}
        whole: _InOrderDigest | None = None
        gate = asyncio.Semaphore(self._settings.parts_in_flight)
        upload_id = ""
        headers_ready: asyncio.Future = asyncio.get_running_loop().create_future()
        source_etag = meta.etag

        async def do_part(number: int, byte_range: ByteRange) -> PartInfo:
            nonlocal source_etag
            async with gate, self._limits.budget.hold(byte_range.length):
                got = await self._limits.call(
                    lambda: self._src.get(meta.key, byte_range, if_match=meta.etag), byte_range.length)
                if got.info.meta.size != meta.size:
                    raise PreconditionFailed("source size changed since listing")
                if number == 1:
                    source_etag = got.info.meta.etag or meta.etag
                    headers_ready.set_result(got.info)
                uid = await asyncio.shield(upload_started)
                digest = hashlib.md5(got.data).digest()
                etag = await self._limits.call(
                    lambda: self._dst.upload_part(dst_key, uid, number, got.data, digest))
                if self._dst_features.single_put_etag_is_md5 and etag and etag != digest.hex():
                    raise IntegrityError(f"part {number} ETag does not match the MD5 of the bytes sent")
                part_md5s[number] = digest
                if whole is not None:
                    await whole.feed(number, got.data)
                return PartInfo(number, etag, byte_range.length)

        async def start_upload() -> str:
            nonlocal upload_id, whole
            info = await headers_ready
            if _is_md5_etag(info.meta.etag or meta.etag, self._src_features):
                whole = _InOrderDigest()
            upload_id = await self._limits.call(lambda: self._dst.create_multipart(dst_key, info.headers))
            if self._journal is not None:
                await self._journal.upload_opened(dst_key, upload_id, plan.part_size_bytes)
            return upload_id

        upload_started = asyncio.ensure_future(start_upload())
        tasks = [asyncio.ensure_future(do_part(n, r)) for n, r in ranges]
        try:
            parts = await asyncio.gather(*tasks)
            result = await self._limits.call(lambda: self._dst.complete_multipart(dst_key, upload_id, parts))
        except BaseException:
            for task in [*tasks, upload_started]:
                task.cancel()
            await asyncio.gather(*tasks, upload_started, return_exceptions=True)
            if upload_id:
                await self._abort(dst_key, upload_id)
            raise
        if self._journal is not None:
            await self._journal.upload_closed(dst_key, upload_id)
        expected = multipart_etag([part_md5s[n] for n, _ in ranges])
        if self._dst_features.multipart_etag_is_md5_of_md5s and result.etag and result.etag != expected:
            raise IntegrityError("destination multipart ETag does not match the parts sent")
        verified = False
        if whole is not None:
            if whole.hexdigest() != source_etag:
                raise IntegrityError("bytes read do not match the source ETag")
            verified = True
        elif source_etag == expected and self._src_features.multipart_etag_is_md5_of_md5s:
            verified = True
        return CopyOutcome(src=meta, dst_key=dst_key, dst_etag=result.etag,
                           part_size_bytes=plan.part_size_bytes, verified_source=verified)

    async def _abort(self, dst_key: str, upload_id: str) -> None:
        """Abort a failed upload; if even that fails the journal keeps it for the job's final cleanup."""
        try:
            await self._dst.abort_multipart(dst_key, upload_id)
        except DthError:
            return
        if self._journal is not None:
            await self._journal.upload_closed(dst_key, upload_id)
