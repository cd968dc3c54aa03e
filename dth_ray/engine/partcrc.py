"""What a multipart Complete needs from its parts: the whole object's CRC64NVME and each part's MD5 as its ETag."""

from __future__ import annotations

import string
from collections.abc import Sequence

from dth_ray.checksums import crc64nvme_combine, crc64nvme_value
from dth_ray.model import PartInfo


def whole_crc(parts: Sequence[PartInfo], source_crc: int | None) -> int | None:
    """The whole object's CRC64NVME for a FULL_OBJECT Complete: the source's own where it keeps one (S3 then
    refuses an object whose bytes differ from the source's), else the parts' CRCs combined in order (no byte
    read again); None when a part has no CRC."""
    if source_crc is not None:
        return source_crc
    whole: int | None = None
    for part in sorted(parts, key=lambda p: p.part_number):
        value = crc64nvme_value(part.checksum)
        if value is None:
            return None
        whole = value if whole is None else crc64nvme_combine(whole, value, part.size)
    return whole


def etag_md5(etag: str) -> bytes | None:
    """A part's ETag as the raw MD5 it is (S3 without SSE-KMS), or None when it is not 32 hex digits."""
    etag = etag.strip('"')
    return bytes.fromhex(etag) if len(etag) == 32 and all(c in string.hexdigits for c in etag) else None
