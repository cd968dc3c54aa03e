"""The sync runtime without servers or Ray: the real scheduler, transfer workers, copier and SQLite manifest
over the in-memory store (dth_ray/stores/memory.py), with faults scripted in the store and workers killed
as a crash would. Every run ends either succeeded with the destination equal to the source and exact counts
(listed = copied + skipped + failed; the nodes sum to the copied objects), or failed with a rerun that
completes; no multipart upload is left open after a succeeded run."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import pytest

from dth_ray.compose import load_settings
from dth_ray.config import StoreConfig, StoreType
from dth_ray.errors import PermissionDenied, Transient
from dth_ray.model import ObjectHeaders
from dth_ray.ops import Ops
from dth_ray.runtime.driver import EARLIER, SyncRun, run_sync
from dth_ray.runtime.interrupts import Interrupts
from dth_ray.runtime.manifests import open_manifest
from dth_ray.runtime.progress import ProgressModel
from dth_ray.stores.memory import MemoryStore

MiB = 1024 * 1024


def store(bucket: str) -> MemoryStore:
    return MemoryStore(StoreConfig(type=StoreType.memory, bucket=bucket))


def seed(bucket: str, objects: dict[str, bytes]) -> None:
    async def put_all():
        s = store(bucket)
        for key, body in objects.items():
            await s.put(key, body, ObjectHeaders(content_type="application/x-test"), hashlib.md5(body).digest())

    asyncio.run(put_all())


def contents(bucket: str) -> dict[str, bytes]:
    async def read_all():
        s, out, token = store(bucket), {}, ""
        while True:
            page = await s.list_page("", token=token)
            for meta in page.objects:
                out[meta.key] = (await s.get(meta.key)).data
            if not page.next_token:
                return out
            token = page.next_token

    return asyncio.run(read_all())


def open_uploads(bucket: str) -> list:
    return asyncio.run(store(bucket).list_uploads(""))


def dataset(small: int = 120, big: int = 0) -> dict[str, bytes]:
    objects = {f"p{i % 6}/o{i:04d}": hashlib.sha256(str(i).encode()).digest() * (1 + i % 40) for i in range(small)}
    objects.update({f"big/{i}.bin": bytes([i + 1]) * (12 * MiB + 12345) for i in range(big)})
    return objects


def settings_for(tmp_path, buckets, *extra: str):
    src, dst = buckets
    return load_settings(["source.type=memory", f"source.bucket={src}", "destination.type=memory",
                          f"destination.bucket={dst}", f"manifest.path={tmp_path / 'manifest.sqlite'}",
                          "progress=off", "transfer.progress_interval_s=0.05", "transfer.multipart_threshold=5MiB",
                          "transfer.part_size=5MiB", "transfer.max_attempts=2", *extra])


def assert_exact(report, objects: dict[str, bytes], buckets, *, copied: int | None = None) -> None:
    """Succeeded, destination = source, counts that add up (and `copied` of them when given)."""
    t = report.tally
    assert report.status == "succeeded", (report.errors, report.unfinished, t.failures)
    assert t.listed == len(objects) == t.copied + t.skipped + t.failed and t.failed == 0
    if copied is not None:
        assert t.copied == copied, report.to_json()
    assert sum(n.objects for n in report.nodes) == t.copied
    assert sum(n.bytes for n in report.nodes) == t.bytes_copied
    assert contents(buckets[1]) == objects
    assert open_uploads(buckets[1]) == []


def test_a_clean_run_counts_exactly_and_the_manifest_agrees(tmp_path, buckets):
    objects = dataset(small=150, big=2)
    seed(buckets[0], objects)
    settings = settings_for(tmp_path, buckets)
    report = run_sync(settings, in_process=2)
    assert_exact(report, objects, buckets, copied=len(objects))
    assert report.tally.part_size_bytes == 5 * MiB
    manifest = open_manifest(settings.manifest, settings.job)
    try:
        checkpoints = manifest.checkpoints(report.run_id)
        assert checkpoints and all(cp.status == "done" for cp in checkpoints)
        assert sum(cp.tally.copied for cp in checkpoints) == len(objects)
        assert manifest.latest_run().status == "succeeded"
    finally:
        manifest.close()
    again = run_sync(settings, in_process=2)
    assert_exact(again, objects, buckets, copied=0)


def test_zero_objects_succeed_with_nothing_listed(tmp_path, buckets):
    report = run_sync(settings_for(tmp_path, buckets), in_process=2)
    assert report.status == "succeeded" and report.tally.listed == 0 and report.unfinished == []


def test_listing_errors_are_retried_from_the_watermark(tmp_path, buckets):
    objects = dataset()
    seed(buckets[0], objects)
    # Planning lists p3/ once; the shard's next two listings fail (the third of its three attempts succeeds).
    MemoryStore.faults(buckets[0]).fail("list_page", Transient("listing broke"), times=2, key_prefix="p3/", after=1)
    report = run_sync(settings_for(tmp_path, buckets), in_process=2)
    assert_exact(report, objects, buckets, copied=len(objects))


def test_every_shard_failing_fails_the_run_and_the_rerun_completes_it(tmp_path, buckets):
    objects = dataset()
    seed(buckets[0], objects)
    settings = settings_for(tmp_path, buckets)
    # Keys rotated right after planning (which lists each of p0/..p5/ once): every shard's listing is refused.
    MemoryStore.faults(buckets[0]).fail("list_page", PermissionDenied("keys rotated"), times=None, key_prefix="p",
                                        after=6)
    first = run_sync(settings, in_process=2)
    assert first.status == "failed" and first.tally.copied == 0
    assert first.errors and all("PermissionDenied" in e for e in first.errors)
    MemoryStore.faults(buckets[0]).clear()
    second = run_sync(settings, in_process=2)
    assert second.resumed and second.run_id == first.run_id
    assert_exact(second, objects, buckets, copied=len(objects))


def test_credentials_refused_after_planning_fail_objects_and_a_rerun_copies_them(tmp_path, buckets):
    objects = dataset(small=60, big=1)
    seed(buckets[0], objects)
    settings = settings_for(tmp_path, buckets)
    faults = MemoryStore.faults(buckets[0])
    for op in ("get", "get_into", "head"):
        faults.fail(op, PermissionDenied("secret rotated"), times=None)
    first = run_sync(settings, in_process=2)
    assert first.status == "failed" and first.tally.failed == len(objects) and first.tally.copied == 0
    assert first.tally.listed == first.tally.copied + first.tally.skipped + first.tally.failed
    faults.clear()
    second = run_sync(settings, in_process=2)
    assert second.resumed
    assert_exact(second, objects, buckets, copied=len(objects))


def _run_in_thread(settings, interrupts=None, workers: int = 2) -> tuple[SyncRun, threading.Thread, list]:
    run = SyncRun(settings, Ops(settings.config, settings.job), None, interrupts or Interrupts(), True, workers)
    out: list = []
    thread = threading.Thread(target=lambda: out.append(run.run()), daemon=True)
    thread.start()
    return run, thread, out


def _wait_until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def _kill_busy_worker(run: SyncRun) -> str:
    slot = next(s for s in run.scheduler.slots if s.load)
    node = slot.node_id
    slot.worker.kill()
    return node


@pytest.mark.parametrize("step", ["listing", "copying", "multipart"])
def test_a_worker_lost_at_each_step_its_shard_is_redone_and_counted_once(tmp_path, buckets, step):
    """Copies the lost worker made are found at the destination and counted copied (recovered), never
    skipped; the nodes still sum to the copied objects."""
    objects = dataset(small=150, big=2 if step == "multipart" else 0)
    seed(buckets[0], objects)
    dst_faults = MemoryStore.faults(buckets[1])
    if step == "listing":
        MemoryStore.faults(buckets[0]).delay("list_page", 0.3, times=3)
    elif step == "copying":
        dst_faults.delay("put", 0.01)
    else:
        dst_faults.delay("upload_part", 0.2)
    run, thread, out = _run_in_thread(settings_for(tmp_path, buckets))
    if step == "listing":
        _wait_until(lambda: run.scheduler is not None and any(s.load for s in run.scheduler.slots))
    elif step == "copying":
        _wait_until(lambda: dst_faults.calls["put"] >= 40)
    else:
        _wait_until(lambda: dst_faults.calls["upload_part"] >= 2)
    _kill_busy_worker(run)
    thread.join(60)
    report = out[0]
    assert_exact(report, objects, buckets, copied=len(objects))
    assert report.tally.skipped == 0, "objects the lost worker copied are not skipped"
    if step != "listing":
        assert report.tally.recovered > 0 or report.tally.copied == len(objects)


def test_an_interrupt_mid_copy_is_checkpointed_and_the_rerun_resumes_with_exact_counts(tmp_path, buckets):
    objects = dataset(small=200)
    seed(buckets[0], objects)
    MemoryStore.faults(buckets[1]).delay("put", 0.01)
    settings = settings_for(tmp_path, buckets)
    interrupts = Interrupts()
    run, thread, out = _run_in_thread(settings, interrupts)
    _wait_until(lambda: MemoryStore.faults(buckets[1]).calls["put"] >= 50)
    interrupts.request()
    thread.join(60)
    first = out[0]
    assert first.status == "interrupted" and first.unfinished
    assert first.tally.listed == first.tally.copied + first.tally.skipped + first.tally.failed
    assert sum(n.objects for n in first.nodes) == first.tally.copied
    MemoryStore.faults(buckets[1]).clear()
    second = run_sync(settings, in_process=2)
    assert second.resumed and second.run_id == first.run_id
    assert_exact(second, objects, buckets, copied=len(objects))
    assert any(n.node_id == EARLIER for n in second.nodes)


def test_sync_delete_works_on_a_short_run_with_no_actor_ever_up(tmp_path, buckets):
    objects = dataset(small=30)
    seed(buckets[0], objects)
    seed(buckets[1], {"p1/stale": b"old", "gone/too": b"old"})
    report = run_sync(settings_for(tmp_path, buckets, "sync.delete=true"), in_process=1)
    assert report.status == "succeeded", report.errors
    assert report.deletes is not None and report.deletes.deleted == 2
    assert contents(buckets[1]) == objects


def test_progress_counts_the_bytes_of_a_large_object_as_its_parts_land(tmp_path, buckets):
    """A single large object in flight moves the progress display's bytes before it completes (the report and
    the tallies still count it only when it completes)."""
    size = 40 * MiB
    seed(buckets[0], {"big.bin": bytes(range(256)) * (size // 256)})
    for op in ("get", "get_into"):
        MemoryStore.faults(buckets[0]).delay(op, 0.15)
    settings = settings_for(tmp_path, buckets, "transfer.parts_in_flight=2")
    model = ProgressModel()
    run = SyncRun(settings, Ops(settings.config, settings.job), model, Interrupts(), True, 1)
    out: list = []
    thread = threading.Thread(target=lambda: out.append(run.run()), daemon=True)
    thread.start()
    seen: list[tuple[int, int]] = []  # (bytes shown, objects copied) while running
    while thread.is_alive():
        view = model.view()
        seen.append((view.bytes, view.copied))
        time.sleep(0.02)
    report = out[0]
    assert report.status == "succeeded" and report.tally.bytes_copied == size
    partial = sorted({b for b, copied in seen if copied == 0 and 0 < b < size})
    assert len(partial) >= 3, f"bytes moved while the object was in flight: {partial}"
    assert all(b <= size for b, _ in seen)
    assert model.view().bytes == size
