"""Cut the source key space into non-overlapping shards that together cover every key."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from dth_ray.model import Shard
from dth_ray.plan.keys import collapse_prefixes


def shard_id(prefix: str, start_after: str = "", end_at: str = "", delimiter: str = "") -> str:
    """Stable id of a shard's extent: the same slice of key space gets the same id in every run (resume)."""
    # NUL cannot appear in an S3 key, so the join is unambiguous.
    extent = "\0".join((prefix, start_after, end_at, delimiter)).encode("utf-8", "surrogatepass")
    return "s-" + hashlib.sha256(extent).hexdigest()[:16]


def _make(prefix: str, start_after: str = "", end_at: str = "", delimiter: str = "") -> Shard:
    return Shard(shard_id(prefix, start_after, end_at, delimiter), prefix, start_after, end_at, delimiter)


def shard_covers(shard: Shard, key: str) -> bool:
    """Whether `key` belongs to `shard`, honouring the delimiter (only keys directly at that level)."""
    if not shard.contains(key):
        return False
    return not shard.delimiter or shard.delimiter not in key[len(shard.prefix):]


def shards_from_level(prefix: str, common_prefixes: Sequence[str], has_objects_at_level: bool) -> list[Shard]:
    """Shards for one '/'-delimited listing level: one per common prefix, plus one delimiter shard for the
    objects directly under `prefix` when there are any. Sorted by prefix.

    Raises ValueError if a common prefix is not a '/'-terminated child of `prefix`.
    """
    shards = []
    for child in sorted(set(common_prefixes)):
        if not child.startswith(prefix) or len(child) <= len(prefix) or not child.endswith("/"):
            raise ValueError(f"common prefix {child!r} is not a '/'-terminated child of {prefix!r}")
        shards.append(_make(child))
    if has_objects_at_level:
        shards.append(_make(prefix, delimiter="/"))
    return shards


def split_by_boundaries(prefix: str, boundaries: Sequence[str]) -> list[Shard]:
    """Split the keys under `prefix` at sorted boundary keys b1 < … < bn into ranges
    ( ..b1], (b1..b2], …, (bn.. ), each listable with StartAfter; no boundaries gives one shard.

    Raises ValueError if a boundary is empty or not under `prefix`.
    """
    edges = sorted(set(boundaries))
    for edge in edges:
        if not edge or not edge.startswith(prefix):
            raise ValueError(f"boundary {edge!r} is not a key under {prefix!r}")
    starts = ["", *edges]
    ends = [*edges, ""]
    return [_make(prefix, start_after, end_at) for start_after, end_at in zip(starts, ends, strict=True)]


def split_level_by_bytes(prefix: str, objects: Sequence[tuple[str, int]], parts: int) -> list[Shard]:
    """The objects directly at one '/' level (key, size; sorted by key), cut into at most `parts` delimiter
    shards of about equal bytes, so a few large objects in one folder still keep several actors busy.

    Raises ValueError if a key is not directly under `prefix`.
    """
    for key, _ in objects:
        if not key.startswith(prefix) or "/" in key[len(prefix):]:
            raise ValueError(f"key {key!r} is not directly under {prefix!r}")
    total = sum(size for _, size in objects) or 1
    target = total / max(1, parts)
    edges: list[str] = []
    running = 0
    previous = ""
    for index, (key, size) in enumerate(objects):
        # Cut before the object whose middle crosses the next multiple of the target.
        if index and running + size / 2 > target * (len(edges) + 1):
            edges.append(previous)
        running += size
        previous = key
    starts = ["", *edges]
    ends = [*edges, ""]
    return [_make(prefix, start_after, end_at, "/") for start_after, end_at in zip(starts, ends, strict=True)]


def shards_for_prefixes(prefixes: Sequence[str]) -> list[Shard]:
    """One shard per prefix of a prefix list; covered and duplicate prefixes are dropped so none overlap."""
    return [_make(prefix) for prefix in collapse_prefixes(prefixes)]


def order_largest_first(shards_with_bytes: Sequence[tuple[Shard, int]]) -> list[Shard]:
    """Shards by bytes descending (ties keep their order), so the longest work starts first."""
    return [shard for shard, _ in sorted(shards_with_bytes, key=lambda pair: -pair[1])]
