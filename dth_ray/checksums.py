"""Whole-content checksums that providers publish, shared by the stores (to check full reads and to send what a
destination checks) and the engine (to check an object read in ranges against the source's own value)."""

from __future__ import annotations

import base64
import binascii

# The CRC libraries are imported on first use: a run that computes no CRC (most copies between S3-compatible
# stores send the source's own MD5) does not pay awscrt's ~26 ms import.


def _xz(data: bytes | bytearray | memoryview, previous: int = 0) -> int:
    # CRC-64/XZ: the ECMA-182 polynomial, reflected, init and xor-out all ones; what OSS and COS publish as
    # x-oss-hash-crc64ecma / x-cos-hash-crc64ecma (in decimal). fastcrc ships wheels for x86_64 and aarch64 (no
    # compiler on the nodes, unlike crcmod's C extension) and releases the GIL on large buffers, so the
    # copier's off-loop hashing threads really run in parallel. benchmarks/bench_checksums.py measures it.
    from fastcrc import crc64

    return crc64.xz(data, previous)


def crc64ecma(data: bytes | bytearray | memoryview) -> int:
    """The CRC-64/XZ of `data`, as OSS prints it (an int)."""
    return _xz(data)


class Crc64Ecma:
    """A running CRC-64/XZ: `update(data)` with the bytes in order, then `value` (equal to the one-shot CRC of
    everything fed)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0  # the CRC of no bytes

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.value = _xz(data, self.value)


def new_crc64ecma() -> Crc64Ecma:
    """A running CRC-64/XZ starting from no bytes."""
    return Crc64Ecma()


def crc64ecma_value(checksum: str) -> int | None:
    """The CRC in an ObjectMeta checksum 'crc64ecma:<decimal>', else None."""
    kind, _, value = checksum.partition(":")
    return int(value) if kind == "crc64ecma" and value.isdigit() else None


# CRC64NVME (CRC-64/NVME, the Rocksoft polynomial): what S3 keeps as a full-object checksum, sent and returned
# as x-amz-checksum-crc64nvme (base64 of the 8-byte big-endian value). awscrt's is hardware accelerated
# (PCLMULQDQ / PMULL), the implementation botocore uses; ObjectMeta/PartInfo carry it as 'crc64nvme:<16 hex>'.
CRC64NVME = "crc64nvme"


def crc64nvme(data: bytes | bytearray | memoryview, previous: int = 0) -> int:
    """The CRC64NVME of `data` (continuing `previous`, the CRC of the bytes before it)."""
    from awscrt.checksums import crc64nvme as crc

    return crc(data, previous)


def crc64nvme_combine(first: int, second: int, second_length_bytes: int) -> int:
    """The CRC64NVME of A+B from the CRC of A, the CRC of B and B's length (no bytes read again)."""
    from awscrt.checksums import combine_crc64nvme

    return combine_crc64nvme(first, second, second_length_bytes)


def crc64nvme_checksum(value: int) -> str:
    """`value` as an ObjectMeta/PartInfo checksum: 'crc64nvme:<16 hex>'."""
    return f"{CRC64NVME}:{value:016x}"


def crc64nvme_value(checksum: str) -> int | None:
    """The CRC in a checksum 'crc64nvme:<hex>', else None."""
    kind, _, value = checksum.partition(":")
    if kind != CRC64NVME or len(value) != 16:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def crc64nvme_header(value: int) -> str:
    """`value` as S3 sends it in x-amz-checksum-crc64nvme: base64 of 8 big-endian bytes."""
    return base64.b64encode(value.to_bytes(8, "big")).decode("ascii")


def crc64nvme_from_header(text: str) -> int | None:
    """The CRC in an x-amz-checksum-crc64nvme value, or None when it is not 8 bytes of base64."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 8 else None
