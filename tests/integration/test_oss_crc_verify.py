"""An OSS object uploaded in parts has no MD5 ETag: the copier checks the bytes it reads, in order, against the
CRC-64 OSS publishes for the whole object (x-oss-hash-crc64ecma), so even a multipart source is verified end
to end, and a byte changed on the way is caught. Unmodified oss2 against the OSS protocol test endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.engine.copier import Copier
from dth_ray.errors import IntegrityError
from dth_ray.model import ObjectHeaders, PartInfo
from dth_ray.stores import open_store
from tests.integration.conftest import OSS_KEY
from tests.integration.helpers import MiB, copier_for, copy_listed
from tests.servers.oss_server import OssTestServer


@pytest.fixture(scope="module")
def oss():
    with OssTestServer(*OSS_KEY, region="cn-hangzhou") as server:
        server.create_bucket("oss-crc")
        yield server


@pytest.fixture
def stores(oss, e2e_env):
    pair = e2e_env
    src = open_store(StoreConfig(type=StoreType.oss, bucket="oss-crc", endpoint=oss.endpoint, region="cn-hangzhou",
                                 credentials="env:E2EOSS"))
    dst = open_store(StoreConfig(type=StoreType.s3, bucket=pair.destination.bucket,
                                 endpoint=pair.destination.endpoint, credentials="env:E2EDST"))
    return pair, src, dst


async def _upload_in_parts(store, key: str, body: bytes, part_bytes: int) -> str:
    """Put `body` at the source as an OSS multipart upload (so its ETag is not an MD5); returns that ETag."""
    upload_id = await store.create_multipart(key, ObjectHeaders())
    parts = []
    for number, start in enumerate(range(0, len(body), part_bytes), 1):
        chunk = body[start:start + part_bytes]
        etag = await store.upload_part(key, upload_id, number, chunk, hashlib.md5(chunk).digest())
        parts.append(PartInfo(number, etag, len(chunk)))
    return (await store.complete_multipart(key, upload_id, parts)).etag


def _copier(src, dst) -> Copier:
    return copier_for(src, dst, parts_in_flight=3, max_attempts=2, get_range_bytes=2 * MiB)


class FlipByteInReads:
    """Wraps the real OSS store: the third ranged read (or, `always`, every read from the third on) comes back
    with one byte flipped, as a bad wire or disk would deliver it."""

    def __init__(self, store, always: bool):
        self._store, self.features, self.reads, self._always = store, store.features, 0, always

    async def head(self, key):
        return await self._store.head(key)

    async def get(self, key, byte_range=None, if_match=""):
        got = await self._store.get(key, byte_range, if_match)
        self.reads += 1
        if self.reads == 3 or (self._always and self.reads > 3):
            data = bytearray(got.data)
            data[len(data) // 2] ^= 0x01
            return type(got)(bytes(data), got.info)
        return got


def test_multipart_oss_source_is_verified_by_its_crc64(stores, unique_prefix):
    pair, src, dst = stores
    key = unique_prefix + "multipart-source.bin"
    body = os.urandom(13 * MiB + 11)

    async def scenario():
        etag = await _upload_in_parts(src, key, body, 5 * MiB)
        listed = (await src.list_page(key)).objects[0]
        return etag, listed, (await copy_listed(_copier(src, dst), src, dst, key, "crc/" + key))[0]

    etag, listed, outcome = asyncio.run(scenario())

    assert "-" in etag and listed.etag == etag, "the source ETag is a multipart ETag, not an MD5"
    assert outcome.part_size_bytes == 5 * MiB
    assert outcome.verified_source, "the bytes read were checked against the source's CRC-64"
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="crc/" + key)["Body"].read()
    assert got == body


def test_a_byte_changed_in_a_multipart_oss_read_is_caught_and_read_again(stores, unique_prefix):
    pair, src, dst = stores
    key = unique_prefix + "flipped-once.bin"
    body = os.urandom(11 * MiB)

    copier = _copier(FlipByteInReads(src, always=False), dst)

    async def scenario():
        await _upload_in_parts(src, key, body, 5 * MiB)
        return await copy_listed(copier, src, dst, key, "flip1/" + key)

    outcome, uploads = asyncio.run(scenario())

    assert copier.retries == 1, "the CRC-64 mismatch failed the first attempt"
    assert outcome.verified_source
    assert uploads == [], "the first attempt's upload was aborted"
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="flip1/" + key)["Body"].read()
    assert got == body


def test_a_multipart_oss_source_that_keeps_reading_wrong_is_never_written(stores, unique_prefix):
    pair, src, dst = stores
    key = unique_prefix + "flipped-always.bin"
    body = os.urandom(11 * MiB)

    async def scenario():
        await _upload_in_parts(src, key, body, 5 * MiB)
        listed = (await src.list_page(key)).objects[0]
        try:
            with pytest.raises(IntegrityError, match="CRC-64"):
                await _copier(FlipByteInReads(src, always=True), dst).copy(listed, "flip/" + key)
            return await dst.list_uploads("flip/" + unique_prefix)
        finally:
            await src.aclose()
            await dst.aclose()

    uploads = asyncio.run(scenario())

    assert uploads == [], "every upload with a bad byte was aborted, never completed"
    listed = pair.destination.client().list_objects_v2(Bucket=pair.destination.bucket, Prefix="flip/" + key)
    assert listed.get("KeyCount", 0) == 0, "nothing was written under the key"
