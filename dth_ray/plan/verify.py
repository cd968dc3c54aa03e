"""What `verify` concludes about one object from listings and the manifest, before reading any byte (pure)."""

from __future__ import annotations

from dth_ray.model import ObjectMeta
from dth_ray.plan.diff import Record, _checksum_kind, _single_md5
from dth_ray.stores.base import StoreFeatures

MATCH = "match"
DIFFER = "differ"
READ = "read"  # listings cannot tell: read both sides and compare a common checksum


def classify(src: ObjectMeta, dst: ObjectMeta, record: Record | None, full: bool,
             src_features: StoreFeatures, dst_features: StoreFeatures) -> tuple[str, str]:
    """(verdict, how) for an object present on both sides. `full` reads every object whose size matches."""
    if src.size != dst.size:
        return DIFFER, "size"
    if full:
        return READ, "full"
    # The record ties the source version we copied to the destination ETag our write produced: a change on
    # either side since then shows as a mismatch, even a same-size overwrite.
    if (record is not None and record.src_etag and record.dst_etag and record.dst_etag == dst.etag
            and record.src_etag in (src.etag, src.checksum)):
        return MATCH, "recorded"
    kind = _checksum_kind(src.checksum)
    # A local file's mtime token says when, not what: good enough for sync's quick check, not for verify.
    if kind and kind != "mtime_ns" and kind == _checksum_kind(dst.checksum):
        return (MATCH, "checksum") if src.checksum.lower() == dst.checksum.lower() else (DIFFER, "checksum")
    if _single_md5(src.etag, src_features) and _single_md5(dst.etag, dst_features):
        return (MATCH, "etag") if src.etag.lower() == dst.etag.lower() else (DIFFER, "etag")
    return READ, "unverifiable_etags"
