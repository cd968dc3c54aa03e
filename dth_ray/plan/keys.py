"""Map keys between source and destination prefixes, and collapse overlapping prefix lists."""

from __future__ import annotations

from collections.abc import Iterable


def dest_key(src_key: str, src_prefix: str, dst_prefix: str) -> str:
    """Destination key for `src_key`: dst_prefix + the key with src_prefix removed (plain strings, no '/' added).

    Raises ValueError if `src_key` does not start with `src_prefix`.
    """
    if not src_key.startswith(src_prefix):
        raise ValueError(f"source key {src_key!r} is not under source prefix {src_prefix!r}")
    return dst_prefix + src_key[len(src_prefix):]


def src_key_for(dst_key: str, src_prefix: str, dst_prefix: str) -> str:
    """Source key that `dst_key` was copied from (inverse of dest_key).

    Raises ValueError if `dst_key` does not start with `dst_prefix`.
    """
    if not dst_key.startswith(dst_prefix):
        raise ValueError(f"destination key {dst_key!r} is not under destination prefix {dst_prefix!r}")
    return src_prefix + dst_key[len(dst_prefix):]


def collapse_prefixes(prefixes: Iterable[str]) -> list[str]:
    """Sorted, deduplicated prefixes without any prefix covered by a shorter one ('a/' covers 'a/b/').

    The result never lists a key twice, so one shard per prefix cannot overlap.
    """
    kept: list[str] = []
    for prefix in sorted(set(prefixes)):
        # Keys starting with a given string are contiguous in sorted order, so a covering prefix is
        # always the most recently kept one.
        if kept and prefix.startswith(kept[-1]):
            continue
        kept.append(prefix)
    return kept
