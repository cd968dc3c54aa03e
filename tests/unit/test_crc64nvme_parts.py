"""CRC64NVME pieces without servers: the checksum helpers, combining part CRCs, which stores check it, and
the copier's one-time detection of a destination that does not."""

from __future__ import annotations

import logging
import os

import pytest

from dth_ray.checksums import (
    crc64nvme,
    crc64nvme_checksum,
    crc64nvme_from_header,
    crc64nvme_header,
    crc64nvme_value,
)
from dth_ray.config import ChecksumMode, StoreConfig, StoreType
from dth_ray.engine import crcmode
from dth_ray.engine.crcmode import CrcMode
from dth_ray.engine.partcrc import etag_md5, whole_crc
from dth_ray.errors import IntegrityError
from dth_ray.model import PartInfo
from dth_ray.stores.base import CRC_CHECKED, CRC_DETECT, StoreFeatures
from dth_ray.stores.s3crc import crc64nvme_support, crc_of


def test_crc64nvme_values_and_their_wire_forms():
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888  # the CRC-64/NVME catalogue check value
    value = crc64nvme(b"hello world")
    assert crc64nvme_header(value) == "jSnVw/bqjr4="  # what S3 (and rclone, stored) show for these bytes
    assert crc64nvme_from_header("jSnVw/bqjr4=") == value and crc64nvme_from_header("not base64!") is None
    assert crc64nvme_from_header("AAAA") is None  # 3 bytes, not 8
    assert crc64nvme_value(crc64nvme_checksum(value)) == value
    assert crc64nvme_value("crc64ecma:123") is None and crc64nvme_value("crc64nvme:xyz") is None
    assert crc_of({"x-amz-checksum-crc64nvme": "jSnVw/bqjr4=", "x-amz-checksum-type": "FULL_OBJECT"}) == \
        crc64nvme_checksum(value)
    assert crc_of({"x-amz-checksum-crc64nvme": "jSnVw/bqjr4=", "x-amz-checksum-type": "COMPOSITE"}) == ""


def test_the_whole_objects_crc_is_the_parts_combined_or_the_sources():
    body = os.urandom(3 * 1024 * 1024 + 17)
    cuts = [0, 1024 * 1024, 2 * 1024 * 1024, len(body)]
    parts = [PartInfo(n + 1, "e", cuts[n + 1] - cuts[n], crc64nvme_checksum(crc64nvme(body[cuts[n]:cuts[n + 1]])))
             for n in range(3)]
    assert whole_crc(list(reversed(parts)), None) == crc64nvme(body)
    assert whole_crc(parts, 42) == 42
    assert whole_crc([*parts[:2], PartInfo(3, "e", 1)], None) is None
    assert etag_md5('"' + "ab" * 16 + '"') == bytes.fromhex("ab" * 16) and etag_md5("not-an-md5") is None


@pytest.mark.parametrize(("store_type", "endpoint", "mode", "expected"), [
    (StoreType.s3, "", ChecksumMode.auto, CRC_CHECKED),
    (StoreType.s3, "https://s3.eu-west-1.amazonaws.com", ChecksumMode.auto, CRC_CHECKED),
    (StoreType.s3, "http://127.0.0.1:9000", ChecksumMode.auto, CRC_DETECT),
    (StoreType.cos, "", ChecksumMode.auto, CRC_DETECT),
    (StoreType.s3, "http://127.0.0.1:9000", ChecksumMode.crc64nvme, CRC_CHECKED),
    (StoreType.s3, "", ChecksumMode.md5, ""),
])
def test_which_stores_check_crc64nvme(store_type, endpoint, mode, expected):
    cfg = StoreConfig(type=store_type, bucket="b", endpoint=endpoint, checksum=mode)
    assert crc64nvme_support(cfg) == expected


def test_a_destination_that_echoes_checks_and_one_that_does_not_falls_back_once(monkeypatch, caplog):
    monkeypatch.setattr(crcmode, "_said", set())
    echoing = CrcMode(StoreFeatures("s3", crc64nvme=CRC_DETECT), "echoing")
    assert echoing.send and not echoing.checked
    echoing.answered(7, crc64nvme_checksum(7))
    assert echoing.checked
    with pytest.raises(IntegrityError):
        echoing.answered(7, crc64nvme_checksum(8))  # kept another CRC than the one sent
    with caplog.at_level(logging.WARNING, logger="dth_ray.engine.crcmode"):
        for _ in range(3):
            silent = CrcMode(StoreFeatures("s3", crc64nvme=CRC_DETECT), "silent")
            silent.answered(7, "")
            assert not silent.send and not silent.checked
    assert sum("does not check CRC64NVME" in r.getMessage() for r in caplog.records) == 1
    never = CrcMode(StoreFeatures("s3"), "md5")
    never.answered(7, "")
    assert not never.send


def test_the_checksum_setting_is_refused_where_it_cannot_apply():
    from dth_ray.config import validate_store
    from dth_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="source.checksum=crc64nvme applies to S3-family stores"):
        validate_store(StoreConfig(type=StoreType.oss, bucket="bkt", checksum=ChecksumMode.crc64nvme), "source")
    validate_store(StoreConfig(type=StoreType.cos, bucket="bkt", checksum=ChecksumMode.md5), "destination")
