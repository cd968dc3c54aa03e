"""The copy/skip decision per object and the streaming merge-join of source, destination and manifest."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from dth_ray.config import Compare
from dth_ray.errors import Fatal
from dth_ray.keyfilter import KeyFilter
from dth_ray.model import ObjectMeta
from dth_ray.plan.keys import dest_key, src_key_for
from dth_ray.stores.base import StoreFeatures

_T = TypeVar("_T")

COPY = "copy"
SKIP = "skip"
EXTRA = "extra"

# OSS reports single-part MD5 ETags in upper case, S3 in lower case; both are the same digest.
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class Record:
    """What the manifest holds for a SOURCE key we copied: the source ETag/checksum at copy time and the
    destination ETag the write returned."""

    key: str
    src_etag: str
    src_size: int
    dst_etag: str
    run_id: int = 0  # the run that wrote the record


@dataclass(frozen=True, slots=True)
class Decision:
    """One outcome of the diff. `action` is copy, skip, or extra (only at the destination)."""

    action: str
    src: ObjectMeta | None
    dst: ObjectMeta | None
    dst_key: str
    reason: str
    record: Record | None = None  # what the manifest holds for this key (a later copy must update it)


def _checksum_kind(checksum: str) -> str:
    return checksum.split(":", 1)[0] if ":" in checksum else ""


def _single_md5(etag: str, features: StoreFeatures) -> bool:
    return features.single_put_etag_is_md5 and _MD5_HEX.fullmatch(etag) is not None


def decide(
    src: ObjectMeta,
    dst: ObjectMeta | None,
    record: Record | None,
    compare: Compare,
    src_features: StoreFeatures,
    dst_features: StoreFeatures,
) -> tuple[str, str]:
    """(action, reason) for one source object against what the destination and the manifest hold.

    Raises ValueError for an unknown `compare`.
    """
    compare = Compare(compare)
    if src.storage_class and src.storage_class in src_features.unreadable_storage_classes:
        return SKIP, f"unreadable:{src.storage_class}"
    if dst is None:
        return COPY, "new"
    if src.size != dst.size:
        return COPY, "size"
    if compare is Compare.size:
        return SKIP, "same_size"
    if compare is Compare.size_mtime:
        # One second of slack: several stores keep mtime at second precision.
        return (COPY, "newer") if src.mtime > dst.mtime + 1.0 else (SKIP, "same_size_mtime")

    if record is not None and record.src_etag and record.dst_etag and record.dst_etag == dst.etag:
        # The destination still holds what we wrote, so the record tells what source version it came from;
        # this catches same-size overwrites at the source that no ETag comparison across stores could.
        if record.src_etag in (src.etag, src.checksum):
            return SKIP, "unchanged"
        return COPY, "changed_at_source"
    # No usable record, or the destination changed behind our back: compare the two sides directly.

    kind = _checksum_kind(src.checksum)
    if kind and kind == _checksum_kind(dst.checksum):
        if src.checksum.lower() == dst.checksum.lower():
            return SKIP, "same_checksum"
        return COPY, "checksum"

    if src.etag and dst.etag:
        if not src.etag_is_multipart and not dst.etag_is_multipart:
            if _single_md5(src.etag, src_features) and _single_md5(dst.etag, dst_features):
                if src.etag.lower() == dst.etag.lower():
                    return SKIP, "same_etag"
                return COPY, "etag"
        elif (
            src.etag_is_multipart
            and dst.etag_is_multipart
            and src_features.multipart_etag_is_md5_of_md5s
            and dst_features.multipart_etag_is_md5_of_md5s
            and src.etag.lower() == dst.etag.lower()
        ):
            return SKIP, "same_etag"
        # Unequal multipart ETags prove nothing: the same bytes cut into other part sizes differ.

    if compare is Compare.size_etag:
        return SKIP, "same_size_unverifiable"
    return COPY, "unverifiable"


def needs_record(src: ObjectMeta, dst_etag: str, src_features: StoreFeatures, dst_features: StoreFeatures,
                 multipart: bool) -> bool:
    """Whether a copy must be recorded per object for a later diff to detect a changed source: true unless
    both sides carry the same single-part MD5 ETag, which the next listing compares directly."""
    if multipart or src.etag_is_multipart:
        return True
    return not (_single_md5(src.etag, src_features) and _single_md5(dst_etag, dst_features)
                and src.etag.lower() == dst_etag.lower())


def _ascending(items: Iterable[_T], what: str, key_of: Callable[[_T], str]) -> Iterator[_T]:
    """Pass items through, raising Fatal if their keys are not strictly ascending (a merge-join would
    silently pair the wrong objects)."""
    last = None
    for item in items:
        key = key_of(item)
        if last is not None and key <= last:
            raise Fatal(f"{what} listing is not sorted: {key!r} came after {last!r}")
        last = key
        yield item


class _RecordCursor:
    """Forward-only lookup into records sorted by source key; holds one record at a time."""

    __slots__ = ("_it", "_current")

    def __init__(self, records: Iterable[Record]):
        self._it = _ascending(records, "manifest", lambda r: r.key)
        self._current = next(self._it, None)

    def get(self, key: str) -> Record | None:
        while self._current is not None and self._current.key < key:
            self._current = next(self._it, None)
        if self._current is not None and self._current.key == key:
            return self._current
        return None


def merge_join(
    src: Iterable[ObjectMeta],
    dst: Iterable[ObjectMeta],
    records: Iterable[Record],
    *,
    src_prefix: str,
    dst_prefix: str,
    compare: Compare,
    src_features: StoreFeatures,
    dst_features: StoreFeatures,
    key_filter: KeyFilter | None = None,
) -> Iterator[Decision]:
    """Decisions in source-key order for the union of both listings (rclone's march), streaming.

    All inputs must be sorted ascending: `src` by source key, `dst` by destination key, `records` by source
    key. Memory is O(1): one item of each input at a time. Keys the filter rejects yield nothing; destination
    keys outside `dst_prefix` are ignored; destination-only keys yield action "extra".
    Raises Fatal if an input is not strictly ascending; ValueError if a source key is outside `src_prefix`.
    """
    keep = key_filter.accepts if key_filter is not None and not key_filter.is_noop else None

    def sources() -> Iterator[ObjectMeta]:
        for meta in _ascending(src, "source", lambda m: m.key):
            if not meta.key.startswith(src_prefix):
                raise ValueError(f"source key {meta.key!r} is not under source prefix {src_prefix!r}")
            if keep is None or keep(meta.key[len(src_prefix):]):
                yield meta

    def destinations() -> Iterator[tuple[str, ObjectMeta]]:
        # Swapping one common prefix for another keeps the order, so mapped keys stay sorted.
        for meta in _ascending(dst, "destination", lambda m: m.key):
            if not meta.key.startswith(dst_prefix):
                continue
            key = src_key_for(meta.key, src_prefix, dst_prefix)
            if keep is None or keep(key[len(src_prefix):]):
                yield key, meta

    cursor = _RecordCursor(records)
    src_it, dst_it = sources(), destinations()
    s = next(src_it, None)
    d = next(dst_it, None)
    while s is not None or d is not None:
        if d is None or (s is not None and s.key < d[0]):
            record = cursor.get(s.key)
            action, reason = decide(s, None, record, compare, src_features, dst_features)
            yield Decision(action, s, None, dest_key(s.key, src_prefix, dst_prefix), reason, record)
            s = next(src_it, None)
        elif s is None or d[0] < s.key:
            yield Decision(EXTRA, None, d[1], d[1].key, EXTRA)
            d = next(dst_it, None)
        else:
            record = cursor.get(s.key)
            action, reason = decide(s, d[1], record, compare, src_features, dst_features)
            yield Decision(action, s, d[1], d[1].key, reason, record)
            s = next(src_it, None)
            d = next(dst_it, None)


def summarize(decisions: Iterable[Decision]) -> dict[str, int]:
    """Count decisions per action (copy, skip, extra always present), e.g. for a dry run."""
    counts = Counter({COPY: 0, SKIP: 0, EXTRA: 0})
    counts.update(decision.action for decision in decisions)
    return dict(counts)
