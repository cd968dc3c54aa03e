"""The copier against real servers: a source changed mid-copy is re-read, never torn; corruption is caught."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.engine.copier import Copier
from dth_ray.errors import DthError, Transient
from dth_ray.stores import open_store
from tests.integration.helpers import MiB, copier_for, copy_listed


@pytest.fixture
def stores(rclone_pair, monkeypatch):
    pair = rclone_pair
    monkeypatch.setenv("CPSRC_ACCESS_KEY_ID", pair.source.access_key)
    monkeypatch.setenv("CPSRC_SECRET_ACCESS_KEY", pair.source.secret_key)
    monkeypatch.setenv("CPDST_ACCESS_KEY_ID", pair.destination.access_key)
    monkeypatch.setenv("CPDST_SECRET_ACCESS_KEY", pair.destination.secret_key)
    src = open_store(StoreConfig(type=StoreType.s3, bucket=pair.source.bucket, endpoint=pair.source.endpoint,
                                 credentials="env:CPSRC"))
    dst = open_store(StoreConfig(type=StoreType.s3, bucket=pair.destination.bucket,
                                 endpoint=pair.destination.endpoint, credentials="env:CPDST"))
    return pair, src, dst


class OverwriteAfterFirstRead:
    """Wraps a real source store: right after the first ranged read, another writer replaces the object."""

    def __init__(self, store, client, bucket: str, new_body: bytes):
        self._store, self._client, self._bucket, self._new = store, client, bucket, new_body
        self.fired = False
        self.features = store.features

    async def head(self, key):
        return await self._store.head(key)

    async def get(self, key, byte_range=None, if_match=""):
        got = await self._store.get(key, byte_range, if_match)
        if byte_range is not None and not self.fired:
            self.fired = True
            await asyncio.to_thread(self._client.put_object, Bucket=self._bucket, Key=key, Body=self._new)
        return got


@pytest.mark.parametrize("new_size_mib", [12, 11])
def test_source_changed_mid_multipart_copy_is_recopied_whole(stores, unique_prefix, new_size_mib):
    pair, src, dst = stores
    key = unique_prefix + "changing.bin"
    old, new = os.urandom(12 * MiB), os.urandom(new_size_mib * MiB)
    client = pair.source.client()
    client.put_object(Bucket=pair.source.bucket, Key=key, Body=old)

    racing = OverwriteAfterFirstRead(src, client, pair.source.bucket, new)
    copier = copier_for(racing, dst)
    outcome, uploads = asyncio.run(copy_listed(copier, src, dst, key, "mid/" + key))

    assert racing.fired and copier.retries >= 1
    assert outcome.src.size == len(new)
    body = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="mid/" + key)["Body"].read()
    assert hashlib.md5(body).digest() == hashlib.md5(new).digest(), "destination holds the new version whole"
    assert uploads == [], "the abandoned multipart upload was aborted"


class CorruptFirstPut:
    """Wraps a real destination store: the first PUT's body has one byte flipped in transit."""

    def __init__(self, store):
        self._store = store
        self.features = store.features
        self.corrupted = 0

    async def put(self, key, data, headers, md5, **options):
        if not self.corrupted:
            self.corrupted += 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return await self._store.put(key, data, headers, md5, **options)


def test_corrupted_put_is_rejected_and_retried(stores, unique_prefix):
    pair, src, dst = stores
    key = unique_prefix + "small.bin"
    body = os.urandom(50_000)
    pair.source.client().put_object(Bucket=pair.source.bucket, Key=key, Body=body)

    wrapped = CorruptFirstPut(dst)
    copier = copier_for(src, wrapped)
    outcome, _ = asyncio.run(copy_listed(copier, src, dst, key, "cor/" + key))

    assert wrapped.corrupted == 1 and copier.retries == 1
    assert outcome.dst_etag == hashlib.md5(body).hexdigest()
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="cor/" + key)["Body"].read()
    assert got == body


class FlipFirstRead:
    """Wraps a real source store: the first read comes back with one byte flipped, as a bad wire would."""

    def __init__(self, store):
        self._store, self.features, self.reads = store, store.features, 0

    async def head(self, key):
        return await self._store.head(key)

    async def get(self, key, byte_range=None, if_match=""):
        got = await self._store.get(key, byte_range, if_match)
        self.reads += 1
        if self.reads == 1:
            data = bytearray(got.data)
            data[len(data) // 2] ^= 0x01
            return type(got)(bytes(data), got.info)
        return got


class RecordRefusals:
    """Wraps a real destination store: notes the error code of every PUT it refused."""

    def __init__(self, store):
        self._store, self.features, self.refused = store, store.features, []

    async def put(self, key, data, headers, md5, **options):
        try:
            return await self._store.put(key, data, headers, md5, **options)
        except DthError as exc:
            self.refused.append(exc.code)
            raise


def test_a_byte_flipped_on_the_way_from_the_source_is_refused_by_the_destination(stores, unique_prefix):
    """A single PUT carries the source's own MD5 as Content-MD5: the destination (rclone serve s3 checks it)
    refuses the corrupted body, so nothing unchecked is ever stored, and the retry lands the source's bytes."""
    pair, src, dst = stores
    key = unique_prefix + "flip.bin"
    body = os.urandom(300_000)
    pair.source.client().put_object(Bucket=pair.source.bucket, Key=key, Body=body)

    flipping, recording = FlipFirstRead(src), RecordRefusals(dst)
    copier = copier_for(flipping, recording)
    outcome, _ = asyncio.run(copy_listed(copier, src, dst, key, "flip/" + key))

    assert flipping.reads == 2 and copier.retries == 1
    assert recording.refused == ["BadDigest"], "the destination itself refused the corrupted body"
    assert outcome.verified_source and outcome.dst_etag == hashlib.md5(body).hexdigest()
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="flip/" + key)["Body"].read()
    assert got == body


def _splitting_copier(src, dst) -> Copier:
    """5 MiB parts read as 1 MiB ranged GETs (as a long link would want), objects from 5 MiB in parts."""
    return copier_for(src, dst, parts_in_flight=2, get_range_bytes=1 * MiB)


class CountRangeReads:
    """Wraps a real source store that reads into buffers; records every ranged read's length."""

    def __init__(self, store):
        self._store, self.features, self.lengths = store, store.features, []

    async def head(self, key):
        return await self._store.head(key)

    async def get(self, key, byte_range=None, if_match=""):
        self.lengths.append(byte_range.length if byte_range else -1)
        return await self._store.get(key, byte_range, if_match)

    async def get_into(self, key, byte_range, out, if_match=""):
        self.lengths.append(byte_range.length)
        return await self._store.get_into(key, byte_range, out, if_match)


@pytest.mark.parametrize(("size", "reads"), [(12 * MiB + 17, 5 + 5 + 2), (3 * MiB + 5, 3)])
def test_parts_read_as_parallel_ranges_arrive_whole(stores, unique_prefix, size, reads):
    """A multipart copy (5 MiB parts) and a single PUT whose reads are split into ranged GETs of 1 MiB (a
    remainder under half a piece rides with the last one) written into one buffer: every byte lands in place
    and the whole object is still checked against the source's MD5 ETag."""
    pair, src, dst = stores
    key = unique_prefix + f"ranges-{size}.bin"
    body = os.urandom(size)
    pair.source.client().put_object(Bucket=pair.source.bucket, Key=key, Body=body)
    counting = CountRangeReads(src)

    outcome, _ = asyncio.run(copy_listed(_splitting_copier(counting, dst), src, dst, key, "rng/" + key))

    assert len(counting.lengths) == reads and sum(counting.lengths) == size, counting.lengths
    assert all(1 * MiB <= n < 1.5 * MiB for n in counting.lengths), "pieces of 1 MiB, none whole"
    assert outcome.verified_source, "the bytes read were checked against the source's MD5 ETag"
    assert outcome.part_size_bytes == (5 * MiB if size >= 5 * MiB else 0)
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="rng/" + key)["Body"].read()
    assert got == body


class StallFirstRange:
    """Wraps a real source store that reads into buffers: the first ranged read (a stream slowed by a loss)
    waits until `others` other reads have landed; records every read's length and the most in flight."""

    def __init__(self, store, others: int):
        self._store, self.features, self._others = store, store.features, others
        self.lengths: list[int] = []
        self.in_flight = self.most_in_flight = self.landed = 0
        self._enough = asyncio.Event()

    async def head(self, key):
        return await self._store.head(key)

    async def get_into(self, key, byte_range, out, if_match=""):
        first = not self.lengths
        self.lengths.append(byte_range.length)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if first:  # a bounded wait: with the range cut in fixed shares, no stream would take the rest
                await asyncio.wait_for(self._enough.wait(), 20)
            info = await self._store.get_into(key, byte_range, out, if_match)
        finally:
            self.in_flight -= 1
        if not first:
            self.landed += 1
            if self.landed >= self._others:
                self._enough.set()
        return info


def test_a_stalled_stream_holds_one_piece_while_the_others_read_the_rest(stores, unique_prefix):
    """A 5 MiB part read as 256 KiB pieces by at most 16 streams: the streams take pieces as they come free, so
    the one stuck on its first piece holds up only that piece; the other 19 are read meanwhile."""
    pair, src, dst = stores
    key = unique_prefix + "stalled-stream.bin"
    body = os.urandom(5 * MiB)
    pair.source.client().put_object(Bucket=pair.source.bucket, Key=key, Body=body)
    stalling = StallFirstRange(src, others=19)

    copier = copier_for(stalling, dst, get_range_bytes=256 * 1024)
    outcome, uploads = asyncio.run(copy_listed(copier, src, dst, key, "stall/" + key))

    assert stalling.lengths == [256 * 1024] * 20, "20 pieces, each read once"
    assert stalling.most_in_flight == 16, "never more streams than a part may have"
    assert outcome.verified_source and outcome.part_size_bytes == 5 * MiB and uploads == []
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="stall/" + key)["Body"].read()
    assert got == body


class FailSecondRange:
    """Wraps a real source store that reads into buffers: in the first wave of 16 reads, the second fails (a
    reset connection) and the others hang until the part is read again (reads from the 17th on go through).
    Counts reads begun."""

    def __init__(self, store):
        self._store, self.features = store, store.features
        self.begun = 0
        self._again = asyncio.Event()

    async def head(self, key):
        return await self._store.head(key)

    async def get_into(self, key, byte_range, out, if_match=""):
        self.begun += 1
        if self.begun == 2:
            raise Transient("connection reset by peer")
        if self.begun <= 16:
            await asyncio.wait_for(self._again.wait(), 20)
        else:
            self._again.set()
        return await self._store.get_into(key, byte_range, out, if_match)


def test_a_failed_piece_stops_the_other_streams_until_the_part_is_read_again(stores, unique_prefix):
    """A 5 MiB part as 20 pieces of 256 KiB over 16 streams: one piece fails, so the part is read again whole;
    the streams of the failed read stop there (their in-flight reads cancelled) rather than read on."""
    pair, src, dst = stores
    key = unique_prefix + "failed-piece.bin"
    body = os.urandom(5 * MiB)
    pair.source.client().put_object(Bucket=pair.source.bucket, Key=key, Body=body)
    failing = FailSecondRange(src)

    copier = copier_for(failing, dst, get_range_bytes=256 * 1024)
    outcome, uploads = asyncio.run(copy_listed(copier, src, dst, key, "fail/" + key))

    assert failing.begun == 16 + 20, "the failed read's first wave of 16, then the part's 20 pieces again"
    assert outcome.verified_source and uploads == []
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="fail/" + key)["Body"].read()
    assert got == body


class OverwriteAfterFirstRangeInto:
    """Wraps a real source store that reads into buffers: right after the first ranged read lands, another
    writer replaces the object, and reads started after that wait for it, so they see the new version."""

    def __init__(self, store, client, bucket: str, new_body: bytes):
        self._store, self._client, self._bucket, self._new = store, client, bucket, new_body
        self.fired = False
        self._replaced = asyncio.Event()
        self.features = store.features

    async def head(self, key):
        return await self._store.head(key)

    async def get(self, key, byte_range=None, if_match=""):
        return await self._store.get(key, byte_range, if_match)

    async def get_into(self, key, byte_range, out, if_match=""):
        if self.fired:
            await self._replaced.wait()
        info = await self._store.get_into(key, byte_range, out, if_match)
        if not self.fired:
            self.fired = True
            await asyncio.to_thread(self._client.put_object, Bucket=self._bucket, Key=key, Body=self._new)
            self._replaced.set()
        return info


def test_source_changed_between_ranges_of_one_part_is_recopied_whole(stores, unique_prefix):
    pair, src, dst = stores
    key = unique_prefix + "changing-ranges.bin"
    old, new = os.urandom(12 * MiB), os.urandom(12 * MiB)
    client = pair.source.client()
    client.put_object(Bucket=pair.source.bucket, Key=key, Body=old)

    racing = OverwriteAfterFirstRangeInto(src, client, pair.source.bucket, new)
    copier = _splitting_copier(racing, dst)
    outcome, uploads = asyncio.run(copy_listed(copier, src, dst, key, "rmid/" + key))

    assert racing.fired and copier.retries >= 1
    got = pair.destination.client().get_object(Bucket=pair.destination.bucket, Key="rmid/" + key)["Body"].read()
    assert hashlib.md5(got).digest() == hashlib.md5(new).digest(), "the new version, whole, never a mix"
    assert outcome.src.etag == hashlib.md5(new).hexdigest()
    assert uploads == []
