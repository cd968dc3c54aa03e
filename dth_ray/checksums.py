"""Whole-content checksums that providers publish, shared by the stores (to check full reads) and the engine
(to check an object read in ranges against the source's own value)."""

from __future__ import annotations

from fastcrc import crc64

# CRC-64/XZ: the ECMA-182 polynomial, reflected, init and xor-out all ones; what OSS and COS publish as
# x-oss-hash-crc64ecma / x-cos-hash-crc64ecma (in decimal). fastcrc ships wheels for x86_64 and aarch64 (no
# compiler on the nodes, unlike crcmod's C extension) and releases the GIL on large buffers, so the copier's
# off-loop hashing threads really run in parallel. benchmarks/bench_checksums.py measures it.
_xz = crc64.xz


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
