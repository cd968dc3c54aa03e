"""Whether a copier's writes carry CRC64NVME and whether the destination checks it (so parts may drop their
MD5): known from the store's features, or learnt once from the first answer to a write that sent one.

S3 echoes the x-amz-checksum-crc64nvme it checked in the answer to a PUT and a Complete; a server that ignores
the header (rclone serve s3, moto: both store it without checking) does not, and keeps today's MD5 path,
said once per process at WARNING.
"""

from __future__ import annotations

import logging
import threading

from dth_ray.checksums import crc64nvme_value
from dth_ray.errors import IntegrityError
from dth_ray.stores.base import CRC_CHECKED, CRC_DETECT, StoreFeatures

log = logging.getLogger(__name__)
_said: set[str] = set()  # destinations whose fallback this process has logged
_said_lock = threading.Lock()


class CrcMode:
    """One copier's view of its destination's CRC64NVME support (see StoreFeatures.crc64nvme)."""

    def __init__(self, features: StoreFeatures, where: str = "") -> None:
        self._support = features.crc64nvme
        self._where = where or features.name

    @property
    def send(self) -> bool:
        """Writes carry CRC64NVME (checked, or still finding out)."""
        return bool(self._support)

    @property
    def checked(self) -> bool:
        """The destination refuses a wrong CRC64NVME: it may stand in for a part's MD5."""
        return self._support == CRC_CHECKED

    def answered(self, sent: int, echoed: str) -> None:
        """Learn from the answer to a write that sent `sent`: its echo ('crc64nvme:<hex>' or ''). Raises
        IntegrityError when the destination kept another CRC than the one sent."""
        if echoed and crc64nvme_value(echoed) != sent:
            raise IntegrityError("destination kept another CRC64NVME than the one sent")
        if self._support != CRC_DETECT:
            return
        if echoed:
            self._support = CRC_CHECKED
            log.info("destination %s checks CRC64NVME checksums: parts are sent without MD5", self._where)
            return
        self._support = ""
        with _said_lock:
            first = self._where not in _said
            _said.add(self._where)
        if first:
            log.warning("destination %s does not check CRC64NVME checksums (its answer to a write that sent one "
                        "did not echo it): copies are checked with MD5 instead (destination.checksum=md5 skips "
                        "this probe)", self._where)
