"""Copy one object: pick the strategy that fits it and run it under the one bounded retry.

Integrity: every PUT and part carries Content-MD5; the PUT/part/Complete ETags are checked against our own
MD5s where the destination's ETags are MD5-based; the bytes read are checked against the source's ETag (or
CRC64) where that is a whole-content digest. Every ranged GET carries If-Match on the listed ETag, so a source
changed mid-copy is re-read from its new version and never stitched into a torn object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial

from dth_ray.engine.context import (
    CopyContext,
    CopyOutcome,
    CopySettings,
    CopyStrategy,
    PartSpreader,
    UploadJournal,
)
from dth_ray.engine.limits import Limits
from dth_ray.engine.multipart import Multipart
from dth_ray.engine.reads import RangedReads
from dth_ray.engine.retry import retry
from dth_ray.engine.serverside import ServerSideCopy, ServerSideParts
from dth_ray.engine.single import SinglePut
from dth_ray.errors import DthError, PreconditionFailed
from dth_ray.model import ByteRange, ObjectMeta, PartInfo, PartPlan
from dth_ray.stores.base import LinkAware, Reader, StoreFeatures, Writer


class _Source:
    """The source version a copy attempt reads: the listed one, then what a re-HEAD found after it changed."""

    def __init__(self, meta: ObjectMeta):
        self.meta = meta


class Copier:
    """Copies objects from `src` to `dst`; one instance per actor, shared by all in-flight copies. `sleep` is
    the retry clock (tests pass a fake one)."""

    def __init__(self, src: Reader, dst: Writer, src_features: StoreFeatures, dst_features: StoreFeatures,
                 settings: CopySettings, limits: Limits, journal: UploadJournal | None = None,
                 spread: PartSpreader | None = None, *,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep):
        self._settings = settings
        self._ctx = CopyContext(src=src, dst=dst, src_features=src_features, dst_features=dst_features,
                                settings=settings, limits=limits,
                                reads=RangedReads(src, limits, settings.get_range_bytes),
                                journal=journal, spread=spread, sleep=sleep)
        self._server_copy = ServerSideCopy(self._ctx)
        self._server_parts = ServerSideParts(self._ctx)
        self._single = SinglePut(self._ctx)
        self._multipart = Multipart(self._ctx)
        self.retries = 0
        self._link = src if isinstance(src, LinkAware) else None  # a store that knows its round trip

    @property
    def parts_in_flight(self) -> int:
        """Multipart parts being read or sent now (a metrics gauge)."""
        return self._ctx.parts_in_flight

    def part_plan(self, size_bytes: int) -> PartPlan | None:
        """The part plan for an object of this size, or None when a single PUT is used."""
        return self._ctx.part_plan(size_bytes)

    def source_rtt_s(self) -> float | None:
        """The source's round-trip time as its connections measured it (stores.base.LinkAware), or None."""
        return self._link.link_rtt_s() if self._link is not None else None

    def strategies(self, meta: ObjectMeta) -> tuple[CopyStrategy, CopyStrategy]:
        """The strategies for this object, in the order tried: server-side where the service offers it
        (CopyObject up to the copy cutoff, UploadPartCopy above it), then moving the bytes: one PUT or
        parts."""
        cutoff = min(self._settings.copy_cutoff_bytes, self._ctx.dst_features.max_single_put_bytes)
        server = self._server_copy if meta.size <= cutoff else self._server_parts
        local = self._single if self.part_plan(meta.size) is None else self._multipart
        return server, local

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        """Copy one object, retrying retryable errors and re-reading a source that changed mid-copy.

        Raises the last DthError when attempts run out (its `attempts` says how many were made); Unreadable
        (archived source) is never retried. The outcome's `attempts` says how many the copy took.
        """
        source = _Source(meta)
        attempts = 0

        def attempt() -> Awaitable[CopyOutcome]:
            nonlocal attempts
            attempts += 1
            return self._copy_once(source.meta, dst_key)

        outcome = await retry(attempt, self._settings.max_attempts, sleep=self._ctx.sleep,
                              on_retry=partial(self._before_retry, source), at_once=(PreconditionFailed,))
        return replace(outcome, attempts=attempts)

    async def _copy_once(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome:
        # One PUT last: parts apply by the byte budget's capacity when that strategy runs, which a resize
        # (TransferWorker._fit_budget) may have changed since the choice.
        for strategy in (*self.strategies(meta), self._single):
            outcome = await strategy.copy(meta, dst_key)
            if outcome is not None:
                return outcome
        raise AssertionError("moving the bytes always applies")

    async def _before_retry(self, source: _Source, error: DthError, attempt: int) -> None:
        self.retries += 1
        if isinstance(error, PreconditionFailed):
            # The source changed since listing: copy its current version instead (never a torn mix).
            source.meta = (await self._ctx.limits.call(lambda: self._ctx.src.head(source.meta.key))).meta

    async def send_parts(self, meta: ObjectMeta, dst_key: str, upload_id: str,
                         parts: list[tuple[int, ByteRange]]) -> list[tuple[PartInfo, str]]:
        """A peer's share of a spread upload (see Multipart.send_parts); returns each part with its MD5 (hex).
        Raises DthError after this layer's bounded retries."""
        return await self._multipart.send_parts(meta, dst_key, upload_id, parts)
