"""The store contract against LocalStore, plus what only a directory on disk can get wrong."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import random
import shutil
import time
from dataclasses import replace

import pytest

from dth_ray.config import Compare, StoreConfig, StoreType
from dth_ray.errors import Fatal, NotFound, Unreadable
from dth_ray.model import ByteRange, ListPage, ObjectHeaders, PartInfo, UploadInfo
from dth_ray.plan.diff import Record, decide
from dth_ray.stores import open_store
from dth_ray.stores.base import StoreFeatures
from dth_ray.stores.local import FEATURES, LocalStore, version_token
from tests.contract.linktree import SECRET, link_tree, never_read
from tests.contract.suite import StoreContract, list_all, md5, utf8_sorted


def local_store(path) -> LocalStore:
    store = open_store(StoreConfig(type=StoreType.local, path=str(path)))
    assert isinstance(store, LocalStore)
    return store


def run(coro):
    return asyncio.run(coro)


async def put(store, key: str, data: bytes = b"x"):
    return await store.put(key, data, ObjectHeaders(), md5(data))


class TestLocalStore(StoreContract):
    preserves_headers = False
    reads_into_buffers = False
    head_reports_etag = False
    listing_reports_etag = False

    @pytest.fixture
    def store(self, tmp_store_dir):
        return local_store(tmp_store_dir)


def test_content_type_is_guessed_and_headers_dropped(tmp_store_dir):
    store = local_store(tmp_store_dir)

    async def body():
        await store.put("page.html", b"<p>", ObjectHeaders(content_type="text/x-custom", cache_control="no-cache",
                                                           user_metadata=(("a", "b"),)), md5(b"<p>"))
        head = await store.head("page.html")
        mtime_ns = os.stat(tmp_store_dir / "page.html").st_mtime_ns  # the one header a file keeps
        assert head.headers == ObjectHeaders(content_type="text/html", mtime_ns=mtime_ns)
        assert (await store.get("page.html")).info.headers.content_type == "text/html"
        await put(store, "blob")
        assert (await store.head("blob")).headers.content_type == ""
        assert sorted(os.listdir(tmp_store_dir)) == ["blob", "page.html"]  # no sidecar files

    run(body())


@pytest.mark.parametrize("key", ["../escape", "/absolute", "a/../../b", "a//b", "./a", "a/./b", "a/..", "",
                                 ".dth-uploads/x", "d/.dth-tmp-x", "nul\x00byte"])
def test_keys_that_escape_or_alias_are_fatal(tmp_store_dir, key):
    store = local_store(tmp_store_dir)

    async def body():
        with pytest.raises(Fatal):
            await put(store, key)
        with pytest.raises(Fatal):
            await store.get(key)
        with pytest.raises(Fatal):
            await store.create_multipart(key, ObjectHeaders())

    run(body())
    assert not os.path.exists(tmp_store_dir.parent / "escape")


def test_directory_markers_are_skipped(tmp_store_dir):
    store = local_store(tmp_store_dir)

    async def body():
        result = await store.put("dir/", b"", ObjectHeaders(), md5(b""))
        assert result.etag == hashlib.md5(b"").hexdigest()
        assert os.listdir(tmp_store_dir) == []
        with pytest.raises(NotFound):
            await store.head("dir/")
        await store.delete("dir/")
        await put(store, "dir/file")
        objects, _ = await list_all(store, "")
        assert [o.key for o in objects] == ["dir/file"]

    run(body())


def test_object_and_directory_cannot_share_a_path(tmp_store_dir):
    store = local_store(tmp_store_dir)

    async def body():
        await put(store, "a")
        with pytest.raises(Fatal):
            await put(store, "a/b")
        await put(store, "c/d")
        with pytest.raises(Fatal):
            await put(store, "c")
        with pytest.raises(NotFound):
            await store.head("a/b")  # a path through a file is simply missing
        with pytest.raises(NotFound):
            await store.head("c")  # a directory is not an object

    run(body())


def test_staging_and_temp_files_are_hidden(tmp_store_dir):
    store = local_store(tmp_store_dir)

    async def body():
        await put(store, "d/visible")
        (tmp_store_dir / "d" / ".dth-tmp-abc").write_bytes(b"partial")
        upload_id = await store.create_multipart("d/pending", ObjectHeaders())
        await store.upload_part("d/pending", upload_id, 1, b"p", md5(b"p"))
        objects, prefixes = await list_all(store, "")
        assert [o.key for o in objects] == ["d/visible"]
        objects, prefixes = await list_all(store, "", delimiter="/")
        assert prefixes == ["d/"]
        assert (await store.list_uploads("d/")) == [UploadInfo("d/pending", upload_id)]
        await store.abort_multipart("d/pending", upload_id)
        assert os.listdir(tmp_store_dir / ".dth-uploads") == []

    run(body())


def test_missing_root_lists_as_empty(tmp_path):
    store = local_store(tmp_path / "absent")
    assert run(store.list_page("")) == ListPage(objects=[])
    run(put(store, "k"))  # the first write creates the root
    assert run(store.list_page("")).objects[0].key == "k"


def test_delete_prunes_empty_directories(tmp_store_dir):
    store = local_store(tmp_store_dir)

    async def body():
        await put(store, "a/b/c/d")
        await put(store, "a/keep")
        await store.delete("a/b/c/d")
        assert sorted(os.listdir(tmp_store_dir / "a")) == ["keep"]

    run(body())


def test_multipart_etag_and_part_replacement(tmp_store_dir):
    store = local_store(tmp_store_dir)

    async def body():
        upload_id = await store.create_multipart("m", ObjectHeaders())
        await store.upload_part("m", upload_id, 1, b"old", md5(b"old"))
        e1 = await store.upload_part("m", upload_id, 1, b"first", md5(b"first"))  # re-upload replaces
        e2 = await store.upload_part("m", upload_id, 2, b"second", md5(b"second"))
        assert [p.etag for p in await store.list_parts("m", upload_id)] == [e1, e2]
        with pytest.raises(Fatal):  # an ETag the upload never had
            await store.complete_multipart("m", upload_id, [PartInfo(1, md5(b"old").hex())])
        with pytest.raises(NotFound):  # the upload belongs to another key
            await store.list_parts("other", upload_id)
        done = await store.complete_multipart("m", upload_id, [PartInfo(1, e1), PartInfo(2, e2)])
        expected = hashlib.md5(md5(b"first") + md5(b"second")).hexdigest() + "-2"
        assert done.etag == expected
        assert (await store.get("m")).data == b"firstsecond"
        with pytest.raises(NotFound):
            await store.complete_multipart("m", upload_id, [PartInfo(1, e1)])

    run(body())


def _tokens(store, key: str) -> set[str]:
    """The version token of `key` as the listing, HEAD, a whole GET and a ranged GET report it."""

    async def body():
        (listed,), _ = await list_all(store, key)
        head = await store.head(key)
        whole = await store.get(key)
        ranged = await store.get(key, ByteRange(0, 1))
        assert head.headers.mtime_ns == whole.info.headers.mtime_ns
        return {listed.checksum, head.meta.checksum, whole.info.meta.checksum, ranged.info.meta.checksum}

    return run(body())


def test_version_token_changes_with_a_same_size_rewrite(tmp_store_dir):
    store = local_store(tmp_store_dir)
    run(put(store, "k", b"first"))
    st = os.stat(tmp_store_dir / "k")
    (first,) = _tokens(store, "k")
    assert first == f"mtime_ns:{st.st_mtime_ns}-5" == version_token(st)
    (tmp_store_dir / "k").write_bytes(b"other")  # same size, new bytes, a later mtime
    os.utime(tmp_store_dir / "k", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    (second,) = _tokens(store, "k")
    assert second != first and second == f"mtime_ns:{st.st_mtime_ns + 1}-5"
    assert run(store.get("k")).info.headers.mtime_ns == st.st_mtime_ns + 1


def test_writes_take_the_mtime_they_are_handed(tmp_store_dir):
    store = local_store(tmp_store_dir)
    mtime_ns = 1_600_000_000_123_456_789

    async def body():
        await store.put("single", b"abc", ObjectHeaders(mtime_ns=mtime_ns), md5(b"abc"))
        upload_id = await store.create_multipart("multi", ObjectHeaders(mtime_ns=mtime_ns + 1))
        parts = [PartInfo(n, await store.upload_part("multi", upload_id, n, data, md5(data)), len(data))
                 for n, data in ((1, b"12"), (2, b"345"))]
        await store.complete_multipart("multi", upload_id, parts)
        await put(store, "now")

    run(body())
    assert os.stat(tmp_store_dir / "single").st_mtime_ns == mtime_ns
    assert os.stat(tmp_store_dir / "multi").st_mtime_ns == mtime_ns + 1
    assert _tokens(store, "multi") == {f"mtime_ns:{mtime_ns + 1}-5"}
    assert abs(os.stat(tmp_store_dir / "now").st_mtime - time.time()) < 60  # none handed: the write's time


OSS_LIKE = StoreFeatures(name="oss", multipart_etag_is_md5_of_md5s=False, checksum_kinds=("md5", "crc64ecma"))


def test_version_tokens_in_the_diff(tmp_path):
    """What the diff makes of local tokens: compared only with another local file's token; otherwise only
    through the manifest record of the token copied (as the copier records `src.etag or src.checksum`)."""
    src, dst = local_store(tmp_path / "src"), local_store(tmp_path / "dst")

    async def listed(store, key: str):
        (meta,), _ = await list_all(store, key)
        return meta

    async def copy(key: str) -> Record:
        """What the copier and the worker do for a single-PUT copy, and the record they leave."""
        meta = await listed(src, key)
        got = await src.get(key)
        result = await dst.put(key, got.data, got.info.headers, md5(got.data))
        copied = replace(meta, checksum=got.info.meta.checksum or meta.checksum)
        return Record(key, copied.etag or copied.checksum, copied.size, result.etag)

    async def body():
        await put(src, "k", b"version 1")
        record = await copy("k")
        s, d = await listed(src, "k"), await listed(dst, "k")
        assert record.src_etag == s.checksum and s.checksum == d.checksum  # the copy kept the source's mtime
        expected = {Compare.size: "same_size", Compare.size_mtime: "same_size_mtime",
                    Compare.size_etag: "same_checksum", Compare.checksum: "same_checksum"}
        for compare, reason in expected.items():
            assert decide(s, d, record, compare, FEATURES, FEATURES) == ("skip", reason), compare
        # A store of another checksum kind holding the same record: the record decides, never the kinds.
        other = replace(d, etag=record.dst_etag, checksum="crc64ecma:1")
        assert decide(s, other, record, Compare.size_etag, FEATURES, OSS_LIKE) == ("skip", "unchanged")
        assert decide(s, replace(other, etag="f" * 32), None, Compare.size_etag, FEATURES, OSS_LIKE) == (
            "skip", "same_size_unverifiable")

        st = os.stat(tmp_path / "src" / "k")
        (tmp_path / "src" / "k").write_bytes(b"version 2")  # same size
        os.utime(tmp_path / "src" / "k", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))
        changed = await listed(src, "k")
        assert decide(changed, d, record, Compare.size_etag, FEATURES, FEATURES) == ("copy", "checksum")
        assert decide(changed, other, record, Compare.size_etag, FEATURES, OSS_LIKE) == (
            "copy", "changed_at_source")

    run(body())


def _random_keys(rng: random.Random, count: int) -> list[str]:
    """Keys over a small alphabet that exercises '-' < '/' < '0' and non-ASCII, with no file/dir clashes."""
    alphabet = ["a", "a-", "a0", "b", "é", "Z", " x", "\U0001F600", "\uff21"]
    keys: set[str] = set()
    while len(keys) < count:
        depth = rng.randint(1, 4)
        key = "/".join(rng.choice(alphabet) for _ in range(depth))
        clash = any(k.startswith(key + "/") or key.startswith(k + "/") for k in keys)
        if not clash:
            keys.add(key)
    return utf8_sorted(keys)


@pytest.mark.parametrize("seed", range(4))
def test_listing_matches_a_reference_on_random_trees(tmp_store_dir, seed):
    rng = random.Random(seed)
    keys = _random_keys(rng, 60)
    store = local_store(tmp_store_dir)

    def reference(prefix, start_after, delimiter):
        out = []
        for key in keys:
            if not key.startswith(prefix) or key <= start_after:
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            entry = key[: cut + len(delimiter)] if cut >= 0 else key
            if not out or out[-1] != entry:
                out.append(entry)
        return out

    async def body():
        for key in keys:
            await put(store, key)
        probes = ["", "a", "a/", "a-", "a-/", "a0/a", "é", "b/a/"] + [rng.choice(keys) for _ in range(4)]
        for prefix in probes:
            for start_after in ["", rng.choice(keys), prefix + "a/", prefix + "a-"]:
                for delimiter in ["", "/", "-"]:
                    for max_keys in (1, 3, 1000):
                        objects, prefixes = await list_all(store, prefix, start_after=start_after,
                                                           delimiter=delimiter, max_keys=max_keys)
                        got = utf8_sorted([o.key for o in objects] + prefixes)
                        # A common prefix that sorts before start_after still shows if it has later keys.
                        want = utf8_sorted(reference(prefix, start_after, delimiter))
                        assert got == want, (prefix, start_after, delimiter, max_keys)

    run(body())


def test_listing_opens_only_the_directories_it_needs(tmp_store_dir, monkeypatch):
    store = local_store(tmp_store_dir)
    for top in range(20):
        for leaf in range(5):
            path = tmp_store_dir / f"d{top:02d}" / "sub" / f"f{leaf}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    scanned = []
    real_scan = LocalStore._scan

    def counting_scan(self, dir_fd, dir_key):
        scanned.append(dir_key)
        return real_scan(self, dir_fd, dir_key)

    monkeypatch.setattr(LocalStore, "_scan", counting_scan)
    page = run(store.list_page("", start_after="d13/sub/f2", max_keys=2))
    assert [o.key for o in page.objects] == ["d13/sub/f3", "d13/sub/f4"]
    # Only the path down to start_after, plus the next subtree to learn whether there is a next page.
    assert scanned == ["", "d13/", "d13/sub/", "d14/", "d14/sub/"]
    scanned.clear()
    page = run(store.list_page("d07/sub/f", max_keys=1))
    assert [o.key for o in page.objects] == ["d07/sub/f0"]
    assert scanned == ["d07/sub/"]


def test_pickles_as_its_config(tmp_store_dir):
    store = local_store(tmp_store_dir)
    run(put(store, "k"))
    reducer, args = store.__reduce__()
    assert reducer is LocalStore and args[0].path == str(tmp_store_dir)
    clone = pickle.loads(pickle.dumps(store))
    assert run(clone.get("k")).data == b"x"


# -- symbolic links: never followed below the root (issue 16, item 2) ----------------------------------------

def test_links_are_listed_as_skipped_entries_that_say_where_they_lead(tmp_path):
    root, outside, links = link_tree(tmp_path)
    store = local_store(root)

    async def body():
        objects, _ = await list_all(store, "")
        listed = {o.key: o.storage_class for o in objects}
        assert listed == {"a.txt": "", "dir/b.txt": "", **links}
        assert [o.key for o in objects] == utf8_sorted(listed)
        for meta in objects:
            if meta.storage_class:  # the link itself (lstat), never its target, and no version token
                assert (meta.size, meta.checksum) == (os.lstat(root / meta.key).st_size, ""), meta
                for compare in Compare:
                    assert decide(meta, None, None, compare, FEATURES, FEATURES) == (
                        "skip", f"unreadable:{meta.storage_class}")
        # A link to a directory is one key, never a common prefix, and nothing is listed through a link.
        objects, prefixes = await list_all(store, "", delimiter="/")
        assert prefixes == ["dir/"] and {"dir_in", "dir_out"} <= {o.key for o in objects}
        for prefix in ("dir_in/", "dir_out/", "dir_out/sub/", "dir_out/s"):
            assert await list_all(store, prefix) == ([], []), prefix
            assert await list_all(store, prefix, delimiter="/") == ([], []), prefix

    with never_read(outside / "secret.txt", outside / "sub" / "secret.txt"):
        run(body())


def test_reads_never_follow_a_link(tmp_path):
    root, outside, links = link_tree(tmp_path)
    store = local_store(root)

    async def body():
        for key, storage_class in links.items():
            with pytest.raises(Unreadable, match=storage_class):
                await store.get(key)
            with pytest.raises(Unreadable):
                await store.get(key, ByteRange(0, 1), if_match="x")
            assert (await store.head(key)).meta.storage_class == storage_class
        # Crafted keys through a linked directory, out of the root or inside it: the key does not exist.
        for key in ("dir_out/secret.txt", "dir_out/sub/secret.txt", "dir_in/b.txt", "dir/in_then_out/x"):
            with pytest.raises(NotFound):
                await store.get(key)
            with pytest.raises(NotFound):
                await store.head(key)
        assert (await store.get("dir/b.txt")).data == b"b"

    with never_read(outside / "secret.txt", outside / "sub" / "secret.txt"):
        run(body())


def test_a_directory_swapped_for_a_link_after_listing_is_not_followed(tmp_store_dir, tmp_path):
    store = local_store(tmp_store_dir)
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.txt"
    secret.write_bytes(SECRET)
    (tmp_store_dir / "d").mkdir()
    (tmp_store_dir / "d" / "secret.txt").write_bytes(b"mine")

    async def body():
        (listed,), _ = await list_all(store, "")
        assert listed.key == "d/secret.txt"
        shutil.rmtree(tmp_store_dir / "d")
        os.symlink(tmp_path / "outside", tmp_store_dir / "d")  # what the listing saw is now a way out
        with pytest.raises(NotFound):
            await store.get(listed.key)
        with pytest.raises(NotFound):
            await store.head(listed.key)
        await store.delete(listed.key)

    with never_read(secret):
        run(body())
    assert secret.read_bytes() == SECRET


def test_writes_never_go_through_a_link(tmp_path):
    root, sentinel, target = tmp_path / "dst", tmp_path / "sentinel", tmp_path / "target.txt"
    (root / "real").mkdir(parents=True)
    sentinel.mkdir()
    target.write_bytes(b"keep")
    os.symlink(sentinel, root / "escape")  # absolute, outside
    os.symlink("../sentinel", root / "rel_escape")  # relative, outside
    os.symlink("escape", root / "chain")  # a link to a link
    os.symlink("real", root / "inner")  # inside the root: refused all the same
    os.symlink(target, root / "file_link")
    os.symlink("../target.txt", root / "rel_file_link")
    store = local_store(root)

    async def body():
        for key in ("escape/pwned.txt", "rel_escape/pwned.txt", "chain/pwned.txt", "inner/pwned.txt",
                    "escape/deep/er/pwned.txt"):
            with pytest.raises(Fatal, match="symbolic link"):
                await put(store, key, b"pwned")
            upload_id = await store.create_multipart(key, ObjectHeaders())
            etag = await store.upload_part(key, upload_id, 1, b"pwned", md5(b"pwned"))
            with pytest.raises(Fatal, match="symbolic link"):
                await store.complete_multipart(key, upload_id, [PartInfo(1, etag)])
            await store.abort_multipart(key, upload_id)
        # A link at the key's own name is replaced by the new file, never written through.
        await put(store, "file_link", b"new")
        upload_id = await store.create_multipart("rel_file_link", ObjectHeaders())
        etag = await store.upload_part("rel_file_link", upload_id, 1, b"multi", md5(b"multi"))
        await store.complete_multipart("rel_file_link", upload_id, [PartInfo(1, etag)])

    run(body())
    assert os.listdir(sentinel) == [] and os.listdir(root / "real") == [] and target.read_bytes() == b"keep"
    for name, body in (("file_link", b"new"), ("rel_file_link", b"multi")):
        assert not os.path.islink(root / name) and (root / name).read_bytes() == body
    assert all(os.path.islink(root / name) for name in ("escape", "rel_escape", "chain", "inner"))
    assert os.listdir(root / ".dth-uploads") == []


def test_multipart_staging_never_goes_through_a_link(tmp_path):
    root, sentinel, secret = tmp_path / "dst", tmp_path / "sentinel", tmp_path / "secret.txt"
    root.mkdir()
    sentinel.mkdir()
    secret.write_bytes(SECRET)
    store = local_store(root)
    os.symlink(sentinel, root / ".dth-uploads")

    async def linked_uploads_folder():
        with pytest.raises(Fatal, match="symbolic link"):
            await store.create_multipart("k", ObjectHeaders())
        assert await store.list_uploads("") == []

    run(linked_uploads_folder())
    assert os.listdir(sentinel) == []
    os.unlink(root / ".dth-uploads")

    # An upload folder that is a link to a folder laid out like a staged upload of "k" (key file, a part).
    fake_id = "f" * 32
    (sentinel / "key").write_text("k")
    (sentinel / f"00001.{md5(SECRET).hex()}").write_bytes(SECRET)
    os.makedirs(root / ".dth-uploads")
    os.symlink(sentinel, root / ".dth-uploads" / fake_id)

    async def linked_staging():
        assert await store.list_uploads("") == []
        with pytest.raises(NotFound):
            await store.list_parts("k", fake_id)
        with pytest.raises(NotFound):
            await store.complete_multipart("k", fake_id, [PartInfo(1, md5(SECRET).hex())])
        await store.abort_multipart("k", fake_id)  # no such upload for the store: nothing removed through it
        # A real upload with a part planted as a link to the secret, and a part ETag crafted as a path.
        upload_id = await store.create_multipart("k", ObjectHeaders())
        staging = root / ".dth-uploads" / upload_id
        os.symlink(secret, staging / f"00001.{md5(SECRET).hex()}")
        assert await store.list_parts("k", upload_id) == []
        with pytest.raises(Fatal, match="not uploaded"):
            await store.complete_multipart("k", upload_id, [PartInfo(1, md5(SECRET).hex())])
        os.symlink(secret, staging / "00002.x")
        with pytest.raises(Fatal, match="not uploaded"):
            await store.complete_multipart("k", upload_id, [PartInfo(2, "x/../../../../secret.txt")])
        await store.abort_multipart("k", upload_id)

    with never_read(secret, sentinel / f"00001.{md5(SECRET).hex()}"):
        run(linked_staging())
    assert sorted(os.listdir(sentinel)) == sorted(["key", f"00001.{md5(SECRET).hex()}"])
    assert os.listdir(root / ".dth-uploads") == [fake_id] and not os.path.exists(root / "k")


def test_deletes_remove_a_link_itself_and_never_delete_through_one(tmp_path):
    root, outside = tmp_path / "dst", tmp_path / "outside"
    (root / "real" / "sub").mkdir(parents=True)
    (root / "real" / "sub" / "keep").write_bytes(b"keep")
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"victim")
    os.symlink(outside / "victim.txt", root / "file_link")
    os.symlink(outside, root / "escape")
    os.symlink("real", root / "inner")
    store = local_store(root)

    async def body():
        await store.delete("file_link")
        await store.delete("escape/victim.txt")
        await store.delete("inner/sub/keep")
        await store.delete("escape")  # the key is the link: the link goes, the folder it names stays

    run(body())
    assert (outside / "victim.txt").read_bytes() == b"victim" and (root / "real" / "sub" / "keep").exists()
    assert not os.path.lexists(root / "file_link") and not os.path.lexists(root / "escape")
    assert os.path.islink(root / "inner")


def test_the_root_may_be_a_link_and_absolute_links_into_it_are_inside(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"f")
    os.symlink(real, tmp_path / "root")  # the configured root is trusted, link or not
    os.symlink(real / "f", real / "via_real_path")
    os.symlink(tmp_path / "root" / "f", real / "via_root_path")
    store = local_store(tmp_path / "root")
    objects, _ = run(list_all(store, ""))
    assert {o.key: o.storage_class for o in objects} == {
        "f": "", "via_real_path": "symlink_inside_root", "via_root_path": "symlink_inside_root"}
    assert run(store.get("f")).data == b"f"
