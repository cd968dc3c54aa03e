"""The copy/skip rules and the streaming merge-join of source, destination and manifest."""

import hashlib
import pickle
import random
from dataclasses import replace

import pytest

from dth_ray.config import Compare
from dth_ray.errors import Fatal
from dth_ray.keyfilter import KeyFilter
from dth_ray.model import ObjectMeta
from dth_ray.plan.diff import Decision, Record, decide, merge_join, summarize
from dth_ray.stores.base import StoreFeatures

S3 = StoreFeatures(name="s3")
OSS = StoreFeatures(
    name="oss", multipart_etag_is_md5_of_md5s=False, checksum_kinds=("md5", "crc64ecma"),
    unreadable_storage_classes=("Archive", "ColdArchive"),
)
KMS = StoreFeatures(name="s3-kms", single_put_etag_is_md5=False)

MD5_A = hashlib.md5(b"a").hexdigest()
MD5_B = hashlib.md5(b"b").hexdigest()
MP_A = MD5_A + "-3"
MP_B = MD5_B + "-3"


def obj(key="k", size=10, etag=MD5_A, mtime=100.0, storage_class="", checksum=""):
    return ObjectMeta(key, size, etag, mtime, storage_class, checksum)


def run(src, dst, record=None, compare=Compare.size_etag, sf=S3, df=S3):
    return decide(src, dst, record, compare, sf, df)


# --- decide -----------------------------------------------------------------------------------------


def test_unreadable_storage_class_is_skipped_with_reason_even_when_new():
    src = obj(storage_class="Archive")
    assert run(src, None, sf=OSS) == ("skip", "unreadable:Archive")
    assert run(src, obj(size=1), sf=OSS) == ("skip", "unreadable:Archive")
    assert run(obj(storage_class="Standard"), None, sf=OSS) == ("copy", "new")


@pytest.mark.parametrize("compare", list(Compare))
def test_new_and_size_mismatch_copy_in_every_mode(compare):
    assert run(obj(), None, compare=compare) == ("copy", "new")
    assert run(obj(size=0), obj(size=1), compare=compare) == ("copy", "size")


def test_zero_byte_objects_compare_like_any_other():
    empty = hashlib.md5(b"").hexdigest()
    assert run(obj(size=0, etag=empty), obj(size=0, etag=empty)) == ("skip", "same_etag")
    assert run(obj(size=0, etag=empty), None) == ("copy", "new")


def test_size_mode_ignores_etags():
    assert run(obj(etag=MD5_A), obj(etag=MD5_B), compare=Compare.size) == ("skip", "same_size")
    assert run(obj(), obj(), compare="size") == ("skip", "same_size")  # plain strings from config work


def test_size_mtime_mode_has_one_second_slack():
    assert run(obj(mtime=101.0), obj(mtime=100.0), compare=Compare.size_mtime) == ("skip", "same_size_mtime")
    assert run(obj(mtime=101.5), obj(mtime=100.0), compare=Compare.size_mtime) == ("copy", "newer")
    assert run(obj(mtime=50.0), obj(mtime=100.0), compare=Compare.size_mtime) == ("skip", "same_size_mtime")


def test_single_part_md5_etags_compare_directly():
    assert run(obj(etag=MD5_A), obj(etag=MD5_A)) == ("skip", "same_etag")
    assert run(obj(etag=MD5_A), obj(etag=MD5_B)) == ("copy", "etag")
    # OSS reports MD5 ETags in upper case.
    assert run(obj(etag=MD5_A.upper()), obj(etag=MD5_A), sf=OSS) == ("skip", "same_etag")


def test_etag_not_md5_is_unverifiable():
    # SSE-KMS: a single-part ETag is not the MD5, so unequal ETags prove nothing.
    assert run(obj(etag=MD5_A), obj(etag=MD5_B), df=KMS) == ("skip", "same_size_unverifiable")
    assert run(obj(etag=MD5_A), obj(etag=MD5_B), df=KMS, compare=Compare.checksum) == ("copy", "unverifiable")
    assert run(obj(etag=""), obj(etag=MD5_A)) == ("skip", "same_size_unverifiable")
    assert run(obj(etag="not-hex"), obj(etag="nothex")) == ("skip", "same_size_unverifiable")


def test_multipart_etags():
    assert run(obj(etag=MP_A), obj(etag=MP_A)) == ("skip", "same_etag")
    # Unequal multipart ETags may be the same bytes with other part sizes.
    assert run(obj(etag=MP_A), obj(etag=MP_B)) == ("skip", "same_size_unverifiable")
    assert run(obj(etag=MP_A), obj(etag=MP_B), compare=Compare.checksum) == ("copy", "unverifiable")
    # Mixed single/multipart cannot be compared.
    assert run(obj(etag=MD5_A), obj(etag=MP_A)) == ("skip", "same_size_unverifiable")
    # OSS multipart ETags use another scheme: equal strings across stores mean nothing.
    assert run(obj(etag=MP_A), obj(etag=MP_A), sf=OSS) == ("skip", "same_size_unverifiable")


def test_record_unchanged_skips_even_when_etags_are_incomparable():
    src = obj(etag=MP_A)  # OSS multipart ETag at the source
    dst = obj(etag=MP_B)  # our S3 multipart upload
    record = Record("k", src_etag=MP_A, src_size=10, dst_etag=MP_B)
    assert run(src, dst, record, sf=OSS) == ("skip", "unchanged")
    assert run(src, dst, record, sf=OSS, compare=Compare.checksum) == ("skip", "unchanged")


def test_record_detects_same_size_overwrite_at_source():
    # Same size, destination untouched since our copy, but the source ETag moved on.
    src = obj(etag=MP_B)
    dst = obj(etag=MP_A)
    record = Record("k", src_etag="old-3", src_size=10, dst_etag=MP_A)
    assert run(src, dst, record) == ("copy", "changed_at_source")
    # Same for single-part sources whose ETag would otherwise look "unverifiable" vs a multipart dst.
    record = Record("k", src_etag=MD5_B, src_size=10, dst_etag=MP_A)
    assert run(obj(etag=MD5_A), dst, record) == ("copy", "changed_at_source")


def test_record_matches_source_checksum():
    src = obj(etag="oss-etag-not-md5-1", checksum="crc64ecma:12345")
    record = Record("k", src_etag="crc64ecma:12345", src_size=10, dst_etag=MP_A)
    assert run(src, obj(etag=MP_A), record, sf=OSS) == ("skip", "unchanged")


def test_destination_changed_behind_our_back_falls_through():
    record = Record("k", src_etag=MD5_A, src_size=10, dst_etag=MD5_A)
    # The destination now holds other bytes of the same size: direct comparison finds it.
    assert run(obj(etag=MD5_A), obj(etag=MD5_B), record) == ("copy", "etag")
    assert run(obj(etag=MD5_A), obj(etag=MD5_A), replace(record, dst_etag="x")) == ("skip", "same_etag")


def test_record_without_etags_is_ignored():
    record = Record("k", src_etag="", src_size=10, dst_etag="")
    assert run(obj(etag=""), obj(etag=""), record) == ("skip", "same_size_unverifiable")


def test_checksums_of_the_same_kind_decide_before_etags():
    src = obj(etag=MP_A, checksum="crc64ecma:1")
    assert run(src, obj(etag=MP_B, checksum="crc64ecma:1"), sf=OSS) == ("skip", "same_checksum")
    assert run(src, obj(etag=MP_A, checksum="crc64ecma:2")) == ("copy", "checksum")
    # Different kinds are not compared; falls through to ETags.
    assert run(src, obj(etag=MP_A, checksum="crc32c:1")) == ("skip", "same_etag")


# --- merge_join -------------------------------------------------------------------------------------


def join(src, dst, records=(), **kw):
    kw.setdefault("src_prefix", "")
    kw.setdefault("dst_prefix", "")
    kw.setdefault("compare", Compare.size_etag)
    kw.setdefault("src_features", S3)
    kw.setdefault("dst_features", S3)
    return list(merge_join(src, dst, records, **kw))


def test_merge_join_three_way_with_prefixes():
    src = [obj("data/a"), obj("data/b", etag=MD5_B), obj("data/d")]
    dst = [obj("bk/b"), obj("bk/c"), obj("bk/d", size=99)]
    out = join(src, dst, src_prefix="data/", dst_prefix="bk/")
    assert [(d.action, d.dst_key, d.reason) for d in out] == [
        ("copy", "bk/a", "new"),
        ("copy", "bk/b", "etag"),
        ("extra", "bk/c", "extra"),
        ("copy", "bk/d", "size"),
    ]
    assert out[0].src == src[0] and out[0].dst is None
    assert out[2] == Decision("extra", None, dst[1], "bk/c", "extra")
    assert out[3].src == src[2] and out[3].dst == dst[2]


def test_merge_join_odd_keys_and_unicode_order():
    keys = sorted(["a b", "a+b", "a%20b", "a?b&c=d", "ü/ß", "日本", "😀", "z", "A", "a/b", "a-b", "a.b"])
    src = [obj("s/" + k) for k in keys]
    dst = [obj("d/" + k) for k in keys[::2]]
    out = join(src, dst, src_prefix="s/", dst_prefix="d/")
    assert [d.dst_key for d in out] == ["d/" + k for k in keys]
    assert [d.reason for d in out] == ["same_etag" if i % 2 == 0 else "new" for i in range(len(keys))]


def test_merge_join_ignores_destination_keys_outside_prefix():
    # A destination listing may hold keys outside dst_prefix (e.g. listed from the bucket root).
    out = join([obj("data/x")], [obj("aaa"), obj("bk/x"), obj("zzz")], src_prefix="data/", dst_prefix="bk/")
    assert [(d.action, d.dst_key) for d in out] == [("skip", "bk/x")]


def test_merge_join_filter_drops_both_sides():
    f = KeyFilter(include=["*.csv"], exclude=["/tmp/**"])
    src = [obj("p/a.csv"), obj("p/b.json"), obj("p/tmp/c.csv")]
    dst = [obj("q/b.json"), obj("q/old.csv"), obj("q/tmp/z.csv")]
    out = join(src, dst, src_prefix="p/", dst_prefix="q/", key_filter=f)
    assert [(d.action, d.dst_key) for d in out] == [("copy", "q/a.csv"), ("extra", "q/old.csv")]


def test_merge_join_uses_records_by_source_key():
    src = [obj("s/a", etag=MP_A), obj("s/b", etag=MP_B), obj("s/c", etag=MP_A)]
    dst = [obj("d/a", etag="x-2"), obj("d/b", etag="y-2"), obj("d/c", etag="z-2")]
    records = [
        Record("s/0", MP_A, 10, "w-2"),  # deleted at source since: ignored
        Record("s/a", MP_A, 10, "x-2"),
        Record("s/b", MP_A, 10, "y-2"),  # source overwritten with same size
        Record("s/c", MP_A, 10, "stale-2"),  # destination changed since our copy
    ]
    out = join(src, dst, records, src_prefix="s/", dst_prefix="d/")
    assert [d.reason for d in out] == ["unchanged", "changed_at_source", "same_size_unverifiable"]


def test_merge_join_unreadable_source_reported_not_dropped():
    out = join([obj("a", storage_class="Archive")], [], src_features=OSS)
    assert [(d.action, d.reason) for d in out] == [("skip", "unreadable:Archive")]


@pytest.mark.parametrize("side", ["src", "dst", "records"])
def test_merge_join_rejects_unsorted_input(side):
    unsorted = [obj("b"), obj("a")]
    # The source runs past both records so the cursor has to read them in order.
    args = {"src": [obj("a"), obj("c")], "dst": [], "records": []}
    args[side] = [Record(o.key, "", 0, "") for o in unsorted] if side == "records" else unsorted
    with pytest.raises(Fatal, match="not sorted"):
        join(args["src"], args["dst"], args["records"])


def test_merge_join_empty_inputs():
    assert join([], []) == []
    assert summarize([]) == {"copy": 0, "skip": 0, "extra": 0}


def test_merge_join_random_matches_dict_reference():
    rng = random.Random(20240601)
    for _ in range(50):
        universe = sorted({"".join(rng.choice("ab/ü ") for _ in range(rng.randint(1, 6))) for _ in range(60)})
        src = [obj("S" + k, etag=rng.choice([MD5_A, MD5_B])) for k in universe if rng.random() < 0.7]
        dst = [obj("D" + k, etag=rng.choice([MD5_A, MD5_B])) for k in universe if rng.random() < 0.7]
        out = join(src, dst, src_prefix="S", dst_prefix="D")
        src_by = {o.key[1:]: o for o in src}
        dst_by = {o.key[1:]: o for o in dst}
        expected = []
        for k in sorted(src_by.keys() | dst_by.keys()):
            if k not in src_by:
                expected.append(("extra", "D" + k))
            else:
                action, _ = decide(src_by[k], dst_by.get(k), None, Compare.size_etag, S3, S3)
                expected.append((action, "D" + k))
        assert [(d.action, d.dst_key) for d in out] == expected


def test_merge_join_streams_200k_keys():
    n = 200_000
    pulled = {"src": 0, "dst": 0, "records": 0}

    def gen(kind, prefix, step, etag_of):
        for i in range(0, n, step):
            pulled[kind] += 1
            yield obj(f"{prefix}{i:08d}", etag=etag_of(i))

    def records():
        for i in range(0, n, 4):
            pulled["records"] += 1
            yield Record(f"src/{i:08d}", MD5_A, 10, MD5_A)

    decisions = merge_join(
        gen("src", "src/", 1, lambda i: MD5_A if i % 4 == 0 else MD5_B),
        gen("dst", "dst/", 2, lambda i: MD5_A),
        records(),
        src_prefix="src/", dst_prefix="dst/", compare=Compare.size_etag, src_features=S3, dst_features=S3,
    )
    first = [next(decisions) for _ in range(3)]
    # Lazy: three decisions needed only a handful of items from each input.
    assert max(pulled.values()) <= 4
    assert [d.reason for d in first] == ["unchanged", "new", "etag"]
    counts = summarize(decisions)
    assert pulled == {"src": n, "dst": n // 2, "records": n // 4}
    # Even keys exist at the destination (i%4==0 unchanged, i%4==2 etag differs); odd keys are new.
    # The first three decisions (one skip, two copies) were already taken.
    assert counts == {"copy": (n - n // 4) - 2, "skip": n // 4 - 1, "extra": 0}


def test_decisions_and_records_pickle():
    decision = Decision("copy", obj("s/a"), None, "d/a", "new")
    record = Record("s/a", MD5_A, 10, MP_A)
    assert pickle.loads(pickle.dumps(decision)) == decision
    assert pickle.loads(pickle.dumps(record)) == record
