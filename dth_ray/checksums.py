"""Whole-content checksums that providers publish, shared by the stores (to check full reads) and the engine
(to check an object read in ranges against the source's own value)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import crcmod

log = logging.getLogger(__name__)

# CRC-64/ECMA-182 as Aliyun OSS computes it (x-oss-hash-crc64ecma): reflected, init 0, xor-out all ones.
_CRC64_ECMA = dict(poly=0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
crc64ecma: Callable[[bytes], int] = crcmod.mkCrcFun(**_CRC64_ECMA)
_CRC64_PROTO = crcmod.Crc(**_CRC64_ECMA)
CRC_EXTENSION_IN_USE: bool = bool(getattr(sys.modules.get("crcmod.crcmod"), "_usingExtension", False))
if not CRC_EXTENSION_IN_USE:
    log.warning("crcmod's C extension is missing: OSS CRC-64 checks will be slow (reinstall crcmod)")


def new_crc64ecma():
    """A running CRC-64/ECMA: `.update(data)`, then `.crcValue` (an int, as OSS prints it in decimal)."""
    return _CRC64_PROTO.new()


def crc64ecma_value(checksum: str) -> int | None:
    """The CRC in an ObjectMeta checksum 'crc64ecma:<decimal>', else None."""
    kind, _, value = checksum.partition(":")
    return int(value) if kind == "crc64ecma" and value.isdigit() else None
