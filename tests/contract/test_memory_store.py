"""The store contract against MemoryStore, plus its own hooks: shared buckets, reset, faults, clock, pickling."""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import random
import threading
import time

import pytest

from dth_ray.config import StoreConfig, StoreType, validate_store
from dth_ray.errors import (
    ConfigError,
    Fatal,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    Transient,
)
from dth_ray.model import ByteRange, ObjectHeaders, PartInfo
from dth_ray.stores import open_store
from dth_ray.stores.base import RangeReader, ServerSideCopier
from dth_ray.stores.memory import MemoryStore
from tests.contract.suite import NO_HEADERS, MiB, StoreContract, list_all, md5, multipart_etag, utf8_sorted

BUCKET = "contract-memory"
SRC, DST = "memory-src", "memory-dst"


def memory_store(bucket: str = SRC) -> MemoryStore:
    store = open_store(StoreConfig(type=StoreType.memory, bucket=bucket))
    assert isinstance(store, MemoryStore)
    return store


def run(coro):
    return asyncio.run(coro)


async def put(store, key: str, data: bytes = b"x", headers: ObjectHeaders = NO_HEADERS):
    return await store.put(key, data, headers, md5(data))


@pytest.fixture(autouse=True)
def fresh_buckets():
    """Every test starts and ends with no memory buckets, so tests cannot see each other's objects."""
    MemoryStore.reset()
    yield
    MemoryStore.reset()


class TestMemoryStore(StoreContract):
    # No flag differs from the defaults: the memory store behaves as AWS S3 does on every contract point.

    @pytest.fixture
    def store(self):
        return memory_store(BUCKET)


# -- shape and registration ---------------------------------------------------------------------------------


def test_registered_and_validated_without_an_endpoint():
    store = memory_store()
    assert isinstance(store, RangeReader) and isinstance(store, ServerSideCopier)
    assert store.features.name == "memory" and store.features.server_side_copy
    assert store.features.min_part_size_bytes == 5 * MiB
    validate_store(StoreConfig(type=StoreType.memory, bucket="b1"), "source")  # no endpoint, no credentials
    with pytest.raises(ConfigError, match="bucket is required"):
        validate_store(StoreConfig(type=StoreType.memory), "destination")
    with pytest.raises(ConfigError):
        MemoryStore(StoreConfig(type=StoreType.memory))


def test_pickles_as_its_config():
    store = memory_store()
    run(put(store, "k", b"kept"))
    reducer, args = store.__reduce__()
    assert reducer is MemoryStore and args[0].bucket == SRC
    clone = pickle.loads(pickle.dumps(store))
    assert clone is not store
    assert run(clone.get("k")).data == b"kept"  # same process: the clone sees the same bucket


# -- namespaces and reset -----------------------------------------------------------------------------------


def test_stores_of_one_bucket_share_objects_and_uploads():
    writer, reader, other = memory_store(SRC), memory_store(SRC), memory_store(DST)

    async def body():
        await put(writer, "a/1", b"one")
        upload_id = await writer.create_multipart("a/big", ObjectHeaders())
        assert (await reader.get("a/1")).data == b"one"
        assert [u.upload_id for u in await reader.list_uploads("a/")] == [upload_id]
        await reader.delete("a/1")
        with pytest.raises(NotFound):
            await writer.head("a/1")
        assert (await other.list_page("")).objects == []
        assert await other.list_uploads("") == []

    run(body())


def test_reset_forgets_one_bucket_or_all():
    src, dst = memory_store(SRC), memory_store(DST)
    run(put(src, "k"))
    run(put(dst, "k"))
    MemoryStore.faults(SRC).fail("head", Transient("boom"), times=None)
    MemoryStore.reset(SRC)
    with pytest.raises(NotFound):  # NotFound, not Transient: the fault rule went with the bucket
        run(src.head("k"))
    assert run(dst.head("k")).meta.size == 1
    MemoryStore.reset()
    with pytest.raises(NotFound):
        run(dst.head("k"))


def test_threads_with_their_own_event_loops_share_a_bucket():
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        store = memory_store()  # as a worker thread would build it from the config

        async def body():
            for i in range(50):
                await put(store, f"t{n}/{i:03d}", f"{n}-{i}".encode())

        try:
            asyncio.run(body())
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    objects, _ = run(list_all(memory_store(), "", max_keys=37))
    assert [o.key for o in objects] == sorted(f"t{n}/{i:03d}" for n in range(4) for i in range(50))


# -- S3 semantics the contract does not pin down ------------------------------------------------------------


def test_put_checks_content_md5_like_s3_bad_digest():
    store = memory_store()
    with pytest.raises(IntegrityError) as raised:  # S3Store maps BadDigest to IntegrityError
        run(store.put("k", b"body", ObjectHeaders(), md5(b"other")))
    assert raised.value.code == "BadDigest"
    with pytest.raises(NotFound):
        run(store.head("k"))


def test_headers_are_kept_as_s3_answers_them():
    store = memory_store()
    headers = ObjectHeaders(cache_control="no-cache", user_metadata=(("Zeta", "1"), ("Alpha", "2")),
                            mtime_ns=123)
    run(put(store, "k", b"x", headers))
    got = run(store.head("k")).headers
    assert got == ObjectHeaders(content_type="binary/octet-stream", cache_control="no-cache",
                                user_metadata=(("alpha", "2"), ("zeta", "1")))


def test_complete_refuses_small_parts_unknown_etags_and_repeats():
    store = memory_store()
    big, small = b"a" * (5 * MiB), b"tail"

    async def body():
        upload_id = await store.create_multipart("m", ObjectHeaders())
        e1 = await store.upload_part("m", upload_id, 1, small, md5(small))
        e2 = await store.upload_part("m", upload_id, 2, big, md5(big))
        for parts, code in (([PartInfo(1, e1), PartInfo(2, e2)], "EntityTooSmall"),
                            ([PartInfo(1, "0" * 32)], "InvalidPart"),
                            ([PartInfo(3, e2)], "InvalidPart"),
                            ([PartInfo(1, e1), PartInfo(1, e1)], "InvalidPartOrder"),
                            ([], "MalformedXML")):
            with pytest.raises(Fatal) as raised:
                await store.complete_multipart("m", upload_id, parts)
            assert raised.value.code == code
        assert len(await store.list_parts("m", upload_id)) == 2  # a refused Complete leaves the upload open
        e1 = await store.upload_part("m", upload_id, 1, big, md5(big))  # replaces part 1
        done = await store.complete_multipart("m", upload_id, [PartInfo(1, e1), PartInfo(2, e2)])
        assert done.etag == multipart_etag([big, big])
        with pytest.raises(NotFound):  # completed: the upload is gone
            await store.complete_multipart("m", upload_id, [PartInfo(1, e1), PartInfo(2, e2)])
        one = await store.create_multipart("single", ObjectHeaders())
        etag = await store.upload_part("single", one, 1, small, md5(small))
        assert (await store.complete_multipart("single", one, [PartInfo(1, etag)])).etag == multipart_etag([small])
        with pytest.raises(NotFound):  # an upload id belongs to its key
            await store.list_parts("other", one)

    run(body())


def test_get_into_fills_the_buffer_and_checks_lengths():
    store = memory_store()
    data = bytes(range(256)) * 4
    put_etag = run(put(store, "k", data)).etag
    out = bytearray(100)
    info = run(store.get_into("k", ByteRange(10, 110), memoryview(out), if_match=put_etag))
    assert bytes(out) == data[10:110] and info.meta.size == len(data) and info.meta.etag == put_etag
    with pytest.raises(Transient):  # the buffer does not match the range
        run(store.get_into("k", ByteRange(0, 50), memoryview(out)))
    with pytest.raises(Transient):  # the range ends past the object: a short body
        run(store.get_into("k", ByteRange(1000, 1100), memoryview(out)))
    with pytest.raises(Fatal):  # the range starts past the object: InvalidRange
        run(store.get("k", ByteRange(2000, 2100)))
    with pytest.raises(PreconditionFailed):
        run(store.get_into("k", ByteRange(10, 110), memoryview(out), if_match="f" * 32))


def test_if_match_fails_once_another_store_rewrites_the_object():
    src, behind_its_back = memory_store(SRC), memory_store(SRC)
    dst = memory_store(DST)

    async def body():
        first = (await put(src, "k", b"a" * 10)).etag
        upload_id = await dst.create_multipart("copy", ObjectHeaders())
        await put(behind_its_back, "k", b"b" * 10)  # same size, new bytes
        with pytest.raises(PreconditionFailed):
            await src.get("k", if_match=first)
        with pytest.raises(PreconditionFailed):
            await src.get_into("k", ByteRange(0, 10), memoryview(bytearray(10)), if_match=first)
        with pytest.raises(PreconditionFailed):
            await dst.copy_object(SRC, "k", "copy", if_match=first)
        with pytest.raises(PreconditionFailed):
            await dst.upload_part_copy(SRC, "k", "copy", upload_id, 1, ByteRange(0, 10), if_match=first)

    run(body())


def test_server_side_copies_between_buckets():
    src, dst = memory_store(SRC), memory_store(DST)
    big, tail = b"p" * (5 * MiB), b"q" * 10
    headers = ObjectHeaders(content_type="text/plain", user_metadata=(("k", "v"),))

    async def body():
        single = await put(src, "s", b"small", headers)
        copied = await dst.copy_object(SRC, "s", "s-copy", if_match=single.etag)
        assert copied.etag == single.etag
        assert (await dst.get("s-copy")).data == b"small"
        assert (await dst.head("s-copy")).headers.content_type == "text/plain"
        with pytest.raises(NotFound):
            await dst.copy_object(SRC, "missing", "x")

        upload_id = await src.create_multipart("m", headers)
        etags = [await src.upload_part("m", upload_id, n, body, md5(body)) for n, body in ((1, big), (2, tail))]
        multi = await src.complete_multipart("m", upload_id, [PartInfo(n, e) for n, e in enumerate(etags, 1)])
        copied = await dst.copy_object(SRC, "m", "m-copy", if_match=multi.etag)
        assert copied.etag == hashlib.md5(big + tail).hexdigest()  # CopyObject writes one part

        upload_id = await dst.create_multipart("parts", headers)
        ranges = [ByteRange(0, 5 * MiB), ByteRange(5 * MiB, 5 * MiB + 10)]
        etags = [await dst.upload_part_copy(SRC, "m", "parts", upload_id, n, r, if_match=multi.etag)
                 for n, r in enumerate(ranges, 1)]
        with pytest.raises(Fatal):  # UploadPartCopy refuses a range past the end (InvalidRange)
            await dst.upload_part_copy(SRC, "m", "parts", upload_id, 3, ByteRange(5 * MiB, 5 * MiB + 11))
        done = await dst.complete_multipart("parts", upload_id, [PartInfo(n, e) for n, e in enumerate(etags, 1)])
        assert done.etag == multi.etag
        assert (await dst.get("parts")).data == big + tail

    run(body())


def test_pages_hold_at_most_1000_entries():
    store = memory_store()
    keys = [f"k{i:04d}" for i in range(1001)]
    for key in keys:
        run(put(store, key))
    page = run(store.list_page("", max_keys=5000))
    assert [o.key for o in page.objects] == keys[:1000] and page.next_token == keys[999]
    page = run(store.list_page("", token=page.next_token, max_keys=5000))
    assert [o.key for o in page.objects] == keys[1000:] and page.next_token == ""


@pytest.mark.parametrize("seed", range(2))
def test_listing_matches_a_reference_on_random_keys(seed):
    rng = random.Random(seed)
    alphabet = ["a", "a-", "a0", "b", "é", "Z", " x", "\U0001F600", "\uff21", "/"]
    keys = utf8_sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(80)})
    store = memory_store()

    def reference(prefix: str, start_after: str, delimiter: str) -> list[str]:
        out: list[str] = []
        for key in keys:
            if key.startswith(prefix) and key.encode() > start_after.encode():
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                entry = key[: cut + len(delimiter)] if cut >= 0 else key
                if not out or out[-1] != entry:
                    out.append(entry)
        return out

    async def body():
        for key in keys:
            await put(store, key)
        for prefix in ["", "a", "a/", "a-", "/", rng.choice(keys)]:
            for start_after in ["", rng.choice(keys), prefix + "a/"]:
                for delimiter in ["", "/", "-"]:
                    for max_keys in (1, 3, 1000):
                        objects, prefixes = await list_all(store, prefix, start_after=start_after,
                                                           delimiter=delimiter, max_keys=max_keys)
                        got = utf8_sorted([o.key for o in objects] + prefixes)
                        assert got == reference(prefix, start_after, delimiter), (prefix, start_after, delimiter)

    run(body())


# -- fault hooks --------------------------------------------------------------------------------------------


def test_fail_n_times_then_succeed():
    store = memory_store()
    run(put(store, "k", b"data"))
    faults = MemoryStore.faults(SRC)
    faults.fail("get", Throttled("slow down", delay_s=1.5, code="SlowDown"), times=2)
    raised = []
    for _ in range(2):
        with pytest.raises(Throttled) as info:
            run(store.get("k"))
        raised.append(info.value)
    assert raised[0] is not raised[1]  # a fresh copy per call
    assert all(e.code == "SlowDown" and e.delay_s == 1.5 for e in raised)
    assert run(store.get("k")).data == b"data"
    assert run(store.head("k")).meta.size == 4  # other operations were never affected
    assert faults.calls["get"] == 3 and faults.calls["head"] == 1


def test_fault_rules_scope_by_key_prefix_and_apply_in_order():
    store, other_bucket = memory_store(SRC), memory_store(DST)
    for key in ("a/1", "b/1"):
        run(put(store, key))
    run(put(other_bucket, "a/1"))
    faults = MemoryStore.faults(SRC)
    faults.fail("head", PermissionDenied("no"), times=1, key_prefix="a/")
    faults.fail("head", NotFound("gone"), times=1, key_prefix="a/")
    assert run(store.head("b/1")).meta.size == 1  # outside the prefix: untouched, nothing used up
    assert run(other_bucket.head("a/1")).meta.size == 1  # another bucket: untouched
    with pytest.raises(PermissionDenied):
        run(store.head("a/1"))
    with pytest.raises(NotFound):  # the second rule waited for the next call
        run(store.head("a/1"))
    assert run(store.head("a/1")).meta.size == 1
    faults.fail("list_page", Transient("boom"), times=None, key_prefix="b/")  # a listing names its prefix
    assert len(run(store.list_page("a/")).objects) == 1
    for _ in range(3):
        with pytest.raises(Transient):
            run(store.list_page("b/"))
    faults.clear()
    assert len(run(store.list_page("b/")).objects) == 1
    with pytest.raises(ValueError):
        faults.fail("gett", Transient("typo"))


def test_delay_is_awaited_not_blocking():
    store = memory_store()
    run(put(store, "k"))
    MemoryStore.faults(SRC).delay("head", 0.1, times=5)

    async def body() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        infos = await asyncio.gather(*(store.head("k") for _ in range(5)))
        assert all(info.meta.size == 1 for info in infos)
        return loop.time() - start

    elapsed = run(body())
    assert 0.1 <= elapsed < 0.35  # five concurrent delays overlap: not 0.5 s
    start = time.monotonic()
    run(store.head("k"))  # the rule was used up
    assert time.monotonic() - start < 0.09


def test_faults_on_multipart_steps():
    store = memory_store()
    MemoryStore.faults(SRC).fail("upload_part", Transient("reset by peer"), times=1)
    MemoryStore.faults(SRC).fail("complete_multipart", Transient("500"), times=1)

    async def body():
        upload_id = await store.create_multipart("m", ObjectHeaders())
        with pytest.raises(Transient):
            await store.upload_part("m", upload_id, 1, b"p", md5(b"p"))
        assert await store.list_parts("m", upload_id) == []  # the failed call staged nothing
        etag = await store.upload_part("m", upload_id, 1, b"p", md5(b"p"))
        with pytest.raises(Transient):
            await store.complete_multipart("m", upload_id, [PartInfo(1, etag)])
        assert (await store.complete_multipart("m", upload_id, [PartInfo(1, etag)])).etag.endswith("-1")

    run(body())


# -- clock --------------------------------------------------------------------------------------------------


def test_last_modified_comes_from_the_bucket_clock_in_whole_seconds():
    now = [1_700_000_000.75]
    MemoryStore.set_clock(SRC, lambda: now[0])
    MemoryStore.set_clock(DST, lambda: 1_800_000_000.0)
    src, dst = memory_store(SRC), memory_store(DST)
    run(put(src, "k"))
    assert run(src.head("k")).meta.mtime == 1_700_000_000.0
    now[0] += 61
    run(put(src, "k2"))
    objects, _ = run(list_all(src, ""))
    assert [o.mtime for o in objects] == [1_700_000_000.0, 1_700_000_061.0]
    run(dst.copy_object(SRC, "k", "k"))
    assert run(dst.head("k")).meta.mtime == 1_800_000_000.0  # a copy is a write at the destination
    MemoryStore.reset(SRC)
    run(put(src, "k"))
    assert abs(run(src.head("k")).meta.mtime - time.time()) < 5  # reset restores time.time
