"""Part sizing within store limits and the S3 multipart ETag."""

import hashlib

import pytest

from dth_ray.errors import Fatal
from dth_ray.model import ByteRange, GiB, MiB
from dth_ray.plan.parts import PieceCursor, choose_part_size, multipart_etag, needs_multipart, plan_parts
from dth_ray.stores.base import StoreFeatures

TiB = 1024 * GiB
S3 = StoreFeatures(name="s3")
SMALL = StoreFeatures(
    name="tiny", min_part_size_bytes=1 * MiB, max_part_size_bytes=8 * MiB, max_parts=4,
    max_single_put_bytes=2 * MiB, max_object_size_bytes=1 * GiB,
)


def test_preferred_size_for_ordinary_object():
    assert choose_part_size(100 * MiB, S3) == 16 * MiB
    assert choose_part_size(100 * MiB, S3, preferred_bytes=8 * MiB) == 8 * MiB


def test_requested_size_is_clamped_to_store_limits():
    assert choose_part_size(100 * MiB, S3, requested_bytes=1 * MiB) == 5 * MiB
    assert choose_part_size(100 * GiB, S3, requested_bytes=6 * GiB) == 5 * GiB
    assert choose_part_size(100 * MiB, S3, requested_bytes=32 * MiB) == 32 * MiB


def test_zero_byte_object_is_one_part():
    plan = plan_parts(0, S3)
    assert plan.part_count == 1
    assert [(n, r.start, r.end) for n, r in plan.ranges()] == [(1, 0, 0)]


@pytest.mark.parametrize("size_bytes", [160 * GiB, 1 * TiB, 5 * TiB - 1, 5 * TiB])
def test_huge_objects_fit_max_parts(size_bytes):
    part_bytes = choose_part_size(size_bytes, S3)
    plan = plan_parts(size_bytes, S3)
    assert plan.part_size_bytes == part_bytes
    assert plan.part_count <= S3.max_parts
    assert part_bytes % MiB == 0
    assert S3.min_part_size_bytes <= part_bytes <= S3.max_part_size_bytes
    # Grown only as far as needed: one MiB less would need too many parts.
    assert -(-size_bytes // (part_bytes - MiB)) > S3.max_parts


def test_5tib_plan_covers_every_byte_once():
    plan = plan_parts(5 * TiB, S3)
    last_end = 0
    count = 0
    for number, byte_range in plan.ranges():
        assert byte_range.start == last_end
        assert byte_range.length > 0
        last_end = byte_range.end
        count = number
    assert last_end == 5 * TiB
    assert count == plan.part_count <= 10_000


def test_boundary_exactly_max_parts_keeps_preferred_size():
    assert choose_part_size(10_000 * 16 * MiB, S3) == 16 * MiB
    assert choose_part_size(10_000 * 16 * MiB + 1, S3) == 17 * MiB


def test_growth_respects_store_with_small_limits():
    # 4 parts max, 8 MiB max part: 30 MiB needs 8 MiB parts (7.5 rounded up).
    assert choose_part_size(30 * MiB, SMALL) == 8 * MiB
    assert plan_parts(32 * MiB, SMALL).part_count == 4


def test_too_large_object_is_fatal_and_names_size():
    with pytest.raises(Fatal, match=str(5 * TiB + 1)):
        choose_part_size(5 * TiB + 1, S3)
    with pytest.raises(Fatal, match=str(32 * MiB + 1)):
        choose_part_size(32 * MiB + 1, SMALL)  # > max_parts x max_part_size
    capped = StoreFeatures(name="capped", max_object_size_bytes=1 * GiB)
    with pytest.raises(Fatal):
        choose_part_size(1 * GiB + 1, capped)


def test_negative_size_rejected():
    with pytest.raises(ValueError):
        choose_part_size(-1, S3)


def test_multipart_etag_matches_s3_formula():
    parts = [b"a" * (5 * 1024), b"b" * 100]
    digests = [hashlib.md5(p).digest() for p in parts]
    expected = hashlib.md5(digests[0] + digests[1]).hexdigest() + "-2"
    assert multipart_etag(digests) == expected
    # A known value: one part of empty bytes.
    assert multipart_etag([hashlib.md5(b"").digest()]) == "59adb24ef3cdbe0297f05b395827453f-1"


def test_multipart_etag_rejects_bad_input():
    with pytest.raises(ValueError):
        multipart_etag([])
    with pytest.raises(ValueError):
        multipart_etag([b"not-a-digest"])


def test_needs_multipart():
    assert not needs_multipart(0, 64 * MiB, S3)
    assert not needs_multipart(64 * MiB - 1, 64 * MiB, S3)
    assert needs_multipart(64 * MiB, 64 * MiB, S3)
    # Beyond one PUT's limit even when the threshold is higher.
    assert needs_multipart(3 * MiB, 100 * MiB, SMALL)
    assert not needs_multipart(2 * MiB, 100 * MiB, SMALL)


def _drain(cursor: PieceCursor, sizes) -> list[ByteRange]:
    pieces = []
    for size in sizes:
        if (piece := cursor.take(size)) is None:
            break
        pieces.append(piece)
    return pieces


@pytest.mark.parametrize("start,length,piece", [
    (0, 16 * MiB, 4 * MiB), (5, 16 * MiB + 3, 4 * MiB), (0, 100 * MiB, 3 * MiB), (7, 1, 4 * MiB), (0, 9 * MiB, 0),
    (0, 4 * MiB, 4 * MiB), (0, 6 * MiB, 4 * MiB),
])
def test_piece_cursor_covers_every_byte_once(start, length, piece):
    whole = ByteRange(start, start + length)
    cursor = PieceCursor(whole)
    pieces = _drain(cursor, [piece] * 1000)
    assert pieces[0].start == whole.start and pieces[-1].end == whole.end
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False)), "contiguous, no overlap"
    assert cursor.take(piece) is None, "nothing left once the range is out"
    if piece == 0 or length <= piece * 1.5:
        assert pieces == [whole]
    else:
        assert all(p.length == piece for p in pieces[:-1])
        assert piece // 2 < pieces[-1].length < piece * 3 // 2, "a short remainder rides with the last piece"


def test_piece_cursor_sizes_each_piece_when_it_is_taken():
    # A reader learns mid-way that its path is fast: the rest goes in one piece.
    pieces = _drain(PieceCursor(ByteRange(0, 64 * MiB)), [256 * 1024, 256 * 1024, 100 * MiB, 1])
    assert [p.length for p in pieces] == [256 * 1024, 256 * 1024, 64 * MiB - 512 * 1024]
