"""Part sizing for multipart uploads within a store's limits, and the S3 multipart ETag formula."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from dth_ray.errors import Fatal
from dth_ray.model import ByteRange, MiB, PartPlan
from dth_ray.stores.base import StoreFeatures


def choose_part_size(
    size_bytes: int,
    features: StoreFeatures,
    requested_bytes: int | None = None,
    preferred_bytes: int = 16 * MiB,
) -> int:
    """Part size for an object of `size_bytes` (like s3transfer's ChunksizeAdjuster).

    Starts from `requested_bytes` or `preferred_bytes`, clamps to the store's part-size limits, then grows
    (to a whole MiB) until the object fits in `features.max_parts` parts.
    Raises ValueError for a negative size; Fatal if the object is larger than the store accepts.
    """
    if size_bytes < 0:
        raise ValueError(f"object size {size_bytes} is negative")
    limit_bytes = min(features.max_object_size_bytes, features.max_parts * features.max_part_size_bytes)
    if size_bytes > limit_bytes:
        raise Fatal(
            f"object of {size_bytes} bytes exceeds {features.name}'s limit of {limit_bytes} bytes"
        )
    part_bytes = requested_bytes if requested_bytes is not None else preferred_bytes
    part_bytes = max(features.min_part_size_bytes, min(part_bytes, features.max_part_size_bytes))
    if -(-size_bytes // part_bytes) > features.max_parts:
        smallest_bytes = -(-size_bytes // features.max_parts)
        # Whole MiB parts keep part boundaries aligned with typical read buffers; never beyond the store's max,
        # which the limit check above guarantees still fits.
        part_bytes = min(-(-smallest_bytes // MiB) * MiB, features.max_part_size_bytes)
        part_bytes = max(part_bytes, smallest_bytes)
    return part_bytes


def plan_parts(
    size_bytes: int,
    features: StoreFeatures,
    requested_bytes: int | None = None,
    preferred_bytes: int = 16 * MiB,
) -> PartPlan:
    """How to cut an object into parts. Raises as choose_part_size."""
    return PartPlan(size_bytes, choose_part_size(size_bytes, features, requested_bytes, preferred_bytes))


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """S3's multipart ETag: hex(md5(concat(raw part MD5 digests)))-N.

    Raises ValueError if there are no parts or a digest is not 16 raw bytes.
    """
    if not part_md5s:
        raise ValueError("a multipart ETag needs at least one part")
    for digest in part_md5s:
        if len(digest) != 16:
            raise ValueError(f"part MD5 must be 16 raw bytes, got {len(digest)}")
    return f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"


def needs_multipart(size_bytes: int, threshold_bytes: int, features: StoreFeatures) -> bool:
    """Whether an object goes up in parts: at the threshold or beyond what one PUT may carry."""
    return size_bytes >= threshold_bytes or size_bytes > features.max_single_put_bytes


class PieceCursor:
    """Hands out a byte range as consecutive pieces, each sized when it is taken (a reader's piece size may
    change between takes); a remainder under half a piece goes with the piece before it."""

    def __init__(self, byte_range: ByteRange):
        self._end = byte_range.end
        self._next = byte_range.start

    def take(self, piece_bytes: int) -> ByteRange | None:
        """The next piece of about `piece_bytes` (the rest of the range when 0), or None when all is out."""
        if self._next >= self._end:
            return None
        end = self._next + piece_bytes if piece_bytes > 0 else self._end
        if end + piece_bytes // 2 >= self._end:  # a sliver would cost a round trip for a few bytes
            end = self._end
        piece, self._next = ByteRange(self._next, end), end
        return piece
