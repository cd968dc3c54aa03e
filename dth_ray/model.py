"""Pure data that crosses layers and actors: object metadata, byte ranges, part plans, shards and results."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """One listed object. `etag` is unquoted; `checksum` is 'kind:value', a provider checksum such as
    'crc64ecma:123' or a version token such as the local store's 'mtime_ns:<ns>-<size>' (only checksums of
    one kind are compared)."""

    key: str
    size: int
    etag: str = ""
    mtime: float = 0.0
    storage_class: str = ""
    checksum: str = ""
    stored: float = 0.0  # when the store last wrote this entry, where `mtime` does not say it (local: ctime)

    @property
    def stored_at(self) -> float:
        """When this version was stored at the store (S3: LastModified), in epoch seconds."""
        return max(self.mtime, self.stored)

    @property
    def etag_is_multipart(self) -> bool:
        return "-" in self.etag


@dataclass(frozen=True, slots=True)
class ObjectHeaders:
    """Object metadata preserved by a copy (standard headers and user metadata; and the modification time,
    where a store can set it: local files)."""

    content_type: str = ""
    content_encoding: str = ""
    content_language: str = ""
    content_disposition: str = ""
    cache_control: str = ""
    expires: str = ""
    user_metadata: tuple[tuple[str, str], ...] = ()
    mtime_ns: int = 0  # nanoseconds since the epoch; 0: unknown (the writer's clock decides)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD or GET tells about an object."""

    meta: ObjectMeta
    headers: ObjectHeaders = ObjectHeaders()


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Half-open byte range [start, end)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class GetResult:
    """Bytes of an object (or of a range of it) and what the response said about the object."""

    data: bytes
    info: ObjectInfo


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a PUT or CompleteMultipartUpload answered."""

    etag: str
    checksum: str = ""


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One uploaded part of a multipart upload."""

    part_number: int
    etag: str
    size: int = 0
    checksum: str = ""  # 'crc64nvme:<hex>' where the upload carries full-object CRC64NVME checksums


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """An open multipart upload at a destination."""

    key: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing, keys in the store's sort order (UTF-8 binary for every backend)."""

    objects: list[ObjectMeta]
    prefixes: list[str] = field(default_factory=list)
    next_token: str = ""


@dataclass(frozen=True, slots=True)
class PartPlan:
    """How an object of `size_bytes` is cut into parts."""

    size_bytes: int
    part_size_bytes: int

    @property
    def part_count(self) -> int:
        if self.size_bytes == 0:
            return 1
        return -(-self.size_bytes // self.part_size_bytes)

    def ranges(self) -> Iterator[tuple[int, ByteRange]]:
        """Yield (part_number, range), part numbers from 1."""
        for index in range(self.part_count):
            start = index * self.part_size_bytes
            yield index + 1, ByteRange(start, min(start + self.part_size_bytes, self.size_bytes))


@dataclass(frozen=True, slots=True)
class UploadState:
    """An open multipart upload as the manifest knows it: the exact destination key, the source version and
    part size it was started for, and the parts already sent (part number -> PartInfo with its MD5 ETag)."""

    dst_key: str
    upload_id: str
    src_etag: str
    size: int
    part_size_bytes: int
    parts: dict[int, PartInfo] = field(default_factory=dict)
    run_id: int = 0


@dataclass(frozen=True, slots=True)
class Shard:
    """A slice of the source key space: keys under `prefix` with start_after < key <= end_at ('' = open).

    With a `delimiter`, the shard covers only the objects directly at that level (not common prefixes).
    `listing`, when set, is the key of the shard's staged inventory rows (dth_ray/inventory/staged.py) in the
    run's staging store: the worker reads its keys from there instead of listing the source.
    """

    shard_id: str
    prefix: str
    start_after: str = ""
    end_at: str = ""
    delimiter: str = ""
    listing: str = ""

    def contains(self, key: str) -> bool:
        return (
            key.startswith(self.prefix)
            and key > self.start_after
            and (not self.end_at or key <= self.end_at)
            and (not self.delimiter or self.delimiter not in key[len(self.prefix):])
        )


@dataclass(frozen=True, slots=True)
class Failure:
    """One object that failed, with its error class and a credential-free message."""

    key: str
    error: str


@dataclass(frozen=True, slots=True)
class Change:
    """One object a dry run would copy or delete, and why (`reason`: the diff's, or not_at_source)."""

    action: str  # copy or delete
    key: str
    size: int
    reason: str

    def to_json(self) -> dict:
        return {"action": self.action, "key": self.key, "size": self.size, "reason": self.reason}


@dataclass(slots=True)
class Tally:
    """Counters a transfer actor accumulates and the driver sums; each object is counted once."""

    listed: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    would_copy: int = 0
    bytes_copied: int = 0
    bytes_listed: int = 0
    would_copy_bytes: int = 0
    would_copy_multipart: int = 0  # of the would-copy objects, those at or above the multipart threshold
    would_copy_multipart_bytes: int = 0
    part_size_bytes: int = 0  # largest part size any multipart copy used
    server_side_copies: int = 0
    spread_parts: int = 0  # parts of large uploads that peer actors sent
    resumed_parts: int = 0  # parts of interrupted uploads reused instead of sent again
    # Of the copied objects, those a redone shard found at the destination, written in this run by a worker
    # that was lost before it could report them (counted copied once, never skipped; see ShardTask).
    recovered: int = 0
    recovered_bytes: int = 0
    # sync.delete: destination objects the diff met (settled keys only) and those with no source object.
    dst_seen: int = 0
    dst_only: int = 0
    dst_only_keys: list[str] = field(default_factory=list)  # capped at max_dst_only_keys; never checkpointed
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    # report_objects: rows written for the settled objects, and the parts holding them ([key, rows], in order);
    # checkpointed with the tally, so a redone shard continues the same list
    report_rows: int = 0
    report_parts: list[list] = field(default_factory=list)
    # dry run: the would-copy and would-delete objects, up to max_changes of each (0 = none); the driver takes them
    # from each result, so they are never merged or checkpointed
    changes: list[Change] = field(default_factory=list)
    max_failures: int = 1000
    max_dst_only_keys: int = 100_000
    max_changes: int = 0

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1

    def fail(self, key: str, error: str) -> None:
        self.failed += 1
        if len(self.failures) < self.max_failures:
            self.failures.append(Failure(key, error))

    def change(self, action: str, key: str, size: int, reason: str) -> None:
        """Note a dry run's change: up to `max_changes` of each action (the count is scanned only once the
        list is that long, i.e. for a sample)."""
        changes = self.changes
        if len(changes) < self.max_changes or sum(c.action == action for c in changes) < self.max_changes:
            changes.append(Change(action, key, size, reason))

    def merge(self, other: Tally) -> None:
        self.listed += other.listed
        self.copied += other.copied
        self.skipped += other.skipped
        self.failed += other.failed
        self.would_copy += other.would_copy
        self.bytes_copied += other.bytes_copied
        self.bytes_listed += other.bytes_listed
        self.would_copy_bytes += other.would_copy_bytes
        self.would_copy_multipart += other.would_copy_multipart
        self.would_copy_multipart_bytes += other.would_copy_multipart_bytes
        self.part_size_bytes = max(self.part_size_bytes, other.part_size_bytes)
        self.server_side_copies += other.server_side_copies
        self.spread_parts += other.spread_parts
        self.resumed_parts += other.resumed_parts
        self.recovered += other.recovered
        self.recovered_bytes += other.recovered_bytes
        self.dst_seen += other.dst_seen
        self.dst_only += other.dst_only
        room = self.max_dst_only_keys - len(self.dst_only_keys)
        if room > 0:
            self.dst_only_keys.extend(other.dst_only_keys[:room])
        for reason, count in other.skipped_reasons.items():
            self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + count
        room = self.max_failures - len(self.failures)
        if room > 0:
            self.failures.extend(other.failures[:room])
        self.report_rows += other.report_rows
        self.report_parts.extend(other.report_parts)

    def to_dict(self, max_failures: int | None = None) -> dict:
        """A JSON-ready copy (failures capped at `max_failures`, the count stays exact), for checkpoints."""
        out = {name: getattr(self, name) for name in _TALLY_COUNTERS}
        out["skipped_reasons"] = dict(self.skipped_reasons)
        out["failures"] = [[f.key, f.error] for f in self.failures[:max_failures]]
        if self.report_parts:
            out["report_parts"] = [list(p) for p in self.report_parts]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Tally:
        tally = cls(**{name: int(data.get(name, 0)) for name in _TALLY_COUNTERS})
        tally.skipped_reasons = {k: int(v) for k, v in data.get("skipped_reasons", {}).items()}
        tally.failures = [Failure(k, e) for k, e in data.get("failures", [])]
        tally.report_parts = [[str(k), int(n)] for k, n in data.get("report_parts", [])]
        return tally


_TALLY_COUNTERS = ("listed", "copied", "skipped", "failed", "would_copy", "bytes_copied", "bytes_listed",
                   "would_copy_bytes", "would_copy_multipart", "would_copy_multipart_bytes", "part_size_bytes",
                   "server_side_copies", "spread_parts", "resumed_parts", "recovered", "recovered_bytes", "dst_seen",
                   "dst_only", "report_rows")


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Run one shard: list both sides from `watermark` on, diff, copy, adding to `base` (its settled tally so
    far). `recount_since` (epoch seconds, 0 = off) is set when the shard is redone after its worker was lost
    or its run was interrupted: an object the diff finds already equal at the destination, stored there at or
    after that time (this run's start), was copied by the lost worker and is counted copied, not skipped.
    `seq` orders attempts, so live progress from a newer attempt replaces an older one's."""

    shard: Shard
    watermark: str = ""
    base: Tally | None = None
    recount_since: float = 0.0
    run_id: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What one shard's listing, diff and copies came to, and on which Ray node."""

    shard_id: str
    tally: Tally
    node_id: str = ""
    error: str = ""  # set when the shard's listing failed; the driver re-runs the shard from `watermark`
    watermark: str = ""  # every key of the shard <= watermark is settled and counted in `tally`
    interrupted: bool = False  # stopped early on request (an interrupt): resume from `watermark`


@dataclass(slots=True)
class VerifyTally:
    """What `verify` found in a shard (key lists capped at `max_keys`, counts exact)."""

    checked: int = 0
    matched: int = 0
    missing: int = 0
    differ: int = 0
    extra: int = 0
    read_objects: int = 0
    read_bytes: int = 0
    checksum_objects: int = 0  # compared by the full-object checksums both stores checked and keep (no read)
    unreadable: int = 0  # at the source only, in a class nothing can read (archived, a local symlink): skipped
    missing_keys: list[str] = field(default_factory=list)
    differ_keys: list[str] = field(default_factory=list)
    extra_keys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    max_keys: int = 1000

    def note(self, kind: str, key: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        keys = getattr(self, f"{kind}_keys")
        if len(keys) < self.max_keys:
            keys.append(key)

    def merge(self, other: VerifyTally) -> None:
        for name in ("checked", "matched", "missing", "differ", "extra", "read_objects", "read_bytes",
                     "checksum_objects", "unreadable"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("missing_keys", "differ_keys", "extra_keys", "errors"):
            mine = getattr(self, name)
            mine.extend(getattr(other, name)[: max(0, self.max_keys - len(mine))])
