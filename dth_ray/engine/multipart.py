"""The multipart strategy: pipelined ranged GETs and UploadParts, resumable, optionally spread over peers.

Every part carries Content-MD5 or, where the destination checks it, CRC64NVME instead (a FULL_OBJECT CRC64NVME
upload: the Complete carries the whole object's, the source's own where its store keeps one, so S3 refuses
an object that differs from the source), and is recorded in the journal once sent, so an interrupted upload
resumes from the parts both sides vouch for; the bytes read are checked against the source's whole-object
MD5 or CRC-64 before Complete where it has one and no source CRC64NVME does it, else the multipart ETags must
match part for part.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial

from dth_ray.checksums import crc64nvme_checksum
from dth_ray.engine.context import CopyContext, CopyOutcome
from dth_ray.engine.digests import InOrderDigest, crc64nvme_digest, md5_digest, source_crc64nvme, whole_digest
from dth_ray.engine.partcrc import etag_md5, whole_crc
from dth_ray.engine.resume import resumable
from dth_ray.engine.retry import retry
from dth_ray.errors import DthError, IntegrityError, PermissionDenied, PreconditionFailed
from dth_ray.model import ByteRange, ObjectInfo, ObjectMeta, PartInfo, PartPlan, PutResult, UploadState
from dth_ray.plan.parts import multipart_etag
from dth_ray.stores.base import CRC_CHECKED


class _Upload:
    """One multipart copy in progress: its upload (resumed or created once part 1's GET brought the headers),
    the parts kept from a resumed upload, how the parts are shared out, and what the parts sent add up to."""

    started: asyncio.Future[str]  # the upload id, once the upload is open (set by Multipart.copy)

    def __init__(self, meta: ObjectMeta, dst_key: str, plan: PartPlan, resumed_id: str,
                 done: dict[int, PartInfo], groups: list[list[tuple[int, ByteRange]]], parts_in_flight: int):
        self.meta = meta
        self.dst_key = dst_key
        self.plan = plan
        self.ranges = list(plan.ranges())
        self.upload_id = resumed_id  # "" until created
        self.done = done  # parts of a resumed upload that are kept, not sent again
        self.groups = groups  # [parts sent here, parts for peer 0, peer 1, ...]
        self.gate = asyncio.Semaphore(parts_in_flight)
        # Parts sent here take their buffers in part order (see Multipart._part_buffer): the event of each
        # part is set once the part before it holds its buffer.
        self._position = {n: i for i, (n, _) in enumerate(groups[0])}
        self._turns = [asyncio.Event() for _ in groups[0]]
        if self._turns:
            self._turns[0].set()
        # Each part's MD5 as its ETag should be (ours; the server's where CRC64NVME replaced our MD5), or None.
        self.part_md5s: dict[int, bytes | None] = {n: etag_md5(p.etag) for n, p in done.items()}
        self.whole: InOrderDigest | None = None  # the whole-object check, where it can see every byte
        self.source_etag = meta.etag  # as part 1's GET says it
        self.headers: asyncio.Future[ObjectInfo] = asyncio.get_running_loop().create_future()
        self.crc = False  # a FULL_OBJECT CRC64NVME upload: parts and Complete carry CRC64NVME
        self.md5_parts = True  # parts carry Content-MD5 (not where a CRC64NVME the destination checks does)
        self.source_crc: int | None = None  # the source's own full-object CRC64NVME, sent on Complete

    async def turn(self, number: int) -> None:
        """Wait until every part before `number` (among those sent here) holds its buffer or is done."""
        await self._turns[self._position[number]].wait()

    def took_buffer(self, number: int) -> None:
        later = self._position[number] + 1
        if later < len(self._turns):
            self._turns[later].set()

    def headers_seen(self, info: ObjectInfo) -> None:
        """Part 1's GET answered: its headers go to Create, its ETag is the source's."""
        if not self.headers.done():
            self.source_etag = info.meta.etag or self.meta.etag
            self.headers.set_result(info)


class Multipart:
    """Copies an object that needs parts (see CopyContext.part_plan); also sends a peer's share of a spread
    upload (`send_parts`)."""

    def __init__(self, ctx: CopyContext):
        self._ctx = ctx

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome | None:
        """Copy in parts, continuing a recorded upload of this source version; None when the object fits one
        PUT. Raises IntegrityError (bytes or ETags that do not match), PreconditionFailed (the source changed)
        and any DthError of the calls. A retryable failure (not an integrity one) keeps the upload for the
        next attempt where a journal can find it; any other aborts it."""
        ctx = self._ctx
        plan = ctx.part_plan(meta.size)
        if plan is None:
            return None
        resumed_id, done, plan = await resumable(ctx, meta, dst_key, plan)
        todo = [(n, r) for n, r in plan.ranges() if n not in done]
        upload = _Upload(meta, dst_key, plan, resumed_id, done, self._spread_groups(meta, todo),
                         ctx.settings.parts_in_flight)
        upload.started = asyncio.ensure_future(self._start(upload))
        tasks = [asyncio.ensure_future(self._local_part(upload, n, r)) for n, r in upload.groups[0]]
        remote = [asyncio.ensure_future(self._peer_parts(upload, peer, parts))
                  for peer, parts in enumerate(upload.groups[1:]) if parts]
        try:
            result = await self._complete(upload, tasks, remote)
        except BaseException as error:
            await self._failed(upload, [*tasks, *remote, upload.started], error)
            raise
        return await self._outcome(upload, result)

    async def _start(self, upload: _Upload) -> str:
        """Open the upload (a resumed one is open already) with the headers part 1's GET brought."""
        ctx = self._ctx
        # A resumed upload goes on as it was created: with CRC64NVME where its kept parts carry it.
        upload.crc = ctx.crc.send if not upload.upload_id else \
            ctx.crc.checked or any(p.checksum for p in upload.done.values())
        upload.md5_parts = not (upload.crc and ctx.crc.checked)
        if upload.crc and ctx.src_features.crc64nvme == CRC_CHECKED:  # HEAD while part 1's GET brings headers
            upload.source_crc = await self._source_crc(upload)
        if upload.upload_id:
            return upload.upload_id
        info = await upload.headers
        meta, dst_key = upload.meta, upload.dst_key
        checked_end_to_end = upload.source_crc is not None and ctx.crc.checked
        if len(upload.groups) == 1 and not checked_end_to_end:  # a fresh upload read here sees every byte
            upload.whole = whole_digest(info.meta.etag or meta.etag, info.meta.checksum, ctx.src_features)
        state = UploadState(dst_key, "", meta.etag, meta.size, upload.plan.part_size_bytes)
        # An intent first: a crash between Create and the record must not leave an untracked upload.
        await ctx.upload_opened(state)
        extra = {"crc64nvme": True} if upload.crc else {}
        upload.upload_id = await ctx.limits.call(lambda: ctx.dst.create_multipart(dst_key, info.headers, **extra))
        await ctx.upload_opened(replace(state, upload_id=upload.upload_id))
        return upload.upload_id

    async def _source_crc(self, upload: _Upload) -> int | None:
        """The source's full-object CRC64NVME from a HEAD with checksum mode (ranged GETs never carry it), where
        its store checks and keeps one. Raises PreconditionFailed when the source changed since listing."""
        ctx, meta = self._ctx, upload.meta
        try:
            info = await ctx.limits.call(lambda: ctx.src.head(meta.key, checksums=True))
        except PermissionDenied:  # e.g. SSE-KMS without kms:Decrypt, which S3 asks for the checksum
            return None
        if meta.etag and info.meta.etag and info.meta.etag != meta.etag:
            raise PreconditionFailed("source changed since listing")
        return source_crc64nvme(info.meta.checksum, ctx.src_features)

    async def _local_part(self, upload: _Upload, number: int, byte_range: ByteRange) -> PartInfo:
        """GET one part here and send it once the upload is open; it feeds the whole-object check."""
        ctx = self._ctx
        async with self._part_buffer(upload, number, byte_range.length) as buf, ctx.part_in_flight():
            got = await ctx.reads.read(upload.meta, byte_range, buf)
            if number == 1:
                upload.headers_seen(got.info)
            upload_id = await asyncio.shield(upload.started)
            part, digest = await self._put_part(upload.dst_key, upload_id, number, byte_range, got.data,
                                                upload.crc, upload.md5_parts)
            upload.part_md5s[number] = digest
            if upload.whole is not None:
                await upload.whole.feed(number, got.data)
            return part

    @asynccontextmanager
    async def _part_buffer(self, upload: _Upload, number: int, nbytes: int):
        """A place among the upload's parts in flight and the part's buffer from the byte budget, both taken
        only once the parts before it took theirs.

        A part that holds its buffer waits on earlier parts: on part 1's GET (its headers open the upload) and
        on its turn in the whole-object check. Taken out of order (a small last part fits a gap in the budget
        that part 1 does not), the later parts of a few uploads could hold the whole budget while every
        part 1 waits for it: no part would ever be sent (seen with transfer.buffer_size=32MiB on a mixed set).
        In order, each upload's earliest unsent part holds its buffer whenever a later one does, and it needs
        no more budget to finish, so the budget always frees."""
        await upload.turn(number)
        async with upload.gate, self._ctx.limits.budget.buffer(nbytes) as buf:
            upload.took_buffer(number)
            yield buf

    async def _peer_parts(self, upload: _Upload, peer: int,
                          parts: list[tuple[int, ByteRange]]) -> list[PartInfo]:
        """Have `peer` send these parts once the upload is open."""
        upload_id = await asyncio.shield(upload.started)
        sent = await self._ctx.spread.send_parts(peer, upload.meta, upload.dst_key, upload_id, parts)
        for part, md5_hex in sent:
            upload.part_md5s[part.part_number] = etag_md5(md5_hex)
        return [part for part, _ in sent]

    async def _complete(self, upload: _Upload, tasks: list[asyncio.Future],
                        remote: list[asyncio.Future]) -> PutResult:
        """Wait for every part, check the whole object where we can, and Complete."""
        ctx = self._ctx
        sent = {p.part_number: p for p in await asyncio.gather(*tasks)}
        for peer_parts in await asyncio.gather(*remote):
            sent.update((p.part_number, p) for p in peer_parts)
        await upload.started
        if upload.whole is not None and not upload.whole.matches():
            # Checked before Complete: bytes that differ from the source never become an object.
            raise IntegrityError(f"bytes read do not match the source's {upload.whole.name}")
        parts = [sent.get(n) or replace(upload.done[n], size=r.length) for n, r in upload.ranges]
        dst_key, upload_id = upload.dst_key, upload.upload_id
        whole = whole_crc(parts, upload.source_crc) if upload.crc else None
        extra = {"crc64nvme": whole} if whole is not None else {}
        if upload.crc and whole is None:  # a part without its CRC (a peer that knew the server ignores it)
            parts = [replace(p, checksum="") for p in parts]
        result = await ctx.limits.call(lambda: ctx.dst.complete_multipart(dst_key, upload_id, parts, **extra))
        if whole is not None:
            ctx.crc.answered(whole, result.checksum)
        return result

    async def _failed(self, upload: _Upload, pending: list[asyncio.Future], error: BaseException) -> None:
        """Stop the rest of a failed copy, and abort its upload unless the next attempt can continue it."""
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # A retryable failure or a shutdown keeps the upload (and its journal) for the next attempt or
        # run to continue; anything else means its parts can never be completed: abort. So does an
        # integrity failure: its parts may hold the wrong bytes, which a resumed upload would reuse.
        keep = isinstance(error, asyncio.CancelledError) or (
            isinstance(error, DthError) and error.retryable and not isinstance(error, IntegrityError))
        if upload.upload_id and not (keep and self._ctx.journal is not None):
            await self._ctx.abort(upload.dst_key, upload.upload_id)

    async def _outcome(self, upload: _Upload, result: PutResult) -> CopyOutcome:
        """Close the journal's record and check the multipart ETag against the parts sent."""
        ctx = self._ctx
        await ctx.upload_closed(upload.dst_key, upload.upload_id)
        md5s = [upload.part_md5s.get(n) for n, _ in upload.ranges]
        expected = multipart_etag(md5s) if all(md5 is not None for md5 in md5s) else ""
        if ctx.dst_features.multipart_etag_is_md5_of_md5s and result.etag and expected and result.etag != expected:
            raise IntegrityError("destination multipart ETag does not match the parts sent")
        # The whole object matched before Complete, or the destination checked it against the source's own
        # CRC64NVME, or its multipart ETag equals ours part for part.
        verified = upload.whole is not None or (upload.source_crc is not None and ctx.crc.checked) or (
            bool(expected) and upload.source_etag == expected and ctx.src_features.multipart_etag_is_md5_of_md5s)
        return CopyOutcome(src=upload.meta, dst_key=upload.dst_key, dst_etag=result.etag,
                           part_size_bytes=upload.plan.part_size_bytes, verified_source=verified,
                           resumed_parts=len(upload.done),
                           spread_parts=sum(len(g) for g in upload.groups[1:]), dst_checksum=result.checksum)

    def _spread_groups(self, meta: ObjectMeta, todo: list[tuple[int, ByteRange]]) -> list[list]:
        """Parts to send here (always part 1: its GET carries the headers) and per peer, round-robin.

        Only objects of at least `spread_threshold_bytes` with more parts than one actor keeps in flight are
        spread; the others stay in this actor."""
        settings = self._ctx.settings
        peers = self._ctx.spread.peers() if self._ctx.spread is not None else 0
        threshold = settings.spread_threshold_bytes
        if not peers or not threshold or meta.size < threshold or len(todo) <= settings.parts_in_flight:
            return [todo]
        groups: list[list] = [[] for _ in range(peers + 1)]
        for index, item in enumerate(todo):
            groups[0 if item[0] == 1 else index % (peers + 1)].append(item)
        return groups

    async def _put_part(self, dst_key: str, upload_id: str, number: int, byte_range: ByteRange, data: bytes,
                        crc: bool, md5: bool) -> tuple[PartInfo, bytes | None]:
        """Send one part with its Content-MD5 and/or CRC64NVME, check the returned ETag, record it; (PartInfo
        with its CRC, the MD5 its ETag should be: ours, else the server's where it is one)."""
        ctx = self._ctx
        digest = await md5_digest(data) if md5 else None
        part_crc = await crc64nvme_digest(data) if crc else None
        extra = {"crc64nvme": part_crc} if part_crc is not None else {}
        etag = await ctx.limits.call(lambda: ctx.dst.upload_part(dst_key, upload_id, number, data, digest, **extra))
        if digest is not None and ctx.dst_features.single_put_etag_is_md5 and etag and etag != digest.hex():
            raise IntegrityError(f"part {number} ETag does not match the MD5 of the bytes sent")
        if digest is None:
            digest = etag_md5(etag)
        if ctx.journal is not None:
            sent = [PartInfo(number, digest.hex() if digest is not None else etag, byte_range.length)]
            await ctx.journal.parts_sent(dst_key, upload_id, sent)
        checksum = crc64nvme_checksum(part_crc) if part_crc is not None else ""
        return PartInfo(number, etag, byte_range.length, checksum), digest

    async def send_parts(self, meta: ObjectMeta, dst_key: str, upload_id: str,
                         parts: list[tuple[int, ByteRange]]) -> list[tuple[PartInfo, str]]:
        """A peer's share of a spread upload: GET (If-Match) and send these parts, `parts_in_flight` at a
        time; returns each part with its MD5 (hex). Raises DthError after this layer's bounded retries (each
        part is retried on its own, on the copier's clock)."""
        ctx = self._ctx
        gate = asyncio.Semaphore(ctx.settings.parts_in_flight)
        sends = (partial(self._share_part, gate, meta, dst_key, upload_id, n, r) for n, r in parts)
        return list(await asyncio.gather(*(retry(send, ctx.settings.max_attempts, sleep=ctx.sleep)
                                           for send in sends)))

    async def _share_part(self, gate: asyncio.Semaphore, meta: ObjectMeta, dst_key: str, upload_id: str,
                          number: int, byte_range: ByteRange) -> tuple[PartInfo, str]:
        """One attempt at one part of a peer's share."""
        ctx = self._ctx
        async with gate, ctx.limits.budget.buffer(byte_range.length) as buf, ctx.part_in_flight():
            got = await ctx.reads.read(meta, byte_range, buf)
            part, digest = await self._put_part(dst_key, upload_id, number, byte_range, got.data,
                                                ctx.crc.send, not ctx.crc.checked)
            return part, digest.hex() if digest is not None else part.etag
