"""Copy one object: a verified single GET+PUT, or a multipart upload whose ranged GETs are pipelined.

Integrity: every PUT and part carries Content-MD5; the PUT/part/Complete ETags are checked against our own
MD5s where the destination's ETags are MD5-based; the bytes read are checked against the source's ETag (or
CRC64) where that is a whole-content digest. Every ranged GET carries If-Match on the listed ETag, so a source
changed mid-copy is re-read from its new version and never stitched into a torn object.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import string
import sys
import time
from dataclasses import dataclass, replace
from typing import Protocol

from dth_ray.checksums import crc64ecma_value, new_crc64ecma
from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.ratelimit import AdaptiveLimit, TokenBucket
from dth_ray.engine.readsize import ReadSizer
from dth_ray.engine.retry import backoff_s
from dth_ray.errors import (
    DthError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    Unreadable,
)
from dth_ray.model import ByteRange, GetResult, ObjectInfo, ObjectMeta, PartInfo, PartPlan, UploadState
from dth_ray.plan.parts import PieceCursor, choose_part_size, multipart_etag, needs_multipart, plan_parts
from dth_ray.stores.base import RangeReader, Reader, StoreFeatures, Writer


@dataclass(frozen=True)
class CopySettings:
    multipart_threshold_bytes: int
    part_size_bytes: int | None  # None: chosen per object within the destination's limits
    parts_in_flight: int
    max_attempts: int
    server_side_bucket: str = ""  # set when source and destination are one S3 service: CopyObject is used
    spread_threshold_bytes: int = 0  # objects this large share their parts with peer actors (0: never)
    get_range_bytes: int = 0  # a part is read as concurrent ranged GETs of this size (0: sized by ReadSizer)
    copy_cutoff_bytes: int = 5 * 1024**3  # server-side: CopyObject up to this size, UploadPartCopy above it


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    """A finished copy: the source version copied, the destination ETag, and how it was verified."""

    src: ObjectMeta
    dst_key: str
    dst_etag: str
    part_size_bytes: int
    verified_source: bool
    server_side: bool = False
    resumed_parts: int = 0  # parts of an interrupted upload that were reused, not sent again
    spread_parts: int = 0  # parts other actors sent


class UploadJournal(Protocol):
    """Where open multipart uploads and their sent parts are recorded (the upload id before its first part),
    so a crash can resume them part by part or clean them up."""

    async def upload_opened(self, upload: UploadState) -> None: ...

    async def parts_sent(self, dst_key: str, upload_id: str, parts: list[PartInfo]) -> None: ...

    async def upload_closed(self, dst_key: str, upload_id: str) -> None: ...

    async def find_uploads(self, dst_key: str) -> list[UploadState]: ...


class PartSpreader(Protocol):
    """Peers that can send parts of an upload this copier started (the runtime's other transfer actors)."""

    def peers(self) -> int: ...

    async def send_parts(self, peer: int, meta: ObjectMeta, dst_key: str, upload_id: str,
                         parts: list[tuple[int, ByteRange]]) -> list[tuple[PartInfo, str]]: ...


class Limits:
    """Shared pacing for one actor: byte budget, AIMD request concurrency, request rate and bandwidth."""

    def __init__(self, budget: ByteBudget, concurrency: AdaptiveLimit, requests: TokenBucket,
                 bandwidth: TokenBucket):
        self.budget = budget
        self.concurrency = concurrency
        self.requests = requests
        self.bandwidth = bandwidth
        self.errors: dict[str, int] = {}  # failed requests by error class, for metrics (taken by the actor)

    async def call(self, coro_fn, nbytes: int = 0):
        """Run one store request under the caps; a throttle answer halves the concurrency cap."""
        await self._pace(nbytes)
        await self.concurrency.acquire()
        return await self._run(coro_fn)

    async def call_sized(self, pick):
        """Like `call`, for a request sized only once it may go: `pick()` returns (nbytes, coro_fn), or None
        for nothing left to send. A reader sizes its next piece then, from the rate learnt by that time. The
        rate and bandwidth caps are taken after the pick (holding the slot: under those caps slots are not
        the limit), so a stream that finds nothing left spends no request token."""
        await self.concurrency.acquire()

        async def sized():
            picked = pick()
            if picked is None:
                return None
            nbytes, coro_fn = picked
            await self._pace(nbytes)
            return await coro_fn()

        return await self._run(sized)

    async def _pace(self, nbytes: int) -> None:
        """The request-rate and bandwidth caps for one request of `nbytes`."""
        if self.requests.rate_per_s > 0:
            await self.requests.take()
        if nbytes and self.bandwidth.rate_per_s > 0:
            await self.bandwidth.take(nbytes)

    async def _run(self, coro_fn):
        throttled = False
        try:
            return await coro_fn()
        except DthError as exc:
            throttled = isinstance(exc, Throttled)
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            raise
        finally:
            await self.concurrency.release(throttled)

    def take_errors(self) -> dict[str, int]:
        errors, self.errors = self.errors, {}
        return errors


_MAX_GETS_PER_PART = 16
_EMPTY_MD5 = hashlib.md5(b"").hexdigest()
_OFFLOAD_BYTES = 1 << 20  # hash larger buffers in a thread: hashlib releases the GIL, the loop keeps moving


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


class _InOrderDigest:
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
        return (running.hexdigest() if isinstance(self._expected, str) else running.value) == self._expected


async def sweep_intent(dst: Writer, dst_key: str, known_ids: set[str]) -> int:
    """Abort uploads of exactly `dst_key` that a crash left unrecorded (Create ran, its record did not);
    returns how many were aborted. Raises DthError if listing or an abort fails."""
    aborted = 0
    for upload in await dst.list_uploads(dst_key):
        if upload.key == dst_key and upload.upload_id not in known_ids:  # exact key, never a prefix match
            await dst.abort_multipart(dst_key, upload.upload_id)
            aborted += 1
    return aborted


def _is_md5_etag(etag: str, features: StoreFeatures) -> bool:
    return len(etag) == 32 and all(c in string.hexdigits for c in etag) and features.single_put_etag_is_md5


def _whole_digest(etag: str, checksum: str, features: StoreFeatures) -> _InOrderDigest | None:
    """The running digest that can check a whole object read in parts against the source: its MD5 ETag, else
    a whole-object CRC-64 it published (OSS objects uploaded in parts); None when it published neither."""
    if _is_md5_etag(etag, features):
        return _InOrderDigest(hashlib.md5(), etag, "MD5 ETag")
    crc = crc64ecma_value(checksum) if "crc64ecma" in features.checksum_kinds else None
    return _InOrderDigest(new_crc64ecma(), crc, "CRC-64") if crc is not None else None


class Copier:
    """Copies objects from `src` to `dst`; one instance per actor, shared by all in-flight copies."""

    def __init__(self, src: Reader, dst: Writer, src_features: StoreFeatures, dst_features: StoreFeatures,
                 settings: CopySettings, limits: Limits, journal: UploadJournal | None = None,
                 spread: PartSpreader | None = None):
        self._src = src
        self._dst = dst
        self._src_features = src_features
        self._dst_features = dst_features
        self._settings = settings
        self._limits = limits
        self._journal = journal
        self._spread = spread
        self.retries = 0
        self.parts_in_flight = 0  # multipart parts being read or sent now (a metrics gauge)
        self._server_side = bool(settings.server_side_bucket) and hasattr(dst, "copy_object")
        self._server_side_parts = self._server_side and hasattr(dst, "upload_part_copy")
        self._reads = ReadSizer(settings.get_range_bytes)

    @contextlib.asynccontextmanager
    async def _part_in_flight(self):
        self.parts_in_flight += 1
        try:
            yield
        finally:
            self.parts_in_flight -= 1

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
                outcome = None
                cutoff = min(self._settings.copy_cutoff_bytes, self._dst_features.max_single_put_bytes)
                if self._server_side and meta.size <= cutoff:
                    outcome = await self._copy_server_side(meta, dst_key)
                elif self._server_side_parts and meta.size > cutoff:
                    outcome = await self._copy_server_side_parts(meta, dst_key)
                if outcome is not None:
                    return outcome
                plan = self.part_plan(meta.size)
                if plan is None:
                    return await self._copy_single(meta, dst_key)
                return await self._copy_multipart(meta, dst_key, plan)
            except PreconditionFailed as exc:
                exc.attempts = attempt
                if attempt == attempts:
                    raise
                self.retries += 1
                # The source changed since listing: copy its current version instead (never a torn mix).
                meta = (await self._limits.call(lambda m=meta: self._src.head(m.key))).meta
            except Unreadable:
                raise
            except DthError as exc:
                exc.attempts = attempt
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

    async def _copy_server_side_parts(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome | None:
        """A multipart upload whose parts are UploadPartCopy ranges of the source (CopyObject stops at 5 GiB):
        no bytes through us. Returns None when the service refuses it or stores something else (rclone serve
        s3 accepts UploadPartCopy and keeps empty parts); the caller then moves the bytes itself."""
        plan = plan_parts(meta.size, self._dst_features, self._settings.part_size_bytes)
        source = await self._limits.call(lambda: self._src.head(meta.key))  # headers to carry over
        if source.meta.etag and meta.etag and source.meta.etag != meta.etag:
            raise PreconditionFailed("source changed since listing")
        state = UploadState(dst_key, "", meta.etag, meta.size, plan.part_size_bytes)
        if self._journal is not None:
            await self._journal.upload_opened(state)  # intent first, as for any upload (see _copy_multipart)
        upload_id = await self._limits.call(lambda: self._dst.create_multipart(dst_key, source.headers))
        if self._journal is not None:
            await self._journal.upload_opened(replace(state, upload_id=upload_id))
        gate = asyncio.Semaphore(self._settings.parts_in_flight)
        bucket = self._settings.server_side_bucket

        async def one(number: int, byte_range: ByteRange) -> PartInfo:
            async with gate:
                etag = await self._limits.call(lambda: self._dst.upload_part_copy(
                    bucket, meta.key, dst_key, upload_id, number, byte_range, if_match=meta.etag))
            return PartInfo(number, etag, byte_range.length)

        try:
            parts = list(await asyncio.gather(*(one(n, r) for n, r in plan.ranges())))
            if any(not p.etag or (p.etag == _EMPTY_MD5 and p.size) for p in parts):
                self._server_side_parts = False  # empty parts stored, or no part ETag: never complete those
                await self._abort(dst_key, upload_id)
                return None
            result = await self._limits.call(lambda: self._dst.complete_multipart(dst_key, upload_id, parts))
        except PermissionDenied:
            self._server_side_parts = False
            await self._abort(dst_key, upload_id)
            return None
        except BaseException:
            await self._abort(dst_key, upload_id)  # nothing of ours is in the parts: a retry starts afresh
            raise
        if self._journal is not None:
            await self._journal.upload_closed(dst_key, upload_id)
        landed = await self._limits.call(lambda: self._dst.head(dst_key))
        if landed.meta.size != meta.size:
            self._server_side_parts = False  # the next attempt moves the bytes itself and replaces this
            raise IntegrityError(f"server-side multipart copy left {landed.meta.size} bytes of {meta.size}")
        # The same part layout on both sides gives the same multipart ETag: equal content, part by part.
        verified = bool(result.etag) and result.etag == meta.etag and "-" in meta.etag
        return CopyOutcome(src=meta, dst_key=dst_key, dst_etag=result.etag, part_size_bytes=plan.part_size_bytes,
                           verified_source=verified, server_side=True)

    async def _copy_single(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        if meta.size > self._reads.piece_bytes() and _is_md5_etag(meta.etag, self._src_features):
            # Read in parallel ranges (a long link), as many as its parts would have had: one PUT must not read
            # slower than parts do; into a reused buffer. The whole object is still checked against its MD5.
            part_bytes = choose_part_size(meta.size, self._dst_features, self._settings.part_size_bytes)
            streams = _MAX_GETS_PER_PART * -(-meta.size // part_bytes)
            async with self._limits.budget.buffer(meta.size) as buf:
                got = await self._get_part(meta, ByteRange(0, meta.size), buf, streams)
                return await self._put_single(meta, dst_key, got)
        async with self._limits.budget.hold(meta.size):
            # One GET: a small object, or a backend that checks a whole-object CRC (OSS) on a full read.
            got = await self._limits.call(lambda: self._src.get(meta.key, if_match=meta.etag), meta.size)
            return await self._put_single(meta, dst_key, got)

    async def _put_single(self, meta: ObjectMeta, dst_key: str, got: GetResult) -> CopyOutcome:
        """Send what was read as one PUT whose Content-MD5 is the source's MD5 where it has one."""
        data = got.data
        if len(data) != meta.size and meta.etag:
            raise IntegrityError(f"read {len(data)} bytes of {meta.size}")
        if len(data) != meta.size:
            raise PreconditionFailed("source size changed since listing")
        source_etag = got.info.meta.etag or meta.etag
        verified = _is_md5_etag(source_etag, self._src_features)
        if verified and self._dst_features.put_checks_content_md5:
            # The source's own MD5 goes out as Content-MD5: the destination refuses any body that does not
            # hash to it (BadDigest, retried), so every byte written is checked against the source there,
            # without hashing it here as well.
            digest = bytes.fromhex(source_etag)
        else:
            digest = await md5_digest(data)
            if verified and source_etag != digest.hex():
                raise IntegrityError("bytes read do not match the source ETag")
        verified = verified or bool(got.info.meta.checksum)  # the backend checked its CRC on a full read
        result = await self._limits.call(lambda: self._dst.put(dst_key, data, got.info.headers, digest))
        if self._dst_features.single_put_etag_is_md5 and result.etag and result.etag != digest.hex():
            raise IntegrityError("destination ETag does not match the MD5 of the bytes sent")
        # Record the source as its listing shows it, so the next run's diff compares like with like.
        src = replace(meta, checksum=got.info.meta.checksum or meta.checksum)
        return CopyOutcome(src=src, dst_key=dst_key, dst_etag=result.etag, part_size_bytes=0,
                           verified_source=verified)

    async def _resumable(self, meta: ObjectMeta, dst_key: str, plan: PartPlan) -> tuple[str, dict[int, PartInfo]]:
        """An interrupted upload of this very source version to continue, and the parts to keep from it.

        Only an upload recorded for exactly `dst_key` with the same source ETag, size and part size
        qualifies, and only parts that the manifest recorded (our MD5) and the server's ListParts shows with
        that ETag and the planned size are kept; any other part is sent again (a re-sent part replaces the
        server's), so an upload is never completed with bytes nobody checked. Other recorded uploads of the
        key are for another source version and are aborted. Returns ("", {}) when there is none.
        """
        if self._journal is None or not meta.etag:
            return "", {}
        keep_id, keep_parts = "", {}
        recorded = await self._journal.find_uploads(dst_key)
        if any(not u.upload_id for u in recorded):
            await sweep_intent(self._dst, dst_key, {u.upload_id for u in recorded})
            await self._journal.upload_closed(dst_key, "")
        for upload in recorded:
            if not upload.upload_id:
                continue
            if keep_id or (upload.src_etag, upload.size, upload.part_size_bytes) != (
                    meta.etag, meta.size, plan.part_size_bytes):
                await self._abort(dst_key, upload.upload_id)
                continue
            try:
                listed = await self._limits.call(lambda u=upload: self._dst.list_parts(dst_key, u.upload_id))
            except NotFound:  # completed or aborted behind our back: nothing to continue
                await self._journal.upload_closed(dst_key, upload.upload_id)
                continue
            lengths = {number: byte_range.length for number, byte_range in plan.ranges()}
            keep_id = upload.upload_id
            for part in listed:
                mine = upload.parts.get(part.part_number)
                if (mine is not None and part.etag.strip('"').lower() == mine.etag.lower()
                        and part.size == mine.size == lengths.get(part.part_number)):
                    keep_parts[part.part_number] = mine
        return keep_id, keep_parts

    async def _copy_multipart(self, meta: ObjectMeta, dst_key: str, plan: PartPlan) -> CopyOutcome:
        ranges = list(plan.ranges())
        resumed_id, done = await self._resumable(meta, dst_key, plan)
        part_md5s: dict[int, bytes] = {n: bytes.fromhex(p.etag) for n, p in done.items()}
        whole: _InOrderDigest | None = None
        gate = asyncio.Semaphore(self._settings.parts_in_flight)
        upload_id = resumed_id
        headers_ready: asyncio.Future = asyncio.get_running_loop().create_future()
        source_etag = meta.etag

        todo = [(n, r) for n, r in ranges if n not in done]
        groups = self._spread_groups(meta, todo)  # [local parts, parts for peer 0, peer 1, ...]

        async def do_part(number: int, byte_range: ByteRange) -> PartInfo:
            nonlocal source_etag
            async with gate, self._limits.budget.buffer(byte_range.length) as buf, self._part_in_flight():
                got = await self._get_part(meta, byte_range, buf)
                if number == 1 and not headers_ready.done():
                    source_etag = got.info.meta.etag or meta.etag
                    headers_ready.set_result(got.info)
                uid = await asyncio.shield(upload_started)
                part, digest = await self._put_part(dst_key, uid, number, byte_range, got.data)
                part_md5s[number] = digest
                if whole is not None:
                    await whole.feed(number, got.data)
                return part

        async def on_peer(peer: int, parts: list[tuple[int, ByteRange]]) -> list[PartInfo]:
            uid = await asyncio.shield(upload_started)
            sent = await self._spread.send_parts(peer, meta, dst_key, uid, parts)
            for part, md5_hex in sent:
                part_md5s[part.part_number] = bytes.fromhex(md5_hex)
            return [part for part, _ in sent]

        async def start_upload() -> str:
            nonlocal upload_id, whole
            if resumed_id:
                return resumed_id
            info = await headers_ready
            if len(groups) == 1:  # only a fresh upload read here in full sees every byte, in order
                whole = _whole_digest(info.meta.etag or meta.etag, info.meta.checksum, self._src_features)
            state = UploadState(dst_key, "", meta.etag, meta.size, plan.part_size_bytes)
            if self._journal is not None:
                # An intent first: a crash between Create and the record must not leave an untracked upload.
                await self._journal.upload_opened(state)
            upload_id = await self._limits.call(lambda: self._dst.create_multipart(dst_key, info.headers))
            if self._journal is not None:
                await self._journal.upload_opened(replace(state, upload_id=upload_id))
            return upload_id

        upload_started = asyncio.ensure_future(start_upload())
        tasks = [asyncio.ensure_future(do_part(n, r)) for n, r in groups[0]]
        remote = [asyncio.ensure_future(on_peer(peer, parts)) for peer, parts in enumerate(groups[1:]) if parts]
        try:
            sent = {p.part_number: p for p in await asyncio.gather(*tasks)}
            for peer_parts in await asyncio.gather(*remote):
                sent.update((p.part_number, p) for p in peer_parts)
            await upload_started
            if whole is not None and not whole.matches():
                # Checked before Complete: bytes that differ from the source never become an object.
                raise IntegrityError(f"bytes read do not match the source's {whole.name}")
            parts = [sent.get(n) or PartInfo(n, done[n].etag, r.length) for n, r in ranges]
            result = await self._limits.call(lambda: self._dst.complete_multipart(dst_key, upload_id, parts))
        except BaseException:
            for task in [*tasks, *remote, upload_started]:
                task.cancel()
            await asyncio.gather(*tasks, *remote, upload_started, return_exceptions=True)
            error = sys.exc_info()[1]
            # A retryable failure or a shutdown keeps the upload (and its journal) for the next attempt or
            # run to continue; anything else means its parts can never be completed: abort. So does an
            # integrity failure: its parts may hold the wrong bytes, which a resumed upload would reuse.
            keep = isinstance(error, asyncio.CancelledError) or (
                isinstance(error, DthError) and error.retryable and not isinstance(error, IntegrityError))
            if upload_id and not (keep and self._journal is not None):
                await self._abort(dst_key, upload_id)
            raise
        if self._journal is not None:
            await self._journal.upload_closed(dst_key, upload_id)
        expected = multipart_etag([part_md5s[n] for n, _ in ranges])
        if self._dst_features.multipart_etag_is_md5_of_md5s and result.etag and result.etag != expected:
            raise IntegrityError("destination multipart ETag does not match the parts sent")
        # The whole object matched before Complete, or its multipart ETag equals ours part for part.
        verified = whole is not None or (source_etag == expected and self._src_features.multipart_etag_is_md5_of_md5s)
        return CopyOutcome(src=meta, dst_key=dst_key, dst_etag=result.etag,
                           part_size_bytes=plan.part_size_bytes, verified_source=verified,
                           resumed_parts=len(done), spread_parts=sum(len(g) for g in groups[1:]))

    def _spread_groups(self, meta: ObjectMeta, todo: list[tuple[int, ByteRange]]) -> list[list]:
        """Parts to send here (always part 1: its GET carries the headers) and per peer, round-robin.

        Only objects of at least `spread_threshold_bytes` with more parts than one actor keeps in flight are
        spread; the others stay in this actor."""
        peers = self._spread.peers() if self._spread is not None else 0
        threshold = self._settings.spread_threshold_bytes
        if not peers or not threshold or meta.size < threshold or len(todo) <= self._settings.parts_in_flight:
            return [todo]
        groups: list[list] = [[] for _ in range(peers + 1)]
        for index, item in enumerate(todo):
            groups[0 if item[0] == 1 else index % (peers + 1)].append(item)
        return groups

    async def _get_part(self, meta: ObjectMeta, byte_range: ByteRange, out: memoryview,
                        max_streams: int = _MAX_GETS_PER_PART) -> GetResult:
        """Read one range with up to `max_streams` concurrent ranged GETs, when it is larger than one read
        should be (see ReadSizer): across a long lossy link one TCP stream's rate is capped by RTT and loss, so
        parallel streams multiply it. Each stream takes the next piece when it is free, sized at that moment:
        a stream slowed by a loss holds up one small piece, not a fixed share of the range, and once a fast
        path is learnt the rest goes in a few large reads. The pieces land in `out` (a buffer the caller holds,
        exactly the range's length): written in place by a store that reads into a buffer (RangeReader), copied
        there otherwise."""
        pieces = PieceCursor(byte_range)
        into = isinstance(self._src, RangeReader)
        got: list[tuple[int, ObjectInfo]] = []  # (piece start, what the GET said about the object)

        async def read(r: ByteRange) -> tuple[int, ObjectInfo]:
            started = time.monotonic()
            window = out[r.start - byte_range.start:r.end - byte_range.start]
            if into:
                info = await self._src.get_into(meta.key, r, window, if_match=meta.etag)
            else:
                piece = await self._src.get(meta.key, r, if_match=meta.etag)
                window[:] = piece.data
                info = piece.info
            self._reads.observe(r.length, time.monotonic() - started)
            return r.start, info

        def pick():
            r = pieces.take(self._reads.piece_bytes())
            return None if r is None else (r.length, lambda: read(r))

        async def stream() -> None:
            while (result := await self._limits.call_sized(pick)) is not None:
                got.append(result)

        # As many streams as the first pieces fill (the sizer never answers 0), at most max_streams.
        streams = [asyncio.ensure_future(stream())
                   for _ in range(min(max_streams, -(-byte_range.length // self._reads.piece_bytes())))]
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

    async def _put_part(self, dst_key: str, upload_id: str, number: int, byte_range: ByteRange,
                        data: bytes) -> tuple[PartInfo, bytes]:
        """Send one part with its Content-MD5, check the returned ETag, record it; (PartInfo, raw MD5)."""
        digest = await md5_digest(data)
        etag = await self._limits.call(lambda: self._dst.upload_part(dst_key, upload_id, number, data, digest))
        if self._dst_features.single_put_etag_is_md5 and etag and etag != digest.hex():
            raise IntegrityError(f"part {number} ETag does not match the MD5 of the bytes sent")
        if self._journal is not None:
            await self._journal.parts_sent(dst_key, upload_id, [PartInfo(number, digest.hex(), byte_range.length)])
        return PartInfo(number, etag, byte_range.length), digest

    async def send_parts(self, meta: ObjectMeta, dst_key: str, upload_id: str,
                         parts: list[tuple[int, ByteRange]]) -> list[tuple[PartInfo, str]]:
        """A peer's share of a spread upload: GET (If-Match) and send these parts, `parts_in_flight` at a time;
        returns each part with its MD5 (hex). Raises DthError after this layer's bounded retries."""
        gate = asyncio.Semaphore(self._settings.parts_in_flight)

        async def one(number: int, byte_range: ByteRange) -> tuple[PartInfo, str]:
            for attempt in range(1, self._settings.max_attempts + 1):
                try:
                    async with gate, self._limits.budget.buffer(byte_range.length) as buf, self._part_in_flight():
                        got = await self._get_part(meta, byte_range, buf)
                        part, digest = await self._put_part(dst_key, upload_id, number, byte_range, got.data)
                        return part, digest.hex()
                except DthError as exc:
                    if not exc.retryable or attempt == self._settings.max_attempts:
                        raise
                    await asyncio.sleep(backoff_s(attempt))
            raise AssertionError("unreachable")

        return list(await asyncio.gather(*(one(n, r) for n, r in parts)))

    async def _abort(self, dst_key: str, upload_id: str) -> None:
        """Abort a failed upload; if even that fails the journal keeps it for the job's final cleanup."""
        try:
            await self._dst.abort_multipart(dst_key, upload_id)
        except DthError:
            return
        if self._journal is not None:
            await self._journal.upload_closed(dst_key, upload_id)
