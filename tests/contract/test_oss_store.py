"""OssStore against the protocol-level OSS test endpoint (real HTTP, V4 signatures checked)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import pickle
import socket
import time
import uuid

import oss2
import pytest

from dth_ray.checksums import crc64ecma
from dth_ray.config import StoreConfig, StoreType
from dth_ray.errors import (
    ConfigError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    Transient,
    Unreadable,
)
from dth_ray.model import ByteRange, ObjectHeaders, PartInfo
from dth_ray.stores import open_store
from dth_ray.stores.oss import FEATURES, OssStore, oss_endpoint, oss_region
from tests.contract.suite import StoreContract
from tests.servers.oss_server import OssTestServer

KEY_ID = "LTAI5tDthRayTestKey01"
SECRET = "dth-ray-test-secret-0123456789abcdef"
REGION = "cn-hangzhou"
STS_KEY_ID, STS_SECRET, STS_TOKEN = "STS.NUxyzTempKey01", "sts-temp-secret-abcdef", "CAIS-session-token+/="
ODD_KEYS = ["ünïcødé/文件.txt", "with space.bin", "plus+sign", "per%cent", "ques?tion", "amp&ersand",
            "double//slash", "trailing/", "a=b;c,d", "tab\there", "emoji-😀"]


def run(coro):
    return asyncio.run(coro)


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


@pytest.fixture(scope="module")
def server():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OSSTEST_ACCESS_KEY_ID", KEY_ID)
        mp.setenv("OSSTEST_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("OSSBAD_ACCESS_KEY_ID", KEY_ID)
        mp.setenv("OSSBAD_SECRET_ACCESS_KEY", "not-the-secret-at-all-000")
        mp.setenv("OSSNOKEY_ACCESS_KEY_ID", "LTAI5tNoSuchKeyId9999")
        mp.setenv("OSSNOKEY_SECRET_ACCESS_KEY", SECRET)
        for name, token in (("OSSSTS", STS_TOKEN), ("OSSSTSBAD", "expired-token")):
            mp.setenv(f"{name}_ACCESS_KEY_ID", STS_KEY_ID)
            mp.setenv(f"{name}_SECRET_ACCESS_KEY", STS_SECRET)
            mp.setenv(f"{name}_SESSION_TOKEN", token)
        with OssTestServer(KEY_ID, SECRET, region=REGION) as srv:
            srv.add_key(STS_KEY_ID, STS_SECRET, STS_TOKEN)
            yield srv


@pytest.fixture
def bucket(server) -> str:
    name = f"dth-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    return name


def make_store(server: OssTestServer, bucket: str, credentials: str = "env:OSSTEST", **kw) -> OssStore:
    cfg = StoreConfig(type=StoreType.oss, bucket=bucket, endpoint=server.endpoint, region=REGION,
                      credentials=credentials, **kw)
    store = open_store(cfg)
    assert isinstance(store, OssStore)
    return store


@pytest.fixture
def store(server, bucket) -> OssStore:
    return make_store(server, bucket)


async def list_all(store: OssStore, prefix: str = "", **kw) -> tuple[list[str], list[str], int]:
    keys: list[str] = []
    prefixes: list[str] = []
    token, pages = "", 0
    for _ in range(1000):
        page = await store.list_page(prefix, token=token, **kw)
        pages += 1
        keys += [o.key for o in page.objects]
        prefixes += page.prefixes
        token = page.next_token
        if not token:
            break
    return keys, prefixes, pages


class TestOssStoreContract(StoreContract):
    """The shared store contract against OssStore and the OSS test endpoint (one bucket for the class)."""

    reads_into_buffers = False  # oss2 hands each body over as its own bytes

    @pytest.fixture(scope="class")
    def contract_bucket(self, server) -> str:
        server.create_bucket("dth-contract")
        return "dth-contract"

    @pytest.fixture
    def store(self, server, contract_bucket) -> OssStore:
        return make_store(server, contract_bucket)


# -- environment and configuration ----------------------------------------------------------------------

def test_features_are_data():
    assert FEATURES.name == "oss"
    assert FEATURES.min_part_size_bytes == 100 * 1024
    assert FEATURES.checksum_kinds == ("crc64ecma",)
    assert not FEATURES.multipart_etag_is_md5_of_md5s
    assert "Archive" in FEATURES.unreadable_storage_classes


def test_region_and_endpoint_normalised():
    cfg = StoreConfig(type=StoreType.oss, bucket="b", region="oss-cn-hangzhou")
    assert oss_region(cfg) == "cn-hangzhou"
    assert oss_endpoint(cfg, "cn-hangzhou") == "https://oss-cn-hangzhou.aliyuncs.com"
    cfg.internal = True
    assert oss_endpoint(cfg, "cn-hangzhou") == "https://oss-cn-hangzhou-internal.aliyuncs.com"
    cfg = StoreConfig(type=StoreType.oss, bucket="b", endpoint="oss-cn-beijing-internal.aliyuncs.com")
    assert oss_region(cfg) == "cn-beijing"
    assert oss_endpoint(cfg, "cn-beijing") == "https://oss-cn-beijing-internal.aliyuncs.com"
    with pytest.raises(ConfigError):
        oss_region(StoreConfig(type=StoreType.oss, bucket="b", endpoint="http://127.0.0.1:9"))


def test_pickle_round_trip_before_and_after_use(server, bucket):
    store = make_store(server, bucket)
    clone = pickle.loads(pickle.dumps(store))
    run(store.put("k", b"data", ObjectHeaders(), md5(b"data")))
    clone2 = pickle.loads(pickle.dumps(store))  # a used store still pickles as its config
    assert clone._bucket is None and clone2._bucket is None
    assert run(clone2.get("k")).data == b"data"
    assert run(clone.head("k")).meta.size == 4
    assert SECRET.encode() not in pickle.dumps(store)


def test_aclose_then_reuse(store):
    run(store.put("k", b"x", ObjectHeaders(), md5(b"x")))
    run(store.aclose())
    assert run(store.get("k")).data == b"x"
    run(store.aclose())


# -- reads ---------------------------------------------------------------------------------------------

def test_put_head_get_round_trip_metadata(store):
    data = b"hello oss" * 100
    headers = ObjectHeaders(
        content_type="text/plain", content_encoding="identity", content_language="zh-CN",
        content_disposition='attachment; filename="a.txt"', cache_control="max-age=60",
        expires="Wed, 21 Oct 2026 07:28:00 GMT", user_metadata=(("alpha", "1"), ("zeta", "two words")),
    )
    put = run(store.put("dir/obj.txt", data, headers, md5(data)))
    assert put.etag == hashlib.md5(data).hexdigest()  # OSS's uppercase ETag, lowercased
    assert put.checksum == f"crc64ecma:{crc64ecma(data)}"
    head = run(store.head("dir/obj.txt"))
    assert head.headers == headers
    assert head.meta.size == len(data) and head.meta.etag == put.etag
    assert head.meta.checksum == put.checksum and head.meta.storage_class == "Standard"
    assert abs(head.meta.mtime - time.time()) < 60
    got = run(store.get("dir/obj.txt"))
    assert got.data == data and got.info == head


def test_zero_byte_object(store):
    put = run(store.put("empty", b"", ObjectHeaders(), md5(b"")))
    assert put.etag == hashlib.md5(b"").hexdigest()
    assert run(store.get("empty")).data == b""
    empty_range = run(store.get("empty", ByteRange(0, 0), if_match=put.etag))
    assert empty_range.data == b"" and empty_range.info.meta.size == 0
    page = run(store.list_page(""))
    assert [(o.key, o.size) for o in page.objects] == [("empty", 0)]


def test_ranged_get_reports_whole_size(store):
    data = bytes(range(256)) * 40
    run(store.put("r", data, ObjectHeaders(), md5(data)))
    part = run(store.get("r", ByteRange(100, 1100)))
    assert part.data == data[100:1100]
    assert part.info.meta.size == len(data)
    assert part.info.meta.checksum == f"crc64ecma:{crc64ecma(data)}"
    tail = run(store.get("r", ByteRange(len(data) - 10, len(data))))
    assert tail.data == data[-10:]


def test_if_match_guards_get(store):
    run(store.put("g", b"v1", ObjectHeaders(), md5(b"v1")))
    listed = run(store.list_page("")).objects[0]
    assert listed.etag == listed.etag.lower()
    assert run(store.get("g", if_match=listed.etag)).data == b"v1"
    assert run(store.get("g", ByteRange(0, 1), if_match=listed.etag)).data == b"v"
    run(store.put("g", b"v2", ObjectHeaders(), md5(b"v2")))
    with pytest.raises(PreconditionFailed):
        run(store.get("g", if_match=listed.etag))
    with pytest.raises(PreconditionFailed):
        run(store.get("g", ByteRange(0, 1), if_match=listed.etag))
    with pytest.raises(PreconditionFailed):
        run(store.get("g", ByteRange(0, 0), if_match=listed.etag))


def test_corrupted_body_fails_crc_check(server, store):
    data = b"precious bytes" * 1000
    run(store.put("c", data, ObjectHeaders(), md5(data)))
    server.corrupt_next_get()
    with pytest.raises(IntegrityError):
        run(store.get("c"))
    server.corrupt_next_get()
    with pytest.raises(IntegrityError):  # a range covering the whole object is checked too
        run(store.get("c", ByteRange(0, len(data))))
    assert run(store.get("c")).data == data


def test_truncated_body_is_retryable(server, store):
    data = b"0123456789" * 10_000
    run(store.put("cut", data, ObjectHeaders(), md5(data)))
    for byte_range in (None, ByteRange(10, 50_000)):
        server.corrupt_next_get(truncate=True)
        with pytest.raises((Transient, IntegrityError)) as info:
            run(store.get("cut", byte_range))
        assert info.value.retryable
    assert run(store.get("cut")).data == data


def test_gzip_encoded_object_is_read_as_stored(store):
    data = gzip.compress(b"compressible " * 1000)
    run(store.put("z.gz", data, ObjectHeaders(content_encoding="gzip"), md5(data)))
    assert run(store.get("z.gz")).data == data
    assert run(store.get("z.gz", ByteRange(0, 10))).data == data[:10]


def test_archive_object_is_unreadable(server, bucket, store):
    server.put_object(bucket, "cold", b"frozen", storage_class="Archive")
    head = run(store.head("cold"))
    assert head.meta.storage_class == "Archive"
    assert [o.storage_class for o in run(store.list_page("")).objects] == ["Archive"]
    with pytest.raises(Unreadable):
        run(store.get("cold"))


def test_missing_object_and_bucket(server, store):
    with pytest.raises(NotFound):
        run(store.get("nope"))
    with pytest.raises(NotFound):
        run(store.head("nope"))
    with pytest.raises(NotFound):
        run(make_store(server, "no-such-bucket").list_page(""))


# -- credentials and errors ---------------------------------------------------------------------------

def test_wrong_secret_is_permission_denied(server, bucket):
    server.put_object(bucket, "k", b"x")
    bad = make_store(server, bucket, credentials="env:OSSBAD")
    for call in (bad.list_page(""), bad.get("k"), bad.head("k"), bad.put("n", b"", ObjectHeaders(), md5(b""))):
        with pytest.raises(PermissionDenied) as info:
            run(call)
        message = str(info.value)
        assert "403" in message and "SignatureDoesNotMatch" in message
        assert SECRET not in message and "not-the-secret" not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(PermissionDenied, match="InvalidAccessKeyId"):
        run(make_store(server, bucket, credentials="env:OSSNOKEY").list_page(""))


def test_sts_credentials_send_the_security_token(server, bucket):
    server.put_object(bucket, "k", b"sts")
    assert run(make_store(server, bucket, credentials="env:OSSSTS").get("k")).data == b"sts"
    with pytest.raises(PermissionDenied, match="InvalidSecurityToken"):
        run(make_store(server, bucket, credentials="env:OSSSTSBAD").get("k"))


def test_anonymous_access_only_to_public_buckets(server, bucket):
    server.put_object(bucket, "k", b"private")
    with pytest.raises(PermissionDenied):
        run(make_store(server, bucket, credentials="anonymous").get("k"))
    public = f"pub-{uuid.uuid4().hex[:10]}"
    server.create_bucket(public, public=True)
    server.put_object(public, "k", b"open")
    anon = make_store(server, public, credentials="anonymous")
    assert run(anon.get("k")).data == b"open"
    assert [o.key for o in run(anon.list_page("")).objects] == ["k"]
    with pytest.raises(PermissionDenied):
        run(anon.put("w", b"", ObjectHeaders(), md5(b"")))


def test_throttling_and_server_errors_are_retryable(server, store):
    run(store.put("t", b"x", ObjectHeaders(), md5(b"x")))
    server.inject_error("GetObject", 503, "ServerBusy", headers={"x-oss-qos-delay-time": "250"})
    with pytest.raises(Throttled) as info:
        run(store.get("t"))
    assert info.value.delay_s == pytest.approx(0.25) and info.value.retryable
    server.inject_error("ListObjectsV2", 500, "InternalError")
    with pytest.raises(Transient, match="InternalError"):
        run(store.list_page(""))
    assert run(store.get("t")).data == b"x"


def test_unresponsive_endpoint_times_out(bucket):
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        cfg = StoreConfig(type=StoreType.oss, bucket=bucket, region=REGION, credentials="env:OSSTEST",
                          endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}",
                          connect_timeout_s=0.5, read_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(Transient):
            run(OssStore(cfg).head("k"))
        assert time.monotonic() - started < 5


# -- listings ------------------------------------------------------------------------------------------

def test_listing_pages_in_utf8_order(server, bucket, store):
    keys = [f"k{i:03d}" for i in range(25)] + ["Z", "é", "~tilde", "\u00ff", "\U0001f600"]
    for key in keys:
        server.put_object(bucket, key, key.encode())
    listed, prefixes, pages = run(list_all(store, max_keys=7))
    assert listed == sorted(keys, key=lambda k: k.encode()) and prefixes == []
    assert pages == 5
    first = run(store.list_page("", max_keys=1000)).objects
    assert first[0].etag == hashlib.md5(first[0].key.encode()).hexdigest()
    assert first[0].size == len(first[0].key.encode()) and first[0].mtime > 0


def test_listing_with_delimiter_and_start_after(server, bucket, store):
    for key in ["a/1", "a/2", "b/1", "c", "d/x/y", "e"]:
        server.put_object(bucket, key, b"")
    page = run(store.list_page("", delimiter="/"))
    assert [o.key for o in page.objects] == ["c", "e"]
    assert page.prefixes == ["a/", "b/", "d/"] and page.next_token == ""
    keys, prefixes, pages = run(list_all(store, delimiter="/", max_keys=1))
    assert (keys, prefixes, pages) == (["c", "e"], ["a/", "b/", "d/"], 5)
    assert [o.key for o in run(store.list_page("", start_after="b/1")).objects] == ["c", "d/x/y", "e"]
    assert [o.key for o in run(store.list_page("a/", start_after="a/1")).objects] == ["a/2"]
    keys, _, _ = run(list_all(store, start_after="a/2", max_keys=2))
    assert keys == ["b/1", "c", "d/x/y", "e"]
    assert run(store.list_page("d/", delimiter="/")).prefixes == ["d/x/"]


def test_prefix_is_a_plain_string(server, bucket, store):
    for key in ["foo", "foobar", "foo/bar", "fo", "fop"]:
        server.put_object(bucket, key, b"")
    assert [o.key for o in run(store.list_page("foo")).objects] == ["foo", "foo/bar", "foobar"]
    assert run(store.list_page("nothing")).objects == []


def test_odd_keys_round_trip(server, bucket, store):
    for key in ODD_KEYS:
        run(store.put(key, key.encode(), ObjectHeaders(), md5(key.encode())))
    keys, _, _ = run(list_all(store, max_keys=3))
    assert keys == sorted(ODD_KEYS, key=lambda k: k.encode())
    for key in ODD_KEYS:
        assert server.get_object_bytes(bucket, key) == key.encode()
        assert run(store.get(key)).data == key.encode()
        assert run(store.get(key, ByteRange(1, 3))).data == key.encode()[1:3]
        assert run(store.head(key)).meta.key == key
    assert [o.key for o in run(store.list_page("per%")).objects] == ["per%cent"]
    assert [o.key for o in run(store.list_page("plus+")).objects] == ["plus+sign"]
    assert run(store.list_page("double/", delimiter="/")).prefixes == ["double//"]
    for key in ODD_KEYS:
        run(store.delete(key))
    assert run(store.list_page("")).objects == []


def test_concurrent_requests(store):
    async def many():
        blobs = {f"p/{i}": bytes([i]) * (i + 1) for i in range(40)}
        await asyncio.gather(*(store.put(k, v, ObjectHeaders(), md5(v)) for k, v in blobs.items()))
        got = await asyncio.gather(*(store.get(k) for k in blobs))
        assert [g.data for g in got] == list(blobs.values())

    run(many())


# -- writes --------------------------------------------------------------------------------------------

def test_put_with_wrong_md5_is_rejected(store):
    with pytest.raises(IntegrityError, match="InvalidDigest"):
        run(store.put("bad", b"payload", ObjectHeaders(), md5(b"other")))
    with pytest.raises(NotFound):
        run(store.head("bad"))


def test_delete_missing_is_not_an_error(store):
    run(store.delete("never-existed"))


def test_multipart_upload_lifecycle(server, bucket, store):
    part1, part2 = b"a" * (100 * 1024), b"tail"
    headers = ObjectHeaders(content_type="application/x-test", user_metadata=(("src", "oss"),))
    upload_id = run(store.create_multipart("big/object", headers))
    assert [(u.key, u.upload_id) for u in run(store.list_uploads("big/"))] == [("big/object", upload_id)]
    assert run(store.list_uploads("other/")) == []
    etag1 = run(store.upload_part("big/object", upload_id, 1, part1, md5(part1)))
    with pytest.raises(IntegrityError):
        run(store.upload_part("big/object", upload_id, 2, part2, md5(b"not the part")))
    etag2 = run(store.upload_part("big/object", upload_id, 2, part2, md5(part2)))
    assert etag1 == hashlib.md5(part1).hexdigest()
    parts = run(store.list_parts("big/object", upload_id))
    assert parts == [PartInfo(1, etag1, len(part1)), PartInfo(2, etag2, len(part2))]
    done = run(store.complete_multipart("big/object", upload_id, list(reversed(parts))))
    assert done.etag.endswith("-2") and done.etag == done.etag.lower()
    assert done.checksum == f"crc64ecma:{crc64ecma(part1 + part2)}"
    got = run(store.get("big/object"))
    assert got.data == part1 + part2 and got.info.headers == headers
    assert got.info.meta.etag == done.etag and got.info.meta.etag_is_multipart
    assert run(store.list_uploads("")) == []
    with pytest.raises(NotFound):
        run(store.list_parts("big/object", upload_id))


def test_multipart_abort_and_gone_upload(server, bucket, store):
    upload_id = run(store.create_multipart("aborted", ObjectHeaders()))
    run(store.upload_part("aborted", upload_id, 1, b"x", md5(b"x")))
    run(store.abort_multipart("aborted", upload_id))
    run(store.abort_multipart("aborted", upload_id))  # already gone: not an error
    assert server.upload_ids(bucket) == []
    with pytest.raises(NotFound):
        run(store.upload_part("aborted", upload_id, 2, b"y", md5(b"y")))
    with pytest.raises(NotFound):
        run(store.list_parts("aborted", upload_id))
    with pytest.raises(NotFound):
        run(store.complete_multipart("aborted", upload_id, [PartInfo(1, hashlib.md5(b"x").hexdigest())]))


def test_many_uploads_and_parts_paginate(store):
    ids = [run(store.create_multipart(f"m/{i:02d}", ObjectHeaders())) for i in range(3)]
    assert [u.upload_id for u in run(store.list_uploads("m/"))] == ids

    async def upload_many():  # more parts than one ListParts page (1000) holds
        await asyncio.gather(*(store.upload_part("m/00", ids[0], n, b"p", md5(b"p")) for n in range(1, 1002)))

    run(upload_many())
    assert [p.part_number for p in run(store.list_parts("m/00", ids[0]))] == list(range(1, 1002))


# -- the endpoint itself, through unmodified oss2 -----------------------------------------------------

def test_endpoint_speaks_oss_to_plain_oss2(server, bucket):
    v1 = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), server.endpoint, bucket)
    v4 = oss2.Bucket(oss2.AuthV4(KEY_ID, SECRET), server.endpoint, bucket, region=REGION)
    data = b"both signature versions"
    result = v1.put_object("v1 key+%", data, headers={"x-oss-meta-who": "v1"})  # oss2 checks the CRC
    assert result.etag == hashlib.md5(data).hexdigest().upper()
    listing = v4.list_objects_v2(max_keys=10)
    info = listing.object_list[0]
    assert (info.key, info.type, info.size, info.etag) == ("v1 key+%", "Normal", len(data), result.etag)
    assert [o.key for o in oss2.ObjectIterator(v1)] == ["v1 key+%"]  # ListObjects (v1) too
    got = v4.get_object("v1 key+%", byte_range=(0, 3))
    assert (got.status, got.read(), got.headers["Content-Range"]) == (206, b"both", f"bytes 0-3/{len(data)}")
    assert v4.head_object("v1 key+%").headers["x-oss-meta-who"] == "v1"
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        v4.get_object("v1 key+%", headers={"If-Match": '"0000"'})
    with pytest.raises(oss2.exceptions.InvalidDigest):
        v4.put_object("x", b"abc", headers={"Content-MD5": base64.b64encode(md5(b"abd")).decode()})
    for auth in (oss2.Auth(KEY_ID, "wrong-secret-123456"), oss2.AuthV4(KEY_ID, "wrong-secret-123456")):
        with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
            oss2.Bucket(auth, server.endpoint, bucket, region=REGION).get_object("v1 key+%")
    other_region = oss2.Bucket(oss2.AuthV4(KEY_ID, SECRET), server.endpoint, bucket, region="cn-beijing")
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        other_region.get_object("v1 key+%")
    uploads = [v4.init_multipart_upload(k).upload_id for k in ("u1", "u1", "u2")]
    listed = [(u.key, u.upload_id) for u in oss2.MultipartUploadIterator(v4, max_uploads=1)]
    assert listed == list(zip(("u1", "u1", "u2"), uploads, strict=True))
    v4.put_object("v1 key+%2", b"")
    assert [o.key for o in oss2.ObjectIteratorV2(v4, max_keys=1)] == ["v1 key+%", "v1 key+%2"]
    assert server.requests["GetObject"] >= 4
