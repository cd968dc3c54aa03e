"""The store contract: one mixin of tests every backend must pass, run against real local servers.

A concrete class (`class TestX(StoreContract)`) provides a function-scoped `store` fixture. Each test works
under its own unique key prefix (`prefix` fixture), so one bucket serves the whole session. Each test body
runs in one event loop (`run`), which closes the store at the end.

Class attributes say what a backend legitimately does differently; everything else is the contract.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import os
import pickle
import re
import uuid

import pytest

from dth_ray.errors import DthError, NotFound, PreconditionFailed
from dth_ray.model import ByteRange, ObjectHeaders, PartInfo
from dth_ray.stores.base import Lister, RangeReader, Reader, StoreFeatures, Writer

MiB = 1024 * 1024
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
NO_HEADERS = ObjectHeaders()


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def multipart_etag(parts: list[bytes]) -> str:
    """S3's multipart ETag: md5 of the concatenated binary part MD5s, then '-' and the part count."""
    return hashlib.md5(b"".join(md5(p) for p in parts)).hexdigest() + f"-{len(parts)}"


def utf8_sorted(keys) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def contract(fn):
    """Run an `async def test_x(self, store, prefix, ...)` body in a fresh event loop; close the store after."""

    @functools.wraps(fn)
    def wrapper(self, store, prefix, *args, **kwargs):
        self.run(fn(self, store, prefix, *args, **kwargs), store)

    return wrapper


async def list_all(store, prefix: str, **kwargs) -> tuple[list, list[str]]:
    """Every object and common prefix under `prefix`, following tokens (bounded)."""
    objects, prefixes, token = [], [], ""
    for _ in range(10_000):
        page = await store.list_page(prefix, token=token, **kwargs)
        objects += page.objects
        prefixes += page.prefixes
        token = page.next_token
        if not token:
            return objects, prefixes
    raise AssertionError("listing did not end")


class StoreContract:
    """Tests every backend must pass. Subclasses provide a `store` fixture and may adjust the flags below."""

    # The store keeps Content-Type, Cache-Control, ... and user metadata (LocalStore drops them).
    preserves_headers = True
    # HEAD reports the object's ETag (LocalStore reports "" rather than hashing the file).
    head_reports_etag = True
    # Listings report ETags (LocalStore reports "").
    listing_reports_etag = True
    # HEAD and listings report md5-of-md5s-N for multipart objects (rclone reports the full-content MD5).
    multipart_listing_etag_is_md5_of_md5s = True
    # The server checks Content-MD5 and rejects a corrupted body (moto 5.2.5 does not; AWS does: BadDigest).
    server_verifies_md5 = True
    # What upload_part raises once the upload was aborted (AWS: 404 NoSuchUpload; moto: a 500 from a KeyError).
    gone_upload_part_error: type[DthError] = NotFound
    # The server answers 412 to a GET whose If-Match differs (rclone 1.75 ignores If-Match on GET).
    server_checks_if_match = True
    # The store reads into a caller's buffer (RangeReader): ranges and whole objects (S3 family, memory).
    reads_into_buffers = True

    @staticmethod
    def run(coro, store=None):
        """Run `coro` to completion in a new event loop, then close `store` inside that loop."""

        async def main():
            try:
                return await coro
            finally:
                if store is not None:
                    await store.aclose()

        return asyncio.run(main())

    @pytest.fixture
    def prefix(self, request) -> str:
        """A key prefix no other test uses: 'contract/<test name>-<random>/'."""
        name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:48]
        return f"contract/{name}-{uuid.uuid4().hex[:8]}/"

    async def _put(self, store, key: str, data: bytes, headers: ObjectHeaders = NO_HEADERS):
        return await store.put(key, data, headers, md5(data))

    # -- shape ----------------------------------------------------------------------------------------------

    def test_implements_protocols(self, store):
        assert isinstance(store, Lister)
        assert isinstance(store, Reader)
        assert isinstance(store, Writer)
        assert isinstance(store.features, StoreFeatures)
        assert store.features.min_part_size_bytes <= store.features.max_part_size_bytes

    # -- objects --------------------------------------------------------------------------------------------

    @contract
    async def test_put_get_head_round_trip(self, store, prefix):
        key = prefix + "dir/object.txt"
        data = gzip.compress(b"hello contract " * 100)
        headers = ObjectHeaders(
            content_type="text/plain; charset=utf-8",
            content_encoding="gzip",
            content_language="en",
            content_disposition='attachment; filename="object.txt"',
            cache_control="max-age=60",
            user_metadata=(("color", "blue"), ("owner-id", "42")),
        )
        put = await store.put(key, data, headers, md5(data))
        if store.features.single_put_etag_is_md5:
            assert put.etag == hashlib.md5(data).hexdigest()

        got = await store.get(key)
        assert got.data == data
        assert got.info.meta.key == key
        assert got.info.meta.size == len(data)
        assert got.info.meta.mtime > 0
        if store.features.single_put_etag_is_md5:
            assert got.info.meta.etag == hashlib.md5(data).hexdigest()

        head = await store.head(key)
        assert head.meta.size == len(data)
        assert head.meta.mtime > 0
        if self.head_reports_etag:
            assert head.meta.etag == put.etag

        if self.preserves_headers:
            for info in (got.info, head):
                h = info.headers
                assert h.content_type == headers.content_type
                assert h.content_encoding == headers.content_encoding
                assert h.content_language == headers.content_language
                assert h.content_disposition == headers.content_disposition
                assert h.cache_control == headers.cache_control
                # Some servers change the case of metadata names (rclone Title-Cases them).
                assert {k.lower(): v for k, v in h.user_metadata} == dict(headers.user_metadata)

    @contract
    async def test_overwrite_replaces_content(self, store, prefix):
        key = prefix + "again"
        await self._put(store, key, b"first version")
        await self._put(store, key, b"second")
        assert (await store.get(key)).data == b"second"
        objects, _ = await list_all(store, prefix)
        assert [(o.key, o.size) for o in objects] == [(key, 6)]

    @contract
    async def test_ranged_get(self, store, prefix):
        key = prefix + "ranged.bin"
        data = os.urandom(100_000)
        put = await self._put(store, key, data)
        for start, end in ((0, 1), (1000, 5000), (len(data) - 10, len(data)), (0, len(data))):
            got = await store.get(key, ByteRange(start, end))
            assert got.data == data[start:end], (start, end)
            assert got.info.meta.size == len(data), "meta.size is the whole object's size"
        got = await store.get(key, ByteRange(10, 20), if_match=put.etag)
        assert got.data == data[10:20]

    @contract
    async def test_whole_object_read_into_a_buffer(self, store, prefix):
        """get_into with no range: the whole object lands in the caller's buffer (no body of its own); an
        object that is no longer the buffer's length changed since it was listed (PreconditionFailed, at
        once, with or without If-Match: a server that ignores If-Match still sends another length)."""
        assert isinstance(store, RangeReader) == self.reads_into_buffers
        if not self.reads_into_buffers:
            return
        key = prefix + "whole.bin"
        data = os.urandom(300_000)
        put = await self._put(store, key, data)
        out = bytearray(len(data))
        info = await store.get_into(key, None, memoryview(out), if_match=put.etag)
        assert out == data and info.meta.size == len(data) and info.meta.etag == put.etag
        empty = prefix + "empty.bin"
        await self._put(store, empty, b"")
        assert (await store.get_into(empty, None, memoryview(bytearray()))).meta.size == 0
        await self._put(store, key, data[:1000])
        for if_match in (put.etag, ""):
            with pytest.raises(PreconditionFailed):
                await store.get_into(key, None, memoryview(bytearray(len(data))), if_match=if_match)

    @contract
    async def test_zero_byte_object(self, store, prefix):
        key = prefix + "empty"
        put = await self._put(store, key, b"")
        if store.features.single_put_etag_is_md5:
            assert put.etag == EMPTY_MD5
        assert (await store.get(key)).data == b""
        assert (await store.head(key)).meta.size == 0
        objects, _ = await list_all(store, prefix)
        assert [(o.key, o.size) for o in objects] == [(key, 0)]

    @contract
    async def test_odd_keys(self, store, prefix):
        names = [
            "ünïcødé/日本語-😀.txt",
            "space dir/with space.txt",
            "plus+sign",
            "percent%20not%2Fdecoded%",
            "question?mark",
            "amp&ersand=1&b=2",
            "mixed +%?&#=;,'!()*@$ end",
        ]
        keys = [prefix + name for name in names]
        for key in keys:
            await self._put(store, key, key.encode())
        for key in keys:
            assert (await store.get(key)).data == key.encode(), key
            assert (await store.head(key)).meta.size == len(key.encode()), key
        objects, _ = await list_all(store, prefix)
        assert [o.key for o in objects] == utf8_sorted(keys)
        for key in keys:
            await store.delete(key)
        objects, _ = await list_all(store, prefix)
        assert objects == []

    @contract
    async def test_missing_key_is_not_found(self, store, prefix):
        with pytest.raises(NotFound):
            await store.head(prefix + "missing")
        with pytest.raises(NotFound):
            await store.get(prefix + "missing")
        with pytest.raises(NotFound):
            await store.get(prefix + "missing", ByteRange(0, 10))

    @contract
    async def test_if_match_mismatch_is_precondition_failed(self, store, prefix):
        key = prefix + "guarded"
        data = b"guarded content"
        put = await self._put(store, key, data)
        assert (await store.get(key, if_match=put.etag)).data == data
        if self.server_checks_if_match:
            with pytest.raises(PreconditionFailed):
                await store.get(key, if_match="0" * 32)
            return
        try:
            await store.get(key, if_match="0" * 32)
        except PreconditionFailed:
            return  # the store compares the response's ETag itself
        pytest.xfail("the server ignores If-Match and the store does not compare the response ETag")

    @contract
    async def test_put_with_wrong_md5_is_rejected(self, store, prefix):
        if not self.server_verifies_md5:
            pytest.skip("this server stores a body whose Content-MD5 does not match")
        key = prefix + "corrupt"
        with pytest.raises(DthError):
            await store.put(key, b"the real body", ObjectHeaders(), md5(b"another body"))
        with pytest.raises(NotFound):
            await store.head(key)

    @contract
    async def test_delete(self, store, prefix):
        await store.delete(prefix + "never-existed")
        key = prefix + "d/doomed"
        await self._put(store, key, b"x")
        await store.delete(key)
        with pytest.raises(NotFound):
            await store.head(key)
        await store.delete(key)
        objects, _ = await list_all(store, prefix)
        assert objects == []

    # -- listing --------------------------------------------------------------------------------------------

    @contract
    async def test_list_pagination(self, store, prefix):
        keys = [prefix + f"k{i}" for i in range(5)]
        for key in keys:
            await self._put(store, key, key.encode())

        page = await store.list_page(prefix, max_keys=2)
        assert [o.key for o in page.objects] == keys[:2]
        assert page.next_token
        page = await store.list_page(prefix, max_keys=2, token=page.next_token)
        assert [o.key for o in page.objects] == keys[2:4]
        assert page.next_token
        page = await store.list_page(prefix, max_keys=2, token=page.next_token)
        assert [o.key for o in page.objects] == keys[4:]
        assert page.next_token == ""

        page = await store.list_page(prefix, max_keys=2, start_after=keys[1])
        assert [o.key for o in page.objects] == keys[2:4]
        page = await store.list_page(prefix, max_keys=2, token=page.next_token)
        assert [o.key for o in page.objects] == keys[4:]
        assert page.next_token == ""

        page = await store.list_page(prefix, start_after=keys[-1])
        assert page.objects == [] and page.next_token == ""

        objects, _ = await list_all(store, prefix)
        assert [(o.key, o.size) for o in objects] == [(k, len(k.encode())) for k in keys]
        if self.listing_reports_etag:
            assert [o.etag for o in objects] == [hashlib.md5(k.encode()).hexdigest() for k in keys]
        assert all(o.mtime > 0 for o in objects)

    @contract
    async def test_list_empty_prefix(self, store, prefix):
        page = await store.list_page(prefix + "nothing-here/")
        assert page.objects == [] and page.prefixes == [] and page.next_token == ""

    @contract
    async def test_prefix_is_a_plain_string(self, store, prefix):
        names = ["fo", "foo-bar/y", "foo.txt", "foo/x", "foobar", "fop"]
        for name in names:
            await self._put(store, prefix + name, b"x")
        objects, _ = await list_all(store, prefix + "foo")
        assert [o.key for o in objects] == [prefix + n for n in ("foo-bar/y", "foo.txt", "foo/x", "foobar")]
        objects, _ = await list_all(store, prefix + "foo/")
        assert [o.key for o in objects] == [prefix + "foo/x"]

    @contract
    async def test_delimiter_listing(self, store, prefix):
        names = ["a-b", "a/1", "a/2", "b", "c/d/e", "c/f"]
        for name in names:
            await self._put(store, prefix + name, b"x")
        page = await store.list_page(prefix, delimiter="/")
        assert [o.key for o in page.objects] == [prefix + "a-b", prefix + "b"]
        assert page.prefixes == [prefix + "a/", prefix + "c/"]
        assert page.next_token == ""

        page = await store.list_page(prefix + "c/", delimiter="/")
        assert [o.key for o in page.objects] == [prefix + "c/f"]
        assert page.prefixes == [prefix + "c/d/"]

        objects, prefixes = await list_all(store, prefix, delimiter="/", max_keys=1)
        assert [o.key for o in objects] == [prefix + "a-b", prefix + "b"]
        assert prefixes == [prefix + "a/", prefix + "c/"]

    @contract
    async def test_listing_sorts_by_utf8_bytes(self, store, prefix):
        # 'a/b' sorts between 'a-b' and 'a0' ('-' < '/' < '0'); U+FF21 sorts before U+1F600 in UTF-8
        # (but after it in UTF-16); upper case sorts before lower case; space before '-'.
        names = ["a0", "a\U0001F600", "a/b", "a-b", "A", "aé", "a\uff21", "a b", "a~", "b/c/d"]
        keys = [prefix + name for name in names]
        for key in keys:
            await self._put(store, key, b"x")
        expected = utf8_sorted(keys)
        objects, _ = await list_all(store, prefix)
        assert [o.key for o in objects] == expected
        objects, _ = await list_all(store, prefix, max_keys=3)
        assert [o.key for o in objects] == expected
        page = await store.list_page(prefix, start_after=prefix + "a-b")
        assert [o.key for o in page.objects] == [k for k in expected if k.encode() > (prefix + "a-b").encode()]

    # -- multipart ------------------------------------------------------------------------------------------

    @contract
    async def test_multipart_upload(self, store, prefix):
        key = prefix + "big/object.bin"
        parts = [os.urandom(5 * MiB), os.urandom(123_457)]
        headers = ObjectHeaders(content_type="application/x-contract", user_metadata=(("origin", "test"),))
        upload_id = await store.create_multipart(key, headers)
        assert upload_id
        etags = []
        for number, body in enumerate(parts, start=1):
            etag = await store.upload_part(key, upload_id, number, body, md5(body))
            assert etag == hashlib.md5(body).hexdigest()
            etags.append(etag)

        listed = await store.list_parts(key, upload_id)
        assert [(p.part_number, p.etag, p.size) for p in listed] == [
            (1, etags[0], len(parts[0])), (2, etags[1], len(parts[1]))]
        assert any(u.key == key and u.upload_id == upload_id for u in await store.list_uploads(prefix))

        done = await store.complete_multipart(key, upload_id, [PartInfo(2, etags[1]), PartInfo(1, etags[0])])
        assert done.etag.endswith("-2")
        if store.features.multipart_etag_is_md5_of_md5s:
            assert done.etag == multipart_etag(parts)

        got = await store.get(key)
        assert got.data == b"".join(parts)
        head = await store.head(key)
        assert head.meta.size == sum(len(p) for p in parts)
        objects, _ = await list_all(store, prefix)
        assert [(o.key, o.size) for o in objects] == [(key, head.meta.size)]
        if self.multipart_listing_etag_is_md5_of_md5s:
            if self.head_reports_etag:
                assert head.meta.etag == done.etag
            if self.listing_reports_etag:
                assert objects[0].etag == done.etag
        if self.preserves_headers:
            assert head.headers.content_type == "application/x-contract"
            assert {k.lower(): v for k, v in head.headers.user_metadata} == {"origin": "test"}
        assert all(u.upload_id != upload_id for u in await store.list_uploads(prefix))

    @contract
    async def test_multipart_abort(self, store, prefix):
        key = prefix + "aborted.bin"
        upload_id = await store.create_multipart(key, ObjectHeaders())
        body = b"part one"
        await store.upload_part(key, upload_id, 1, body, md5(body))
        assert any(u.key == key and u.upload_id == upload_id for u in await store.list_uploads(prefix))
        assert [p.part_number for p in await store.list_parts(key, upload_id)] == [1]

        await store.abort_multipart(key, upload_id)
        assert all(u.upload_id != upload_id for u in await store.list_uploads(prefix))
        with pytest.raises(NotFound):
            await store.list_parts(key, upload_id)
        with pytest.raises(self.gone_upload_part_error):
            await store.upload_part(key, upload_id, 2, body, md5(body))
        await store.abort_multipart(key, upload_id)  # already gone: not an error
        with pytest.raises(NotFound):
            await store.head(key)

    @contract
    async def test_list_uploads_when_there_are_none(self, store, prefix):
        assert await store.list_uploads(prefix) == []

    @contract
    async def test_upload_part_with_wrong_md5_is_rejected(self, store, prefix):
        if not self.server_verifies_md5:
            pytest.skip("this server stores a part whose Content-MD5 does not match")
        key = prefix + "bad-part.bin"
        upload_id = await store.create_multipart(key, ObjectHeaders())
        try:
            with pytest.raises(DthError):
                await store.upload_part(key, upload_id, 1, b"the real part", md5(b"another part"))
        finally:
            await store.abort_multipart(key, upload_id)

    @contract
    async def test_unknown_upload_is_not_found(self, store, prefix):
        with pytest.raises(NotFound):
            await store.list_parts(prefix + "nope", "0123456789abcdef0123456789abcdef")

    # -- pickling -------------------------------------------------------------------------------------------

    @contract
    async def test_pickle_round_trip_after_use(self, store, prefix):
        key = prefix + "pickled"
        await self._put(store, key, b"before pickling")
        clone = pickle.loads(pickle.dumps(store))
        assert type(clone) is type(store)
        assert clone.features == store.features
        try:
            assert (await clone.get(key)).data == b"before pickling"
            await self._put(clone, key, b"written by the clone")
        finally:
            await clone.aclose()
        assert (await store.get(key)).data == b"written by the clone"
