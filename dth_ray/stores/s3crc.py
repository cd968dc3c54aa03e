"""S3's full-object CRC64NVME on the wire (which stores check it, its request and answer headers), and the
CRC-64/ECMA that COS publishes (x-cos-hash-crc64ecma, checked on full reads like OSS's)."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

from dth_ray.checksums import (
    crc64ecma,
    crc64ecma_value,
    crc64nvme_checksum,
    crc64nvme_from_header,
    crc64nvme_header,
    crc64nvme_value,
)
from dth_ray.config import ChecksumMode, StoreConfig, StoreType
from dth_ray.errors import IntegrityError
from dth_ray.model import PartInfo
from dth_ray.stores.base import CRC_CHECKED, CRC_DETECT

CRC_HEADER = "x-amz-checksum-crc64nvme"
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}  # HEAD/GET: return the stored checksum


def crc64nvme_support(cfg: StoreConfig) -> str:
    """StoreFeatures.crc64nvme for `cfg`: checked where set so or on AWS S3 itself (which checks every
    x-amz-checksum-crc64nvme it gets), detected on another endpoint with `auto`, never with `md5`."""
    mode = ChecksumMode(getattr(cfg, "checksum", ChecksumMode.auto))
    if mode is ChecksumMode.md5:
        return ""
    host = urlsplit(cfg.endpoint if "://" in cfg.endpoint else f"https://{cfg.endpoint}").hostname or ""
    aws = cfg.type == StoreType.s3 and (not cfg.endpoint or host.endswith((".amazonaws.com", ".amazonaws.com.cn")))
    return CRC_CHECKED if mode is ChecksumMode.crc64nvme or aws else CRC_DETECT


def crc_of(headers: dict[str, str]) -> str:
    """The full-object CRC64NVME an answer carries, as a checksum string ('' when none or not full-object)."""
    value = crc64nvme_from_header(headers.get(CRC_HEADER, ""))
    kind = headers.get("x-amz-checksum-type", "FULL_OBJECT").upper()
    return crc64nvme_checksum(value) if value is not None and kind == "FULL_OBJECT" else ""


def digest_headers(out: dict[str, str], md5: bytes | None, crc64nvme: int | None) -> None:
    """Content-MD5 and x-amz-checksum-crc64nvme, where given: the server refuses a body matching neither."""
    if md5 is not None:
        out["Content-MD5"] = base64.b64encode(md5).decode()
    if crc64nvme is not None:
        out[CRC_HEADER] = crc64nvme_header(crc64nvme)


def part_crc_xml(part: PartInfo) -> str:
    value = crc64nvme_value(part.checksum)
    return "" if value is None else f"<ChecksumCRC64NVME>{crc64nvme_header(value)}</ChecksumCRC64NVME>"


def stored_checksum(headers: dict[str, str], store_type: StoreType) -> str:
    """The whole-object checksum an answer carries: COS's CRC-64/ECMA ('crc64ecma:<decimal>'), else S3's
    full-object CRC64NVME (see crc_of)."""
    cos_crc = headers.get("x-cos-hash-crc64ecma", "")
    if store_type == StoreType.cos and cos_crc.isdigit():
        return f"crc64ecma:{cos_crc}"
    return crc_of(headers)


def check_full_read(key: str, body: bytes, checksum: str) -> None:
    """Raises IntegrityError when a whole object's body does not match the CRC-64/ECMA its store published."""
    expected = crc64ecma_value(checksum)
    if expected is not None and crc64ecma(body) != expected:
        raise IntegrityError(f"GET {key!r}: CRC-64 of the body does not match x-cos-hash-crc64ecma")
