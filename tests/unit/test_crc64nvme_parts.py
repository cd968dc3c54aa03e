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


class _Recording:
    """A destination store wrapper: notes each write's digests and flips the body of the first UploadPart."""

    def __init__(self, store, flip_part: bool = False):
        self._store, self.features, self.flip_part = store, store.features, flip_part
        self.parts: list[tuple[bool, bool]] = []  # (Content-MD5 sent, CRC64NVME sent)
        self.completes: list[int | None] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def upload_part(self, key, upload_id, number, data, md5, **options):
        self.parts.append((md5 is not None, options.get("crc64nvme") is not None))
        if self.flip_part:
            self.flip_part = False
            data = bytes([data[0] ^ 1]) + bytes(data[1:])
        return await self._store.upload_part(key, upload_id, number, data, md5, **options)

    async def complete_multipart(self, key, upload_id, parts, **options):
        self.completes.append(options.get("crc64nvme"))
        return await self._store.complete_multipart(key, upload_id, parts, **options)


class _FlipFirstRead:
    """A source store wrapper: the first ranged read lands with one byte flipped (a bad wire)."""

    def __init__(self, store):
        self._store, self.features, self.flipped = store, store.features, False

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def get_into(self, key, byte_range, out, if_match=""):
        info = await self._store.get_into(key, byte_range, out, if_match)
        if not self.flipped:
            self.flipped = True
            out[0] ^= 1
        return info


def _memory_pair(name: str):
    from dth_ray.stores.memory import MemoryStore

    src_name, dst_name = f"crcu-src-{name}", f"crcu-dst-{name}"
    MemoryStore.reset(src_name)
    MemoryStore.reset(dst_name)
    return (MemoryStore(StoreConfig(type=StoreType.memory, bucket=src_name, checksum=ChecksumMode.crc64nvme)),
            MemoryStore(StoreConfig(type=StoreType.memory, bucket=dst_name, checksum=ChecksumMode.crc64nvme)))


async def _copy(copier, src, key: str):
    return await copier.copy((await src.list_page(key)).objects[0], "to/" + key)


def test_parts_carry_crc_in_place_of_md5_and_a_flipped_part_is_refused_and_sent_again():
    import asyncio

    from dth_ray.model import ObjectHeaders
    from tests.integration.helpers import MiB, copier_for

    src, dst = _memory_pair("parts")
    body = os.urandom(12 * MiB + 3)
    asyncio.run(src.put("big.bin", body, ObjectHeaders(), None))
    recording = _Recording(dst, flip_part=True)
    copier = copier_for(src, recording, parts_in_flight=1)
    outcome = asyncio.run(_copy(copier, src, "big.bin"))
    assert copier.retries == 1 and outcome.verified_source
    assert recording.parts and all(crc and not md5 for md5, crc in recording.parts), "CRC64NVME, no MD5"
    assert recording.completes[-1] == crc64nvme(body), "the source's own CRC goes out on the Complete"
    got = asyncio.run(dst.get("to/big.bin"))
    assert got.data == body and got.info.meta.checksum == crc64nvme_checksum(crc64nvme(body))


def test_a_byte_flipped_on_the_way_from_the_source_is_refused_on_complete():
    import asyncio

    from dth_ray.model import ObjectHeaders
    from tests.integration.helpers import MiB, copier_for

    src, dst = _memory_pair("from-source")
    body = os.urandom(11 * MiB)
    asyncio.run(src.put("big.bin", body, ObjectHeaders(), None))
    flipping, recording = _FlipFirstRead(src), _Recording(dst)
    copier = copier_for(flipping, recording, parts_in_flight=1)
    outcome = asyncio.run(_copy(copier, src, "big.bin"))
    assert flipping.flipped and copier.retries == 1 and outcome.verified_source
    assert len(recording.completes) == 2, "the first Complete was refused (BadDigest), the second landed"
    assert asyncio.run(dst.get("to/big.bin")).data == body
    assert asyncio.run(dst.list_uploads("to/")) == [], "the refused upload was aborted"
