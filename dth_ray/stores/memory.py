"""A process-local, in-memory S3 look-alike implementing every store protocol, for tests and benchmarks.

Not for users (no conf/ preset): the bytes live in this process only. A store pickles as its config, so a
clone in another process (a Ray actor) sees that process's own data. All stores of
`StoreConfig(type=memory, bucket=NAME)` in one process share bucket NAME, created on first use (no
NoSuchBucket); other fields are ignored. All buckets form one service: copy_object and upload_part_copy
read any bucket by name.

As on S3 (a refusal raises the class S3Store maps that S3 code to, with the code):
- keys sort by code point (= UTF-8 bytes); a page holds at most 1000 entries; `next_token` is its last entry.
- ETags: single PUT MD5 of the body; multipart md5(part md5s)-N; CopyObject MD5 of the bytes (one part).
- a body not matching its `md5` (when given): IntegrityError (BadDigest); an unknown upload: NotFound.
- CRC64NVME as S3 keeps it: every object has one; with `checksum=crc64nvme` the store's features say it checks
  them (a PUT, part or Complete whose `crc64nvme` is wrong: BadDigest), `head(checksums=True)` and a whole GET
  return it, and uploads opened with `crc64nvme=True` list their parts' CRCs.
- Complete with an unknown part or ETag (InvalidPart), repeated or no parts, or a part other than the last
  below 5 MiB (EntityTooSmall): Fatal, and the upload stays open.
- If-Match against the current ETag: PreconditionFailed. A range starting at or past the end: Fatal
  (InvalidRange); ending past it: Transient on a GET (S3Store's short body), Fatal on UploadPartCopy.
- Content-Type defaults to binary/octet-stream, metadata names are lower-cased, `mtime_ns` is dropped.
- `ObjectMeta.mtime` is the bucket's clock at the write, truncated to whole seconds.

Test hooks per bucket: `MemoryStore.reset(NAME)` (`reset()`: all) forgets objects, uploads, faults, clock;
`MemoryStore.set_clock(NAME, clock)` (default time.time); `MemoryStore.faults(NAME)` (see faults.Faults).
One lock guards all state, held for dict and list updates only (never across an await, never while hashing),
so stores on several threads, each with its own event loop, share buckets safely.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from dth_ray.checksums import crc64nvme as crc64nvme_of
from dth_ray.checksums import crc64nvme_checksum, crc64nvme_value
from dth_ray.config import ChecksumMode, StoreConfig
from dth_ray.errors import (
    ConfigError,
    DthError,
    Fatal,
    IntegrityError,
    NotFound,
    PreconditionFailed,
    Transient,
)
from dth_ray.model import (
    ByteRange,
    GetResult,
    ListPage,
    ObjectHeaders,
    ObjectInfo,
    ObjectMeta,
    PartInfo,
    PutResult,
    UploadInfo,
)
from dth_ray.stores.base import CRC_CHECKED, StoreFeatures
from dth_ray.stores.faults import Faults

_MAX_KEYS = 1000
_MAX_PART_NUMBER = 10_000
_CODES: dict[str, type[DthError]] = {
    "NoSuchKey": NotFound, "NoSuchUpload": NotFound, "PreconditionFailed": PreconditionFailed,
    "BadDigest": IntegrityError, "EntityTooSmall": Fatal, "InvalidPart": Fatal, "InvalidPartOrder": Fatal,
    "MalformedXML": Fatal, "InvalidRange": Fatal, "InvalidArgument": Fatal,
}


def _map_error(code: str, subject: str) -> DthError:
    """The error S3Store raises for the S3 error `code`, carrying that code."""
    return _CODES[code](f"memory {subject!r}: {code}", code)


@dataclass(frozen=True, slots=True)
class _Object:
    data: bytes
    info: ObjectInfo  # as HEAD answers it
    crc: int = 0  # its CRC64NVME


@dataclass(slots=True)
class _Upload:
    key: str
    headers: ObjectHeaders
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # part number -> (bytes, md5 hex)
    crc: bool = False  # a FULL_OBJECT CRC64NVME upload


@dataclass(slots=True)
class _Bucket:
    objects: dict[str, _Object] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # sorted, for listings
    uploads: dict[str, _Upload] = field(default_factory=dict)  # in creation order
    faults: Faults = field(default_factory=Faults)
    clock: Callable[[], float] = time.time


_LOCK = threading.Lock()
_BUCKETS: dict[str, _Bucket] = {}


def _bucket(name: str) -> _Bucket:
    """The bucket `name`, created on first use. The caller holds _LOCK."""
    if name not in _BUCKETS:
        _BUCKETS[name] = _Bucket()
    return _BUCKETS[name]


def _md5_checked(subject: str, data: bytes, md5: bytes) -> str:
    """The hex MD5 of `data`. Raises IntegrityError (BadDigest) when `md5` is given and differs."""
    digest = hashlib.md5(data).digest()
    if md5 and md5 != digest:
        raise _map_error("BadDigest", subject)
    return digest.hex()


def _crc_checked(subject: str, data: bytes, crc: int | None) -> int:
    """The CRC64NVME of `data`. Raises IntegrityError (BadDigest) when `crc` is given and differs."""
    value = crc64nvme_of(data)
    if crc is not None and crc != value:
        raise _map_error("BadDigest", subject)
    return value


def _range_view(key: str, data: bytes, byte_range: ByteRange, expected: int) -> memoryview:
    """The bytes of `byte_range`, no copy. Raises Fatal (InvalidRange) for an empty range or one starting
    at or past the end; Transient when they are not `expected` bytes (S3Store's short or long body)."""
    if byte_range.start < 0 or byte_range.length <= 0 or byte_range.start >= len(data):
        raise _map_error("InvalidRange", key)
    view = memoryview(data)[byte_range.start:byte_range.end]
    if len(view) != expected:
        raise Transient(f"memory {key!r}: {len(view)} bytes in the range, expected {expected}")
    return view


def _end_of_prefix(keys: list[str], start: int, prefix: str) -> int:
    """Index of the first key from `start` on that does not start with `prefix`."""
    last = ord(prefix[-1])
    if last < 0x10FFFF:  # keys starting with `prefix` sort before `prefix` with its last char bumped
        return bisect.bisect_left(keys, prefix[:-1] + chr(last + 1), start)
    while start < len(keys) and keys[start].startswith(prefix):
        start += 1
    return start


class MemoryStore:
    """One bucket of the process-wide in-memory service (see the module docstring)."""

    def __init__(self, cfg: StoreConfig):
        if not cfg.bucket:
            raise ConfigError("a memory store needs a bucket name (its namespace)")
        self._cfg = cfg
        self._name = cfg.bucket
        checked = ChecksumMode(getattr(cfg, "checksum", ChecksumMode.auto)) is ChecksumMode.crc64nvme
        self.features = replace(FEATURES, crc64nvme=CRC_CHECKED) if checked else FEATURES

    def __reduce__(self):
        return (MemoryStore, (self._cfg,))

    def __repr__(self) -> str:
        return f"MemoryStore(bucket={self._name!r})"

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- test hooks -----------------------------------------------------------------------------------------

    @staticmethod
    def faults(bucket: str) -> Faults:
        """The fault rules and call counts of `bucket` (fetch them again after a reset)."""
        with _LOCK:
            return _bucket(bucket).faults

    @staticmethod
    def set_clock(bucket: str, clock: Callable[[], float]) -> None:
        """Give `bucket` a clock (epoch seconds) for the LastModified time of later writes."""
        with _LOCK:
            _bucket(bucket).clock = clock

    @staticmethod
    def reset(bucket: str | None = None) -> None:
        """Forget `bucket` (every bucket when None): its objects, uploads, faults and clock."""
        with _LOCK:
            if bucket is None:
                _BUCKETS.clear()
            else:
                _BUCKETS.pop(bucket, None)

    # -- plumbing -------------------------------------------------------------------------------------------

    async def _enter(self, op: str, key: str) -> None:
        """Count the call and apply the bucket's fault rules: sleep, then maybe raise."""
        with _LOCK:
            faults = _bucket(self._name).faults
        delay_s, error = faults.take(op, key)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if error is not None:
            raise error

    @staticmethod
    def _object(bucket: str, key: str, if_match: str = "") -> _Object:
        """The object `key` of `bucket`. Raises NotFound, PreconditionFailed."""
        with _LOCK:
            obj = _bucket(bucket).objects.get(key)
        if obj is None:
            raise _map_error("NoSuchKey", key)
        if if_match and if_match.strip('"').lower() != obj.info.meta.etag:
            raise _map_error("PreconditionFailed", key)
        return obj

    def _publish(self, key: str, data: bytes, etag: str, headers: ObjectHeaders) -> None:
        """Store `key` (headers as S3 answers them later: see the module docstring)."""
        headers = replace(headers, content_type=headers.content_type or "binary/octet-stream", mtime_ns=0,
                          user_metadata=tuple(sorted((k.lower(), v) for k, v in headers.user_metadata)))
        crc = crc64nvme_of(data)
        with _LOCK:
            bucket = _bucket(self._name)
            meta = ObjectMeta(key=key, size=len(data), etag=etag, mtime=float(int(bucket.clock())))
            if key not in bucket.objects:
                bisect.insort(bucket.keys, key)
            bucket.objects[key] = _Object(data, ObjectInfo(meta, headers), crc)

    def _stage(self, key: str, upload_id: str, part_number: int, data: bytes, etag: str) -> None:
        """Record a part of an open upload. Raises NotFound (NoSuchUpload), Fatal (bad part number)."""
        if not 1 <= part_number <= _MAX_PART_NUMBER:
            raise _map_error("InvalidArgument", f"{key} part {part_number}")
        with _LOCK:
            self._upload(key, upload_id).parts[part_number] = (data, etag)

    def _upload(self, key: str, upload_id: str) -> _Upload:
        """The open upload `upload_id` of `key`. The caller holds _LOCK. Raises NotFound (NoSuchUpload)."""
        upload = _bucket(self._name).uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise _map_error("NoSuchUpload", f"{key} upload {upload_id}")
        return upload

    # -- Lister ---------------------------------------------------------------------------------------------

    async def list_page(
        self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "", max_keys: int = 1000
    ) -> ListPage:
        """Up to min(max_keys, 1000) keys and common prefixes under `prefix` after max(start_after, token)."""
        await self._enter("list_page", prefix)
        after, limit = max(start_after, token), min(max_keys, _MAX_KEYS)
        objects: list[ObjectMeta] = []
        prefixes: list[str] = []
        more, last = False, ""
        with _LOCK:
            bucket = _bucket(self._name)
            keys = bucket.keys
            index = max(bisect.bisect_right(keys, after), bisect.bisect_left(keys, prefix))
            while index < len(keys) and keys[index].startswith(prefix):
                key = keys[index]
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                common = key[: cut + len(delimiter)] if cut >= 0 else ""
                if common and token and common <= token:  # rolled up on an earlier page
                    index = _end_of_prefix(keys, index, common)
                    continue
                if len(objects) + len(prefixes) >= limit:
                    more = True
                    break
                if common:
                    prefixes.append(common)
                    index = _end_of_prefix(keys, index, common)
                else:
                    objects.append(bucket.objects[key].info.meta)
                    index += 1
                last = common or key
        return ListPage(objects=objects, prefixes=prefixes, next_token=last if more else "")

    # -- Reader ---------------------------------------------------------------------------------------------

    async def head(self, key: str, *, checksums: bool = False) -> ObjectInfo:
        await self._enter("head", key)
        obj = self._object(self._name, key)
        return self._with_crc(obj) if checksums else obj.info

    @staticmethod
    def _with_crc(obj: _Object) -> ObjectInfo:
        return replace(obj.info, meta=replace(obj.info.meta, checksum=crc64nvme_checksum(obj.crc)))

    async def get(self, key: str, byte_range: ByteRange | None = None, if_match: str = "") -> GetResult:
        """Raises NotFound, PreconditionFailed, Fatal (InvalidRange), Transient (a range past the end)."""
        await self._enter("get", key)
        obj = self._object(self._name, key, if_match)
        if byte_range is None:
            return GetResult(obj.data, self._with_crc(obj) if self.features.crc64nvme else obj.info)
        return GetResult(bytes(_range_view(key, obj.data, byte_range, byte_range.length)), obj.info)

    # -- RangeReader ----------------------------------------------------------------------------------------

    async def get_into(self, key: str, byte_range: ByteRange | None, out: memoryview, if_match: str = "") -> ObjectInfo:
        """Raises like `get`, Transient when the range and `out` differ in length, PreconditionFailed when a
        whole object does. A whole object's read counts (and meets faults) as "get", as S3 sees one GET."""
        if byte_range is None:
            await self._enter("get", key)
            obj = self._object(self._name, key, if_match)
            if len(obj.data) != len(out):
                raise PreconditionFailed(f"source size changed since listing ({len(obj.data)} bytes, not {len(out)})")
            out[:] = obj.data
            return self._with_crc(obj) if self.features.crc64nvme else obj.info
        await self._enter("get_into", key)
        obj = self._object(self._name, key, if_match)
        out[:] = _range_view(key, obj.data, byte_range, len(out))
        return obj.info

    # -- Writer ---------------------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, headers: ObjectHeaders, md5: bytes | None, *,
                  crc64nvme: int | None = None) -> PutResult:
        """Raises IntegrityError (BadDigest)."""
        await self._enter("put", key)
        body = bytes(data)  # the caller may reuse its buffer
        etag = _md5_checked(key, body, md5)
        crc = _crc_checked(key, body, crc64nvme)
        self._publish(key, body, etag, headers)
        return PutResult(etag=etag, checksum=crc64nvme_checksum(crc) if crc64nvme is not None else "")

    async def create_multipart(self, key: str, headers: ObjectHeaders, *, crc64nvme: bool = False) -> str:
        await self._enter("create_multipart", key)
        upload_id = uuid.uuid4().hex
        with _LOCK:
            _bucket(self._name).uploads[upload_id] = _Upload(key, headers, crc=crc64nvme)
        return upload_id

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes, md5: bytes | None, *,
                          crc64nvme: int | None = None) -> str:
        """Stage (or replace) a part. Raises NotFound, IntegrityError (BadDigest), Fatal (bad part number)."""
        await self._enter("upload_part", key)
        body = bytes(data)
        etag = _md5_checked(f"{key} part {part_number}", body, md5)
        _crc_checked(f"{key} part {part_number}", body, crc64nvme)
        self._stage(key, upload_id, part_number, body, etag)
        return etag

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo], *,
                                 crc64nvme: int | None = None) -> PutResult:
        """Raises NotFound, Fatal (InvalidPart, EntityTooSmall, no or repeated parts), IntegrityError
        (BadDigest: not the `crc64nvme` of the parts assembled; the upload stays open)."""
        await self._enter("complete_multipart", key)
        ordered = sorted(parts, key=lambda p: p.part_number)
        with _LOCK:
            upload = self._upload(key, upload_id)
            staged = self._chosen_parts(key, upload, ordered)
        if any(p.checksum and crc64nvme_value(p.checksum) != crc64nvme_of(data) for p, (data, _) in zip(
                ordered, staged, strict=True)):
            raise _map_error("InvalidPart", key)
        body = b"".join(data for data, _ in staged)
        crc = _crc_checked(key, body, crc64nvme)
        with _LOCK:
            if _bucket(self._name).uploads.pop(upload_id, None) is None:  # claimed: a racing Complete finds none
                raise _map_error("NoSuchUpload", f"{key} upload {upload_id}")
        md5s = b"".join(bytes.fromhex(etag) for _, etag in staged)
        etag = f"{hashlib.md5(md5s).hexdigest()}-{len(staged)}"
        self._publish(key, body, etag, upload.headers)
        return PutResult(etag=etag, checksum=crc64nvme_checksum(crc) if upload.crc else "")

    @staticmethod
    def _chosen_parts(key: str, upload: _Upload, ordered: Sequence[PartInfo]) -> list[tuple[bytes, str]]:
        """The staged (bytes, md5 hex) of each part named, checked as S3 checks a Complete. Raises Fatal."""
        numbers = [p.part_number for p in ordered]
        if not numbers or len(set(numbers)) != len(numbers):
            raise _map_error("InvalidPartOrder" if numbers else "MalformedXML", key)
        staged = []
        for part in ordered:
            found = upload.parts.get(part.part_number)
            if found is None or found[1] != part.etag.strip('"').lower():
                raise _map_error("InvalidPart", f"{key} part {part.part_number}")
            staged.append(found)
        if any(len(data) < FEATURES.min_part_size_bytes for data, _ in staged[:-1]):
            raise _map_error("EntityTooSmall", key)
        return staged

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._enter("abort_multipart", key)
        with _LOCK:
            uploads = _bucket(self._name).uploads
            if upload_id in uploads and uploads[upload_id].key == key:
                del uploads[upload_id]

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        await self._enter("list_parts", key)
        with _LOCK:
            upload = self._upload(key, upload_id)
            parts = sorted(upload.parts.items())
        return [PartInfo(number, etag, len(data), crc64nvme_checksum(crc64nvme_of(data)) if upload.crc else "")
                for number, (data, etag) in parts]

    async def list_uploads(self, prefix: str) -> list[UploadInfo]:
        """Open uploads under `prefix`, by key, then by creation."""
        await self._enter("list_uploads", prefix)
        with _LOCK:
            uploads = [UploadInfo(u.key, upload_id) for upload_id, u in _bucket(self._name).uploads.items()
                       if u.key.startswith(prefix)]
        return sorted(uploads, key=lambda u: u.key)

    async def delete(self, key: str) -> None:
        await self._enter("delete", key)
        with _LOCK:
            bucket = _bucket(self._name)
            if bucket.objects.pop(key, None) is not None:
                del bucket.keys[bisect.bisect_left(bucket.keys, key)]

    # -- ServerSideCopier -----------------------------------------------------------------------------------

    async def copy_object(self, src_bucket: str, src_key: str, dst_key: str, if_match: str = "") -> PutResult:
        """Copy an object of any memory bucket here, with its headers. Raises NotFound, PreconditionFailed."""
        await self._enter("copy_object", dst_key)
        obj = self._object(src_bucket, src_key, if_match)
        etag = obj.info.meta.etag  # a copy is written as one part: a multipart ETag does not carry over
        etag = etag if "-" not in etag else hashlib.md5(obj.data).hexdigest()
        self._publish(dst_key, obj.data, etag, obj.info.headers)
        return PutResult(etag=etag)

    async def upload_part_copy(self, src_bucket: str, src_key: str, dst_key: str, upload_id: str, part_number: int,
                               byte_range: ByteRange, if_match: str = "") -> str:
        """Stage a range of an object of any memory bucket as a part. Raises NotFound, PreconditionFailed,
        Fatal (a range not inside the object, a bad part number)."""
        await self._enter("upload_part_copy", dst_key)
        obj = self._object(src_bucket, src_key, if_match)
        if byte_range.end > len(obj.data):  # S3 refuses it (a GET would return a short body)
            raise _map_error("InvalidRange", src_key)
        body = bytes(_range_view(src_key, obj.data, byte_range, byte_range.length))
        etag = hashlib.md5(body).hexdigest()
        self._stage(dst_key, upload_id, part_number, body, etag)
        return etag


# S3's limits and ETag rules are the StoreFeatures defaults.
FEATURES = StoreFeatures(name="memory", server_side_copy=True)
