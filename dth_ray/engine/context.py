"""What every copy strategy shares: settings, outcome, upload journal, peers, and one CopyContext.

One CopyContext per copier (per actor) holds the stores, caps, reader and gauges that all strategies use, so
a strategy is a small object over it with one `copy(meta, dst_key)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dth_ray.engine.crcmode import CrcMode
from dth_ray.engine.limits import Limits
from dth_ray.engine.reads import RangedReads
from dth_ray.errors import DthError
from dth_ray.model import ByteRange, ObjectMeta, PartInfo, PartPlan, UploadState
from dth_ray.plan.parts import needs_multipart, plan_parts
from dth_ray.stores.base import MiB, Reader, StoreFeatures, Writer

AUTO_PART_BYTES = 16 * MiB
PARTS_PER_BUDGET = 3


def auto_part_bytes(capacity_bytes: int) -> int:
    """The part size `transfer.part_size=auto` prefers under a byte budget of `capacity_bytes`: 16 MiB, or
    less (whole MiB) so that three parts are read and sent at once. Measured beside Ray (8 × 128 MiB, a
    24 MiB budget): one 16 MiB part at a time ran ~8% slower than 32 MiB of budget in 16 MiB parts (three
    alternating pairs); three of 8 MiB ran as fast as 32 MiB (two runs, inside its spread). The destination's least part size still applies (plan_parts)."""
    return max(MiB, min(AUTO_PART_BYTES, capacity_bytes // PARTS_PER_BUDGET // MiB * MiB))


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
    stream_slot_bytes: int = 8 * 1024**2  # a streamed single PUT reads this much per slot (engine/streamput.py)
    resume_parts: bool = True  # False (a diagnostic switch): recorded uploads are aborted, every part sent again


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
    dst_checksum: str = ""  # what the destination's write answered, e.g. 'crc64ecma:<n>' ('' if nothing)
    attempts: int = 1  # the copier's attempts for this object (engine/retry.py)


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


class CopyStrategy(Protocol):
    """One way to copy an object. Returns None when it does not apply here (the copier falls back to the
    next), e.g. a service that refuses server-side copy; raises DthError like any copy."""

    async def copy(self, meta: ObjectMeta, dst_key: str) -> CopyOutcome | None: ...


@dataclass(eq=False)
class CopyContext:
    """The stores, settings, caps, reader, journal and peers every strategy of one copier uses."""

    src: Reader
    dst: Writer
    src_features: StoreFeatures
    dst_features: StoreFeatures
    settings: CopySettings
    limits: Limits
    reads: RangedReads
    journal: UploadJournal | None = None
    spread: PartSpreader | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the retry clock (tests pass a fake one)
    parts_in_flight: int = 0  # multipart parts being read or sent now (a metrics gauge)
    crc: CrcMode | None = None  # the destination's CRC64NVME support (built from dst_features when None)

    def __post_init__(self) -> None:
        if self.crc is None:
            self.crc = CrcMode(self.dst_features, repr(self.dst))

    @contextlib.asynccontextmanager
    async def part_in_flight(self):
        self.parts_in_flight += 1
        try:
            yield
        finally:
            self.parts_in_flight -= 1

    def part_plan(self, size_bytes: int) -> PartPlan | None:
        """The part plan for an object of this size, or None when a single PUT is used. An object larger than
        the byte budget's capacity now (see TransferWorker._fit_budget) goes in parts: one PUT never holds
        more than the budget."""
        capacity_bytes = self.limits.budget.capacity_bytes
        threshold_bytes = min(self.settings.multipart_threshold_bytes, capacity_bytes)
        if not needs_multipart(size_bytes, threshold_bytes, self.dst_features):
            return None
        return plan_parts(size_bytes, self.dst_features, self.settings.part_size_bytes,
                          auto_part_bytes(capacity_bytes))

    async def upload_opened(self, state: UploadState) -> None:
        """Record an upload (or, with no upload id yet, the intent to create one) where there is a journal."""
        if self.journal is not None:
            await self.journal.upload_opened(state)

    async def upload_closed(self, dst_key: str, upload_id: str) -> None:
        """Forget a completed or aborted upload where there is a journal."""
        if self.journal is not None:
            await self.journal.upload_closed(dst_key, upload_id)

    async def abort(self, dst_key: str, upload_id: str) -> None:
        """Abort a failed upload; if even that fails the journal keeps it for the job's final cleanup."""
        try:
            await self.dst.abort_multipart(dst_key, upload_id)
        except DthError:
            return
        await self.upload_closed(dst_key, upload_id)
