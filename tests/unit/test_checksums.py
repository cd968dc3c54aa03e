"""dth_ray's CRC-64/XZ (fastcrc) equals crcmod's and oss2's bit for bit, one-shot and fed in pieces."""

from __future__ import annotations

import random

import crcmod
import oss2.utils
import pytest

from dth_ray import checksums
from dth_ray.checksums import crc64ecma, crc64ecma_value, new_crc64ecma

# the parameters dth_ray used with crcmod 1.7 until fastcrc replaced it (and oss2's Crc64 still uses)
CRCMOD = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)


def test_catalogue_check_values():
    assert crc64ecma(b"123456789") == 0x995DC9BBDF1939FA  # RevEng CRC-64/XZ check value
    assert crc64ecma(b"") == 0 and new_crc64ecma().value == 0
    assert crc64ecma(b"hello") == 11177612005948864433  # what oss2's own Crc64 gives


# around fastcrc's own thresholds (a table below 8 bytes, the GIL released from 16 KiB) and part-sized buffers
SIZES = [0, 1, 7, 8, 15, 16, 17, 255, 4096, 16 * 1024 - 1, 16 * 1024 + 3, 1 << 20, 5 * (1 << 20) + 1]


@pytest.mark.parametrize("size", SIZES)
def test_equals_crcmod_and_oss2_on_random_data(size):
    data = random.Random(size).randbytes(size)
    reference = oss2.utils.Crc64()
    reference.update(data)
    assert crc64ecma(data) == CRCMOD(data) == reference.crc
    assert crc64ecma(bytearray(data)) == crc64ecma(memoryview(data)) == CRCMOD(data)


def test_running_crc_fed_in_pieces_equals_the_one_shot_crc():
    rng = random.Random(7)
    data = rng.randbytes(3 * (1 << 20) + 12345)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
        running = new_crc64ecma()
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            running.update(memoryview(data)[start:end])
        running.update(b"")
        assert running.value == crc64ecma(data) == CRCMOD(data)
    assert isinstance(new_crc64ecma(), checksums.Crc64Ecma)


def test_checksum_strings():
    assert crc64ecma_value("crc64ecma:11177612005948864433") == 11177612005948864433
    assert crc64ecma_value("md5:abc") is None and crc64ecma_value("crc64ecma:x") is None
