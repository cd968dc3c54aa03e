"""Small capability protocols every backend implements, plus the per-provider feature data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dth_ray.model import (
    ByteRange,
    GetResult,
    ListPage,
    ObjectHeaders,
    ObjectInfo,
    PartInfo,
    PutResult,
    UploadInfo,
)

MiB = 1024 * 1024
CRC_CHECKED = "checked"  # StoreFeatures.crc64nvme: the store checks CRC64NVME on writes and keeps it
CRC_DETECT = "detect"  # it may: the first write's answer tells (see engine/crcmode.py)
GiB = 1024 * MiB
TiB = 1024 * GiB


@dataclass(frozen=True)
class StoreFeatures:
    """Provider differences as data: the engine and planner read these, never the backend's type."""

    name: str
    min_part_size_bytes: int = 5 * MiB
    max_part_size_bytes: int = 5 * GiB
    max_parts: int = 10_000
    max_single_put_bytes: int = 5 * GiB
    max_object_size_bytes: int = 5 * TiB
    # A single PUT's ETag is the hex MD5 of the body (S3 without SSE-KMS/SSE-C; not OSS multipart).
    single_put_etag_is_md5: bool = True
    # A multipart ETag is md5(concat(part md5s))-N (S3); OSS uses another scheme.
    multipart_etag_is_md5_of_md5s: bool = True
    server_side_copy: bool = False
    # A PUT whose body does not hash to its Content-MD5 is refused (S3 and OSS APIs; the local store checks it).
    put_checks_content_md5: bool = True
    # Checksums the store reports for whole objects, e.g. ("md5",) or ("crc64ecma",).
    checksum_kinds: tuple[str, ...] = ("md5",)
    # Full-object CRC64NVME (S3, `checksum` setting): CRC_CHECKED: a PUT, an UploadPart and a Complete carrying
    # a wrong one are refused, and HEAD (checksum mode) returns the stored value, trusted as the object's;
    # CRC_DETECT: writes send it beside the MD5 until an answer shows whether the server checks it; "": never.
    # Only where set does the engine pass the Writer's `crc64nvme` arguments and the Reader's `checksums`.
    crc64nvme: str = ""
    # Storage classes that cannot be read without a restore.
    unreadable_storage_classes: tuple[str, ...] = ()
    # What a write may ask for (stores/writeoptions.py; empty: the store has no such setting).
    storage_classes: tuple[str, ...] = ()
    canned_acls: tuple[str, ...] = ()
    sse_modes: tuple[str, ...] = ()


@runtime_checkable
class Lister(Protocol):
    async def list_page(
        self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "", max_keys: int = 1000
    ) -> ListPage:
        """One page of keys under `prefix` (plain string match) after `start_after`, sorted as UTF-8 bytes.

        Raises NotFound (no bucket), PermissionDenied, Transient, Throttled.
        """
        ...


@runtime_checkable
class Reader(Protocol):
    async def head(self, key: str) -> ObjectInfo:
        """Metadata of one object. Raises NotFound. (A store with `crc64nvme` features also takes
        `checksums=True`: ask for the stored checksum, in `meta.checksum`.)"""
        ...

    async def get(self, key: str, byte_range: ByteRange | None = None, if_match: str = "") -> GetResult:
        """The object's bytes (or a range). Raises NotFound, PreconditionFailed when `if_match` fails."""
        ...


@runtime_checkable
class Writer(Protocol):
    async def put(self, key: str, data: bytes, headers: ObjectHeaders, md5: bytes) -> PutResult:
        """Write a whole object; `md5` (raw digest) is sent so the server rejects corrupted bodies. (A store
        with `crc64nvme` features also takes `crc64nvme=<int>`, sent the same way, and `md5=None`.)"""
        ...

    async def create_multipart(self, key: str, headers: ObjectHeaders) -> str:
        """Open a multipart upload and return its upload id. (`crc64nvme=True` where the features have it:
        a FULL_OBJECT CRC64NVME upload.)"""
        ...

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes, md5: bytes) -> str:
        """Upload one part and return its ETag (unquoted). Raises NotFound if the upload is gone. (`md5=None`
        and `crc64nvme=<int>` where the features have it.)"""
        ...

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> PutResult:
        """Assemble the parts (sorted by part number). (`crc64nvme=<int>`, the whole object's, where the
        features have it; each part's in PartInfo.checksum.)"""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload; an upload that is already gone is not an error."""
        ...

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        """Parts uploaded so far. Raises NotFound if the upload is gone."""
        ...

    async def list_uploads(self, prefix: str) -> list[UploadInfo]:
        """Open multipart uploads whose key starts with `prefix`."""
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; a missing object is not an error."""
        ...


@runtime_checkable
class RangeReader(Protocol):
    async def get_into(self, key: str, byte_range: ByteRange | None, out: memoryview, if_match: str = "") -> ObjectInfo:
        """Read exactly `byte_range` into `out` (its length), with no intermediate copy of the body. None: the
        whole object, whose listed size is `len(out)`, read as `get` reads it (with the full-object checksum
        its store keeps, checked where `get` checks it). Raises NotFound, PreconditionFailed when `if_match`
        fails or a whole object is no longer `len(out)` bytes, Transient on a short or long body."""
        ...


@dataclass(frozen=True)
class StreamedBody:
    """A request body that arrives while it is sent: `nbytes` in all, from `chunks` in order. A chunk may be
    written over by its producer once the next one is asked for (the sender holds no reference by then)."""

    nbytes: int
    chunks: AsyncIterator[memoryview]


@runtime_checkable
class StreamWriter(Protocol):
    async def put_streamed(self, key: str, body: StreamedBody, headers: ObjectHeaders, md5: bytes) -> PutResult:
        """Write a whole object from a body that arrives while it is sent; `md5` (the whole body's, known
        beforehand) is sent so the server refuses a body that does not match it. Sent once: any failure
        raises (a Transient for what a new attempt may fix), for the caller to read the body again."""
        ...


@runtime_checkable
class LinkAware(Protocol):
    def link_rtt_s(self) -> float | None:
        """The round-trip time to the store as its connections measured it (0 for a disk on this machine), or
        None while (or where) it is not known."""
        ...


@runtime_checkable
class ServerSideCopier(Protocol):
    async def copy_object(self, src_bucket: str, src_key: str, dst_key: str, if_match: str = "") -> PutResult:
        """Copy within the same service without moving bytes through the client."""
        ...

    async def upload_part_copy(self, src_bucket: str, src_key: str, dst_key: str, upload_id: str, part_number: int,
                               byte_range: ByteRange, if_match: str = "") -> str:
        """One part of a multipart upload copied from a range of another object of the same service; returns
        the part's ETag. Raises PreconditionFailed when `if_match` fails."""
        ...


class Store(Lister, Reader, Writer, Protocol):
    """A full backend: every capability above plus its features and lifecycle."""

    features: StoreFeatures

    async def aclose(self) -> None:
        """Release connections; the store may be used again afterwards (it reconnects lazily)."""
        ...
