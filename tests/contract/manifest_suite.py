"""The manifest contract: one mixin of tests over the `Manifest` protocol, run against every backend.

A concrete class (`class TestX(ManifestContract)`) provides a `make` fixture: a factory `make(job)` that opens
a manifest of that job on the test's backing store (one file, one table) and closes it at teardown. Each test
uses its own job name, so one backing store serves many tests. Nothing here flushes unless the test says so:
a backend that buffers must answer every read from its buffer and its table together.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid

import pytest

from dth_ray.model import PartInfo, Shard, Tally, UploadState
from dth_ray.plan.diff import Record
from dth_ray.runtime.manifest import (
    CHECKPOINT_FAILURES,
    DONE,
    PENDING,
    Checkpoint,
    LiveRecord,
    LiveReport,
    ObjectRecord,
    RunInfo,
)

UNICODE_KEYS = ["dir with space/a b.txt", "plus+sign/x+y", "percent/100%25 done%", "query/what?x=1&y=2",
                "amp/&&", "é/accented", "e\u0301/decomposed", "日本/キー", "emoji/\U0001f600.bin", "tab\tkey"]


def rec(key: str, status: str = "copied", tag: str = "1", run_id: int = 0) -> ObjectRecord:
    return ObjectRecord(key=key, size=len(key.encode()), src_etag=f"src-{tag}", dst_key=key,
                        dst_etag=f"dst-{tag}" if status == "copied" else "", status=status,
                        error="" if status == "copied" else f"Boom{tag}", run_id=run_id)


def as_record(r: ObjectRecord, run_id: int = 0) -> Record:
    return Record(key=r.key, src_etag=r.src_etag, src_size=r.size, dst_etag=r.dst_etag, run_id=r.run_id or run_id)


def parts(numbers) -> list[PartInfo]:
    return [PartInfo(n, f"{n:032x}", 8 * 1024 * 1024) for n in numbers]


def upload(dst_key: str, upload_id: str, part_size: int = 8 * 1024 * 1024) -> UploadState:
    return UploadState(dst_key, upload_id, "src-etag", 10 * part_size, part_size, {})


class ManifestContract:
    """Tests every manifest backend must pass. Subclasses provide the `make` fixture."""

    @pytest.fixture
    def job(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def manifest(self, make, job):
        return make(job)

    @staticmethod
    def reopen(make, manifest):
        """Close `manifest` (flushing it) and open the same job again, as a rerun or another process would."""
        manifest.close()
        return make(manifest.job)

    def now_and_reopened(self, make, manifest):
        """`manifest` itself, then (lazily) the same job reopened."""
        yield manifest
        yield self.reopen(make, manifest)

    # -- runs and resume --------------------------------------------------------------------------------------

    def test_runs_and_resume(self, make, manifest):
        assert manifest.latest_run() is None
        assert manifest.runs(10) == []
        shards = [Shard("0002", "b/"), Shard("0001", "a/", end_at="a/m")]
        first = manifest.start_run(shards)
        assert first > 0 and manifest.run_id == first
        latest = manifest.latest_run()
        assert isinstance(latest, RunInfo)
        assert (latest.run_id, latest.status, latest.finished) == (first, "running", 0.0)
        assert latest.started > 0
        assert [cp.shard for cp in manifest.checkpoints(first)] == sorted(shards, key=lambda s: s.shard_id)
        assert all(cp.status == PENDING and cp.watermark == "" and cp.run_id == first
                   for cp in manifest.checkpoints(first))

        report = {"status": "succeeded", "copied": 3, "failures": [["k", "Boom"]], "name": "日本 & co"}
        manifest.finish_run("succeeded", report)
        done = manifest.latest_run()
        assert done.status == "succeeded" and done.finished >= done.started
        assert json.loads(done.report) == report

        second = manifest.start_run([Shard("0001", "a/")])
        assert second > first
        assert [r.run_id for r in manifest.runs(10)] == [second, first]
        assert [r.run_id for r in manifest.runs(1)] == [second]
        assert [cp.shard.shard_id for cp in manifest.checkpoints(second)] == ["0001"]

        manifest.record([], [Checkpoint(Shard("0001", "a/"), PENDING, "a/k", Tally(copied=2))])
        again = self.reopen(make, manifest)
        assert again.latest_run().run_id == second and again.latest_run().status == "running"
        resumed = again.resume_run(second)
        assert again.run_id == second
        assert [(cp.shard.shard_id, cp.watermark, cp.tally.copied) for cp in resumed] == [("0001", "a/k", 2)]
        again.record([rec("a/z")])
        assert again.lookup("a/z").run_id == second  # records after resume belong to the resumed run
        assert [cp.shard.shard_id for cp in again.resume_run(first)] == ["0001", "0002"]

    def test_jobs_are_separate(self, make, manifest):
        other = make(manifest.job + "-other")
        a = manifest.start_run([Shard("mine", "m/")])
        b = other.start_run([Shard("theirs", "t/")])
        manifest.record([rec("m/1")])
        other.record([rec("t/1")])
        assert [r.run_id for r in manifest.runs(10)] == [a] and [r.run_id for r in other.runs(10)] == [b]
        assert [cp.shard.shard_id for cp in manifest.checkpoints(a)] == ["mine"]
        assert [cp.shard.shard_id for cp in other.checkpoints(b)] == ["theirs"]
        assert [r.key for r in manifest.records_page("", "", "", 10)] == ["m/1"]
        assert other.lookup("m/1") is None

    # -- checkpoints ----------------------------------------------------------------------------------------

    def test_checkpoint_round_trip_with_tally(self, make, manifest):
        run = manifest.start_run([Shard("s1", "p/", "p/a", "p/z", "/")])
        tally = Tally(listed=70, copied=5, skipped=3, would_copy=1, bytes_copied=5 << 30,
                      bytes_listed=6 << 30, would_copy_bytes=7, part_size_bytes=8 << 20, server_side_copies=2)
        tally.skipped_reasons = {"same_etag": 2, "newer_at_destination": 1}
        for i in range(60):
            tally.fail(f"p/key-{i:03d} é", f"Error{i}")
        shard = Shard("s1", "p/", "p/a", "p/z", "/")
        manifest.record([], [Checkpoint(shard, PENDING, "p/key-001", Tally(copied=1))])
        manifest.record([], [Checkpoint(shard, DONE, "p/z", tally)])  # the newer checkpoint of a shard wins
        tally.copied = 999  # the caller's Tally is not the stored one

        def check(m):
            (cp,) = m.checkpoints(run)
            assert cp.shard == shard and cp.status == DONE and cp.watermark == "p/z" and cp.run_id == run
            got = cp.tally
            assert (got.listed, got.copied, got.skipped, got.failed, got.would_copy) == (70, 5, 3, 60, 1)
            assert (got.bytes_copied, got.bytes_listed, got.would_copy_bytes) == (5 << 30, 6 << 30, 7)
            assert (got.part_size_bytes, got.server_side_copies) == (8 << 20, 2)
            assert got.skipped_reasons == {"same_etag": 2, "newer_at_destination": 1}
            assert len(got.failures) == CHECKPOINT_FAILURES  # capped; the count stays exact
            assert (got.failures[0].key, got.failures[0].error) == ("p/key-000 é", "Error0")

        check(manifest)
        check(self.reopen(make, manifest))

    def test_covering_checkpoint(self, make, manifest):
        assert manifest.covering_checkpoint("a/x") is None
        first = manifest.start_run([Shard("a", "a/"), Shard("b", "b/")])
        manifest.record([], [Checkpoint(Shard("a", "a/"), DONE, "a/zz", Tally(copied=3))])
        manifest.finish_run("succeeded", {})
        second = manifest.start_run([Shard("b", "b/")])
        manifest.record([], [Checkpoint(Shard("b", "b/"), PENDING, "b/m", Tally(copied=1))])

        def check(m):
            got = m.covering_checkpoint("a/x")
            assert got is not None and (got.run_id, got.shard.shard_id, got.status) == (first, "a", DONE)
            got = m.covering_checkpoint("b/c")  # settled by the watermark of the running run
            assert got is not None and (got.run_id, got.shard.shard_id) == (second, "b")
            assert m.covering_checkpoint("b/x") is None  # beyond the watermark, not yet settled
            assert m.covering_checkpoint("c/x") is None

        check(manifest)
        check(self.reopen(make, manifest))

    # -- per-object records ---------------------------------------------------------------------------------

    def test_records_page_bounds_prefix_and_order(self, make, manifest):
        manifest.start_run([])
        keys = ["a", "a/", "a/b", "a/b/c", "a/b0", "a/c", "a0", "a.b", "b/x", "b/y y", "b/+%?&=",
                "é/x", "日本/キー", "z\U0001f600", "zz"]
        model: dict[str, ObjectRecord] = {}
        flushed, buffered = keys[::2], keys[1::2]
        for i, key in enumerate(flushed):
            model[key] = rec(key, "failed" if i % 3 == 0 else "copied", "old")
        manifest.record(list(model.values()))
        manifest.flush()
        for i, key in enumerate(buffered):  # not flushed: answered from the buffer
            model[key] = rec(key, "failed" if i % 3 == 1 else "copied", "new")
        model["a/b"] = rec("a/b", "copied", "newer")  # flushed failed, then copied: the newest wins
        manifest.record([model[k] for k in buffered] + [model["a/b"]])

        combos = itertools.product(["", "a/", "a/b", "b/", "é", "日本/", "zz", "q"],
                                   ["", "a/", "a/b", "b/x", "é/x"],
                                   ["", "a/b", "a/b0", "b/y y", "z"])
        for prefix, start_after, end_at in combos:
            want = sorted(k for k in model
                          if k > start_after and k.startswith(prefix) and (not end_at or k <= end_at))
            for limit in (2, 100):
                got = manifest.records_page(prefix, start_after, end_at, limit)
                assert got == [as_record(model[k], manifest.run_id) for k in want[:limit]], (prefix, start_after, end_at, limit)

    def test_records_page_paging(self, make, manifest):
        manifest.start_run([])
        keys = [f"p/{i:04d}" for i in range(0, 300, 3)] + ["p0", "o"]
        manifest.record([rec(k) for k in keys[:40]])
        manifest.flush()
        manifest.record([rec(k, "failed") for k in keys[40:]])

        def page_all(m, limit):
            out, after = [], ""
            for _ in range(1000):
                page = m.records_page("p/", after, "", limit)
                assert len(page) <= limit
                if not page:
                    return out
                out += page
                after = page[-1].key
            raise AssertionError("paging did not end")

        want = sorted(k for k in keys if k.startswith("p/"))
        assert [r.key for r in page_all(manifest, 7)] == want
        assert [r.key for r in page_all(manifest, 1)] == want
        again = self.reopen(make, manifest)
        assert [r.key for r in page_all(again, 7)] == want
        assert [r.key for r in again.records_page("", "p/0150", "p/0180", 100)] == ["p/0153", "p/0156", "p/0159",
                                                                                   "p/0162", "p/0165", "p/0168",
                                                                                   "p/0171", "p/0174", "p/0177",
                                                                                   "p/0180"]

    def test_failure_never_overwrites_copied(self, make, manifest):
        manifest.start_run([])
        manifest.record([rec("both-buffered", "copied", "good")])
        manifest.record([rec("both-buffered", "failed", "bad")])
        manifest.record([rec("flushed-first", "copied", "good")])
        manifest.flush()
        manifest.record([rec("flushed-first", "failed", "bad")])
        manifest.record([rec("failed-then-copied", "failed", "bad")])
        manifest.record([rec("failed-then-copied", "copied", "good")])
        manifest.record([rec("failed-twice", "failed", "first")])
        manifest.record([rec("failed-twice", "failed", "second")])

        def check(m):
            for key in ("both-buffered", "flushed-first", "failed-then-copied"):
                got = m.lookup(key)
                assert got is not None and got.status == "copied" and got.dst_etag == "dst-good", key
            assert m.lookup("failed-twice").error == "Boomsecond"
            page = {r.key: r for r in m.records_page("", "", "", 100)}
            assert page["flushed-first"] == as_record(rec("flushed-first", "copied", "good"), manifest.run_id)
            assert page["both-buffered"] == as_record(rec("both-buffered", "copied", "good"), manifest.run_id)

        check(manifest)
        manifest.flush()
        check(manifest)
        again = self.reopen(make, manifest)
        again.start_run([])  # a later run's failure does not overwrite an earlier run's copy either
        again.record([rec("flushed-first", "failed", "later"), rec("both-buffered", "failed", "later")])
        check(again)
        again.flush()
        check(again)
        assert again.lookup("flushed-first").run_id < again.run_id

    def test_lookup(self, make, manifest):
        run = manifest.start_run([])
        assert manifest.lookup("nothing/here") is None
        full = ObjectRecord("k/é x", 123, "src", "dst/k/é x", "dst-etag", "copied", "", verified=True)
        manifest.record([full, rec("k/failed", "failed", "x", run_id=run)])
        for m in self.now_and_reopened(make, manifest):
            assert m.lookup("k/é x") == ObjectRecord("k/é x", 123, "src", "dst/k/é x", "dst-etag", "copied", "",
                                                     verified=True, run_id=run)
            got = m.lookup("k/failed")
            assert (got.status, got.error, got.dst_etag, got.run_id) == ("failed", "Boomx", "", run)
            assert m.lookup("k/") is None and m.lookup("k/é") is None  # exact keys, never a prefix

    def test_unicode_keys(self, make, manifest):
        manifest.start_run([])
        manifest.record([rec(k, tag=str(i)) for i, k in enumerate(UNICODE_KEYS)])
        for i, key in enumerate(UNICODE_KEYS):
            manifest.upload_opened(upload(key, f"upload {i}+/?&%"))
            manifest.parts_sent(key, f"upload {i}+/?&%", parts([1, 2]))
        for m in self.now_and_reopened(make, manifest):
            assert [r.key for r in m.records_page("", "", "", 100)] == sorted(UNICODE_KEYS)
            for i, key in enumerate(UNICODE_KEYS):
                assert m.lookup(key).src_etag == f"src-{i}"
                assert [r.key for r in m.records_page(key, "", "", 10)] == [k for k in sorted(UNICODE_KEYS)
                                                                            if k.startswith(key)]
                (found,) = m.find_uploads(key)
                assert found.upload_id == f"upload {i}+/?&%" and sorted(found.parts) == [1, 2]
            assert m.lookup("e/decomposed") is None and m.lookup("é/accented ") is None
            assert m.open_uploads() == sorted((k, f"upload {i}+/?&%") for i, k in enumerate(UNICODE_KEYS))

    def test_reads_see_unflushed_writes(self, manifest):
        run = manifest.start_run([Shard("s", "x/")])
        manifest.record([rec("x/1"), rec("x/2", "failed")],
                        [Checkpoint(Shard("s", "x/"), PENDING, "x/2", Tally(copied=1))])
        manifest.upload_opened(upload("x/big", "u-1"))
        manifest.parts_sent("x/big", "u-1", parts([1, 3]))
        assert [r.key for r in manifest.records_page("x/", "", "", 10)] == ["x/1", "x/2"]
        assert manifest.lookup("x/2").status == "failed"
        assert manifest.checkpoints(run)[0].watermark == "x/2"
        assert manifest.covering_checkpoint("x/1").watermark == "x/2"
        (found,) = manifest.find_uploads("x/big")
        assert found.parts == {1: parts([1])[0], 3: parts([3])[0]}

    def test_progress_and_write_counters(self, manifest):
        manifest.start_run([])
        before = manifest.write_counts()
        assert before == (manifest.writes, manifest.items_written)
        manifest.record([rec("a")], [], LiveReport("w1", (("s1", 1, Tally(copied=2, bytes_copied=10)),), 3, 300))
        manifest.record([], [], LiveReport("w2", (("s2", 1, Tally(copied=1, failed=1, listed=5)),), 1, 100))
        manifest.record([], [], LiveReport("w1", (("s1", 2, Tally(copied=4, bytes_copied=20)),), 2, 200))
        progress = manifest.progress()
        assert {sid: (seq, t.copied) for sid, (seq, t) in progress.shards.items()} == {"s1": (2, 4), "s2": (1, 1)}
        assert (progress.objects_in_flight, progress.bytes_in_flight) == (3, 300), "each worker's latest gauges"
        assert manifest.progress().shards == {}, "only what changed since the last call"
        manifest.flush()
        writes, items = manifest.write_counts()
        assert writes > before[0] and items >= before[1] + 1

    # -- multipart uploads ----------------------------------------------------------------------------------

    def test_uploads_match_the_exact_key(self, make, manifest):
        run = manifest.start_run([])
        # "dir/file" is a prefix of each of the other keys: none of their uploads may match it.
        for key, upload_id in [("dir/file", "u-old"), ("dir/file.part2", "u-p2"), ("dir/file2", "u-f2"),
                               ("dir/file/x", "u-dx"), ("dir/fil", "u-fil"), ("dir/file", "u-new")]:
            manifest.upload_opened(upload(key, upload_id))
        manifest.parts_sent("dir/file", "u-old", parts([1, 2]))
        manifest.parts_sent("dir/file", "u-new", parts([1]))
        manifest.parts_sent("dir/file2", "u-f2", parts([1, 2, 3]))
        for m in self.now_and_reopened(make, manifest):
            found = m.find_uploads("dir/file")
            assert [u.upload_id for u in found] == ["u-new", "u-old"]  # newest first
            assert found[0] == UploadState("dir/file", "u-new", "src-etag", 80 * 1024 * 1024, 8 * 1024 * 1024,
                                           {1: parts([1])[0]}, run)
            assert sorted(found[1].parts) == [1, 2]
            assert [u.upload_id for u in m.find_uploads("dir/fil")] == ["u-fil"]
            assert [u.upload_id for u in m.find_uploads("dir/file2")] == ["u-f2"]
            assert m.find_uploads("dir/") == [] and m.find_uploads("dir/file.") == []
            assert m.open_uploads() == [("dir/fil", "u-fil"), ("dir/file", "u-new"), ("dir/file", "u-old"),
                                        ("dir/file.part2", "u-p2"), ("dir/file/x", "u-dx"), ("dir/file2", "u-f2")]

    def test_intent_is_replaced_by_the_real_upload_of_its_key(self, make, manifest):
        manifest.start_run([])
        manifest.upload_opened(upload("a/key", ""))  # intent: a Create is about to be sent
        manifest.upload_opened(upload("a/key2", ""))
        assert [u.upload_id for u in manifest.find_uploads("a/key")] == [""]
        assert manifest.open_uploads() == [("a/key", ""), ("a/key2", "")]
        manifest.upload_opened(upload("a/key", "u-real"))
        for m in self.now_and_reopened(make, manifest):
            assert [u.upload_id for u in m.find_uploads("a/key")] == ["u-real"]
            assert [u.upload_id for u in m.find_uploads("a/key2")] == [""]  # another key's intent stays
            assert m.open_uploads() == [("a/key", "u-real"), ("a/key2", "")]
        manifest = m
        manifest.upload_closed("a/key2", "")
        assert manifest.open_uploads() == [("a/key", "u-real")]

    def test_parts_beyond_one_batch(self, make, manifest):
        manifest.start_run([])
        manifest.upload_opened(upload("big/object", "u-1"))
        manifest.parts_sent("big/object", "u-1", parts(range(1, 31)))
        manifest.flush()
        manifest.parts_sent("big/object", "u-1", parts(range(31, 61)))
        manifest.parts_sent("big/object", "u-1", [PartInfo(5, "replaced", 1)])  # a part re-sent: newest wins
        want = {p.part_number: p for p in parts(range(1, 61))} | {5: PartInfo(5, "replaced", 1)}
        assert manifest.find_uploads("big/object")[0].parts == want
        again = self.reopen(make, manifest)
        assert again.find_uploads("big/object")[0].parts == want

    def test_upload_closed_removes_upload_and_parts(self, make, manifest):
        manifest.start_run([])
        for key in ("k", "k2"):
            manifest.upload_opened(upload(key, "u-1"))
            manifest.parts_sent(key, "u-1", parts(range(1, 41)))
        manifest.flush()
        manifest.parts_sent("k", "u-1", parts([41, 42]))  # still buffered when the upload closes
        manifest.upload_closed("k", "u-1")
        assert manifest.find_uploads("k") == []
        assert manifest.open_uploads() == [("k2", "u-1")]
        assert sorted(manifest.find_uploads("k2")[0].parts) == list(range(1, 41))  # same upload id, other key
        manifest.upload_opened(upload("k", "u-1"))  # an id used again starts with no parts
        again = self.reopen(make, manifest)
        assert [u.parts for u in again.find_uploads("k")] == [{}]
        again.upload_closed("k", "u-1")
        again.upload_closed("k2", "u-1")
        again.upload_closed("never", "opened")  # closing an unknown upload is harmless
        assert again.open_uploads() == []

    def test_ten_thousand_parts(self, manifest):
        manifest.start_run([])
        manifest.upload_opened(upload("huge/object", "u-huge", 5 * 1024**3))
        for start in range(1, 10_001, 1000):
            manifest.parts_sent("huge/object", "u-huge", parts(range(start, start + 1000)))
        manifest.flush()
        (found,) = manifest.find_uploads("huge/object")
        assert len(found.parts) == 10_000 and found.parts[10_000] == parts([10_000])[0]
        assert found.part_size_bytes == 5 * 1024**3
        manifest.upload_closed("huge/object", "u-huge")
        assert manifest.find_uploads("huge/object") == [] and manifest.open_uploads() == []

    # -- what dth-ray console reads: failures by page, live records, the jobs ------------------------------------

    def test_failures_page_in_key_order_by_keyset(self, make, manifest):
        run = manifest.start_run([])
        failed = [ObjectRecord(f"f/{i:04d}", 10, "e", f"f/{i:04d}", "", "failed", f"Throttled: slow down {i}",
                               code="SlowDown", attempts=5) for i in range(120)]
        manifest.record(failed[60:])
        manifest.flush()
        manifest.record(failed[:60])  # buffered (DynamoDB): pages must see them too
        for m in self.now_and_reopened(make, manifest):
            seen, after = [], ""
            while True:
                page = m.failures_page(run, after, 50)
                seen += page
                if len(page) < 50:
                    break
                after = page[-1].key
            assert [f.key for f in seen] == [f"f/{i:04d}" for i in range(120)]
            first = seen[7]
            assert (first.error_class, first.code, first.attempts, first.message, first.run_id) == (
                "Throttled", "SlowDown", 5, "slow down 7", run)
            assert m.failures_page(run, "f/0118", 50)[0].key == "f/0119"
            assert m.failures_page(run, "f/0119", 50) == [] and m.failures_page(run + 1, "", 50) == []

    def test_failures_page_drops_keys_copied_later_in_the_run(self, make, manifest):
        run = manifest.start_run([])
        manifest.record([rec("a/1", "failed", "x"), rec("a/2", "failed", "x"), rec("a/3", "failed", "x")])
        manifest.flush()
        manifest.record([rec("a/2", "copied", "good")])  # a later execution copied it
        for m in self.now_and_reopened(make, manifest):
            page = m.failures_page(run, "", 10)
            assert [(f.key, f.error_class, f.attempts) for f in page] == [("a/1", "Boomx", 1), ("a/3", "Boomx", 1)]

    def test_failures_page_keeps_a_failure_after_an_earlier_runs_copy(self, make, manifest):
        manifest.start_run([])
        manifest.record([rec("b/1", "copied", "good")])
        manifest.flush()
        again = self.reopen(make, manifest)
        run = again.start_run([])
        again.record([rec("b/1", "failed", "later")])
        for m in self.now_and_reopened(make, again):
            assert [f.key for f in m.failures_page(run, "", 10)] == ["b/1"]
            assert m.lookup("b/1").status == "copied"

    def test_live_record_is_replaced_and_read_back(self, make, manifest):
        run = manifest.start_run([])
        assert manifest.live(run) is None
        first = LiveRecord(run, heartbeat=1000.0, objects=5, total_objects=50, running=("s1",),
                           samples=((995.0, 0, 0), (1000.0, 500, 5)))
        manifest.publish(first)
        later = dataclasses.replace(first, heartbeat=1005.0, objects=9, eta_s=12.5, samples=first.samples + (
            (1005.0, 900, 9),))
        manifest.publish(later)
        for m in self.now_and_reopened(make, manifest):
            assert m.live(run) == later
            assert m.live(run + 1) is None
        assert later.stale(1005.0 + 3 * later.interval_s + 0.1) and not later.stale(1006.0)

    def test_jobs_lists_each_jobs_latest_run_and_stores(self, make, manifest):
        other = make(manifest.job + "-other")
        first = manifest.start_run([Shard("s", "a/")], "s3://src/", "s3://dst/", ["source.bucket=src"])
        manifest.finish_run("succeeded", {"status": "succeeded"})
        second = manifest.start_run([Shard("s", "a/"), Shard("t", "b/")], "s3://src/", "s3://dst/",
                                    ["source.bucket=src", "source.credentials=env:SRC"])
        manifest.record([], [Checkpoint(Shard("s", "a/"), DONE, "a/z", Tally(listed=3, copied=2, failed=1))])
        other.start_run([])  # stores not recorded (as a run of an earlier release)
        other.finish_run("failed", {"status": "failed", "source": "oss://o/", "destination": "s3://d/"})
        for m in self.now_and_reopened(make, manifest):
            found = {info.job: info for info in m.jobs() if info.job.startswith(manifest.job)}
            mine = found[manifest.job]
            assert mine.run.run_id == second > first and mine.run.status == "running"
            assert (mine.source, mine.destination) == ("s3://src/", "s3://dst/")
            assert mine.args == ("source.bucket=src", "source.credentials=env:SRC")
            assert mine.shards == (1, 2) and (mine.settled.listed, mine.settled.failed) == (3, 1)
            theirs = found[manifest.job + "-other"]
            assert theirs.run.status == "failed" and theirs.args == ()
