"""The streamed single PUT (engine/streamput.py) between two real rclone S3 servers: a large object goes out as
one PUT fed by a ring of ranged GETs, lands whole and checked; a source read that fails or a source that
changes mid-stream abandons the PUT (nothing stored) and the copy is made again whole; a PUT cut after its
body is sent again whole."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.context import CopySettings
from dth_ray.engine.copier import Copier
from dth_ray.engine.limits import Limits
from dth_ray.engine.ratelimit import AdaptiveLimit
from dth_ray.errors import DthError
from dth_ray.stores import open_store
from tests.integration.helpers import MiB
from tests.servers.fault_proxy import FaultProxy, Rule, reset, reset_mid_body

KiB = 1024
SLOT = 256 * KiB  # ring of 4 slots: 1 MiB
BUDGET = 8 * MiB  # a 5 MiB object is more than a quarter of it: streamed once the source's rate is known
WARM = 1 * MiB + 5  # read as ranged GETs into a whole buffer: teaches the copier the source's rate
BIG = 5 * MiB + 123


class Spy:
    """A real destination store that notes each whole PUT and how each streamed PUT ended."""

    def __init__(self, store):
        self._store, self.features = store, store.features
        self.puts: list[str] = []
        self.streamed: list[tuple[str, str]] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def put(self, key, data, headers, md5, **options):
        self.puts.append(key)
        return await self._store.put(key, data, headers, md5, **options)

    async def put_streamed(self, key, body, headers, md5):
        try:
            result = await self._store.put_streamed(key, body, headers, md5)
        except DthError as exc:
            self.streamed.append((key, type(exc).__name__))
            raise
        self.streamed.append((key, "ok"))
        return result


def _store(server, env: str, monkeypatch, endpoint: str | None = None):
    monkeypatch.setenv(f"{env}_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv(f"{env}_SECRET_ACCESS_KEY", server.secret_key)
    return open_store(StoreConfig(type=StoreType.s3, bucket=server.bucket, endpoint=endpoint or server.endpoint,
                                  credentials=f"env:{env}"))


def _copier(src, dst, requests: int = 16) -> tuple[Copier, ByteBudget]:
    budget = ByteBudget(BUDGET)
    settings = CopySettings(multipart_threshold_bytes=64 * MiB, part_size_bytes=None, parts_in_flight=1,
                            max_attempts=4, stream_slot_bytes=SLOT)
    return Copier(src, dst, src.features, dst.features, settings, Limits(budget, AdaptiveLimit(requests))), budget


async def _copy(copier, src, dst, keys: dict[str, str]):
    """Copy each listed source key to its destination key, in order; close both stores."""
    try:
        outcomes = []
        for key, dst_key in keys.items():
            listed = (await src.list_page(key)).objects[0]
            outcomes.append(await copier.copy(listed, dst_key))
        return outcomes
    finally:
        await src.aclose()
        await dst.aclose()


def _seed(pair, prefix: str) -> tuple[bytes, bytes]:
    warm, big = os.urandom(WARM), os.urandom(BIG)
    client = pair.source.client()
    client.put_object(Bucket=pair.source.bucket, Key=prefix + "warm.bin", Body=warm)
    client.put_object(Bucket=pair.source.bucket, Key=prefix + "big.bin", Body=big)
    return warm, big


def _landed(pair, key: str) -> bytes:
    return pair.destination.client().get_object(Bucket=pair.destination.bucket, Key=key)["Body"].read()


def test_a_large_object_streams_through_a_ring_once_the_source_is_known_to_be_fast(rclone_pair, unique_prefix,
                                                                                    monkeypatch):
    pair = rclone_pair
    warm, big = _seed(pair, unique_prefix)
    src, dst = _store(pair.source, "SPSRC", monkeypatch), Spy(_store(pair.destination, "SPDST", monkeypatch))
    copier, budget = _copier(src, dst)
    out = unique_prefix + "out/"

    first, second = asyncio.run(_copy(copier, src, dst, {unique_prefix + "warm.bin": out + "warm.bin",
                                                          unique_prefix + "big.bin": out + "big.bin"}))

    assert dst.puts == [out + "warm.bin"] and dst.streamed == [(out + "big.bin", "ok")]
    assert second.verified_source and second.dst_etag == hashlib.md5(big).hexdigest()
    assert _landed(pair, out + "big.bin") == big and _landed(pair, out + "warm.bin") == warm
    # Only the warm-up's buffer and the 1 MiB ring were ever allocated: never a buffer of the large object.
    assert budget.allocations == 2 and budget.pooled_bytes < 2.5 * MiB and budget.in_use_bytes == 0


def test_a_source_read_that_fails_mid_stream_abandons_the_put_and_the_copy_is_made_again_whole(
        rclone_pair, unique_prefix, monkeypatch):
    pair = rclone_pair
    _, big = _seed(pair, unique_prefix)
    out = unique_prefix + "out/"
    put_answers: list[int] = []

    def on_answer(method, target, status):
        if method == "PUT" and target.endswith("big.bin"):
            put_answers.append(status)

    with FaultProxy(pair.source.endpoint, seed=5) as src_proxy, \
            FaultProxy(pair.destination.endpoint, seed=6, on_answer=on_answer) as dst_proxy:
        # The big object's 7th ranged read (the PUT is well under way) fails three times: every attempt the
        # store's own retry makes, so the slot's read fails for good. One request at a time (the PUT is not
        # counted), so those three are that read's.
        src_proxy.add(Rule(reset_mid_body(), op="GetObject", path="big.bin", ranged=True, after=6, times=3))
        src = _store(pair.source, "SPSRC", monkeypatch, src_proxy.endpoint)
        dst = Spy(_store(pair.destination, "SPDST", monkeypatch, dst_proxy.endpoint))
        copier, _ = _copier(src, dst, requests=1)
        _, outcome = asyncio.run(_copy(copier, src, dst, {unique_prefix + "warm.bin": out + "warm.bin",
                                                          unique_prefix + "big.bin": out + "big.bin"}))
        fired = src_proxy.counts

    assert sum(rule["injected"] for rule in fired.values()) == 3, fired
    assert dst.streamed == [(out + "big.bin", "Transient"), (out + "big.bin", "ok")] and copier.retries == 1
    assert put_answers == [200], "the abandoned PUT never completed upstream: only the second one was stored"
    assert outcome.dst_etag == hashlib.md5(big).hexdigest() and _landed(pair, out + "big.bin") == big


def test_a_streamed_put_cut_after_its_body_is_sent_again_whole(rclone_pair, unique_prefix, monkeypatch):
    pair = rclone_pair
    _, big = _seed(pair, unique_prefix)
    out = unique_prefix + "out/"
    with FaultProxy(pair.destination.endpoint, seed=7) as dst_proxy:
        # The proxy reads the whole body, forwards nothing and resets the connection: the store may not send
        # it again itself (its chunks are gone); the copier reads the object again.
        dst_proxy.add(Rule(reset(), op="PutObject", path="big.bin", times=1))
        src = _store(pair.source, "SPSRC", monkeypatch)
        dst = Spy(_store(pair.destination, "SPDST", monkeypatch, dst_proxy.endpoint))
        copier, _ = _copier(src, dst)
        _, outcome = asyncio.run(_copy(copier, src, dst, {unique_prefix + "warm.bin": out + "warm.bin",
                                                          unique_prefix + "big.bin": out + "big.bin"}))

    assert dst.streamed == [(out + "big.bin", "Transient"), (out + "big.bin", "ok")] and copier.retries == 1
    assert outcome.dst_etag == hashlib.md5(big).hexdigest() and _landed(pair, out + "big.bin") == big


class OnBigRead:
    """A real source store that reads into buffers: once the big object's `after`-th slot read has landed,
    `then()` runs, once (another writer replacing the object, or a signal to the test)."""

    def __init__(self, store, after: int, then):
        self._store, self.features, self._after, self._then = store, store.features, after, then
        self.reads = 0
        self.fired = False

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def get_into(self, key, byte_range, out, if_match=""):
        info = await self._store.get_into(key, byte_range, out, if_match)
        if key.endswith("big.bin"):
            self.reads += 1
            if self.reads == self._after and not self.fired:
                self.fired = True
                await self._then()
        return info


@pytest.mark.parametrize("new_size", [BIG, 6 * MiB + 1])
def test_a_source_changed_mid_stream_is_copied_again_whole_never_torn(rclone_pair, unique_prefix, monkeypatch,
                                                                      new_size):
    pair = rclone_pair
    _seed(pair, unique_prefix)
    new = os.urandom(new_size)
    src = _store(pair.source, "SPSRC", monkeypatch)
    client = pair.source.client()
    # once the second slot is read, another writer replaces the object: the slots still to come fail If-Match
    racing = OnBigRead(src, 2, lambda: asyncio.to_thread(client.put_object, Bucket=pair.source.bucket,
                                                         Key=unique_prefix + "big.bin", Body=new))
    dst = Spy(_store(pair.destination, "SPDST", monkeypatch))
    copier, _ = _copier(racing, dst)
    out = unique_prefix + "out/"

    _, outcome = asyncio.run(_copy(copier, src, dst, {unique_prefix + "warm.bin": out + "warm.bin",
                                                      unique_prefix + "big.bin": out + "big.bin"}))

    assert racing.fired and copier.retries >= 1
    assert dst.streamed[0] == (out + "big.bin", "PreconditionFailed") and dst.streamed[-1][1] == "ok"
    assert outcome.src.size == new_size and outcome.dst_etag == hashlib.md5(new).hexdigest()
    assert _landed(pair, out + "big.bin") == new, "the new version, whole"


def test_a_streamed_copy_cancelled_mid_put_gives_its_ring_back_and_stores_nothing(rclone_pair, unique_prefix,
                                                                                 monkeypatch):
    """A copy given up mid-stream (the actor stopping, Ctrl-C): its reads stop, the ring goes back to the
    budget, and the PUT is aborted, so the destination never gets an object."""
    pair = rclone_pair
    _seed(pair, unique_prefix)
    src = _store(pair.source, "SPSRC", monkeypatch)
    reached = asyncio.Event()

    async def signal():
        reached.set()

    signalling = OnBigRead(src, 6, signal)  # six slots read: its PUT is well under way
    dst = Spy(_store(pair.destination, "SPDST", monkeypatch))
    copier, budget = _copier(signalling, dst)
    out = unique_prefix + "out/"

    async def main():
        try:
            warm = (await src.list_page(unique_prefix + "warm.bin")).objects[0]
            await copier.copy(warm, out + "warm.bin")
            big = (await src.list_page(unique_prefix + "big.bin")).objects[0]
            task = asyncio.ensure_future(copier.copy(big, out + "big.bin"))
            await asyncio.wait_for(reached.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.5)  # anything still sent would reach the server meanwhile
            return budget.in_use_bytes
        finally:
            await src.aclose()
            await dst.aclose()

    assert asyncio.run(main()) == 0
    # Six slot reads through a ring of four: the PUT had sent at least two slots when the copy was cancelled.
    assert signalling.reads < BIG // SLOT, "cancelled before every slot was read"
    listed = pair.destination.client().list_objects_v2(Bucket=pair.destination.bucket, Prefix=out)
    assert [o["Key"] for o in listed.get("Contents", [])] == [out + "warm.bin"], "no big object was stored"
