"""`report_objects`: the per-object completion report on the runtime without servers or Ray. A 100,000-object
run with planted failures, retried objects, skipped objects and a shard whose listing fails mid-way has one
row per object whose results add up to the JSON report; a worker lost mid-shard (its parts cut small) still
leaves each object exactly one row."""

from __future__ import annotations

import asyncio
import collections
import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dth_ray.errors import Fatal, Transient
from dth_ray.runtime import objectreport
from dth_ray.runtime.driver import run_sync
from dth_ray.stores.memory import MemoryStore
from tests.integration.test_runtime_in_memory import (
    _kill_busy_worker,
    _run_in_thread,
    _wait_until,
    contents,
    seed,
    settings_for,
    store,
)


def read_report(section: dict, folder=None, bucket: str = "") -> tuple[dict, list[dict]]:
    """The report's manifest.json and every row of the parts it lists."""
    def fetch(key: str) -> bytes:
        if folder is not None:
            return (folder / key).read_bytes()
        return asyncio.run(store(bucket).get(key)).data

    manifest_key = section["manifest"].split("://", 1)[-1].split("/", 1)[1] if bucket else \
        section["manifest"][len(str(folder)) + 1:]
    manifest = json.loads(fetch(manifest_key))
    rows: list[dict] = []
    for part in manifest["parts"]:
        data = fetch(part["key"])
        if manifest["format"] == "parquet":
            got = pq.read_table(pa.BufferReader(data)).to_pylist()
        else:
            got = list(csv.DictReader(io.StringIO(data.decode())))
        assert len(got) == part["rows"], part
        rows.extend(got)
    return manifest, rows


def test_a_100k_object_run_with_planted_failures_has_one_row_per_object(tmp_path, buckets):
    objects = {f"p{i % 10}/o{i:06d}": i.to_bytes(4, "big") * 4 for i in range(100_000)}
    seed(buckets[0], objects)
    seed(buckets[1], {k: v for k, v in objects.items() if k.startswith("p9/o0")})  # already there: skipped
    faults = MemoryStore.faults(buckets[0])
    faults.fail("get", Fatal("planted failure"), times=None, key_prefix="p3/o00")  # fail at once
    for i in range(5, 1000, 50):  # once each: retried, then copied
        faults.fail("get", Transient("flaky"), key_prefix=f"p5/o{i:06d}")
    faults.fail("get", Transient("gives up"), times=None, key_prefix="p1/o0012")  # fails after its attempts
    faults.fail("list_page", Transient("listing broke"), times=2, key_prefix="p7/", after=3)  # shard retried
    report_dir = tmp_path / "report"
    settings = settings_for(tmp_path, buckets, f"report_objects={report_dir}")

    report = run_sync(settings, in_process=2)

    out = report.to_json()
    planted = sum(k.startswith(("p3/o00", "p1/o0012")) for k in objects)
    assert out["objects"]["failed"] == planted and out["objects"]["listed"] == len(objects)
    assert out["report_objects"]["rows"] == len(objects)
    manifest, rows = read_report(out["report_objects"], folder=report_dir)
    assert manifest["rows"] == len(rows) == len(objects)
    assert sorted(r["key"] for r in rows) == sorted(objects), "every object, once"
    results = collections.Counter(r["result"] for r in rows)
    assert dict(results) == {k: v for k, v in out["objects"].items() if k != "listed" and v}
    skipped = collections.Counter(r["reason"] for r in rows if r["result"] == "skipped")
    assert dict(skipped) == out["skipped_reasons"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["p3/o000003"]["result"] == "failed" and by_key["p3/o000003"]["attempts"] == "1"
    assert "Fatal: " in by_key["p3/o000003"]["reason"]
    assert by_key["p1/o001201"]["attempts"] == "2" and "Transient" in by_key["p1/o001201"]["reason"]
    assert all(by_key[f"p5/o{i:06d}"]["attempts"] == "2" for i in range(5, 1000, 50))
    assert all(by_key[f"p5/o{i:06d}"]["result"] == "copied" for i in range(5, 1000, 50))
    copied = by_key["p0/o000000"]
    assert (copied["result"], copied["reason"], copied["source_checksum_kind"]) == ("copied", "new", "md5")
    assert copied["source_checksum"] == copied["destination_etag"] and copied["size"] == "16"
    assert {r["run_id"] for r in rows} == {str(report.run_id)}


def test_a_worker_lost_mid_shard_leaves_each_object_one_row(tmp_path, buckets, monkeypatch):
    monkeypatch.setattr(objectreport, "PART_ROWS", 40)
    objects = {f"p{i % 3}/o{i:05d}": bytes([i % 256]) * 64 for i in range(1500)}
    seed(buckets[0], objects)
    MemoryStore.faults(buckets[1]).delay("put", 0.002)
    MemoryStore.reset("reports")
    settings = settings_for(tmp_path, buckets, "report_objects=memory://reports/runs/",
                            "report_objects_format=parquet")
    run, thread, out = _run_in_thread(settings)
    _wait_until(lambda: MemoryStore.faults(buckets[1]).calls["put"] >= 400)
    _kill_busy_worker(run)
    thread.join(120)
    report = out[0].to_json()

    assert report["status"] == "succeeded", report["errors"]
    manifest, rows = read_report(report["report_objects"], bucket="reports")
    assert len(rows) == len(objects) == report["report_objects"]["rows"]
    assert sorted(r["key"] for r in rows) == sorted(objects)
    assert {r["result"] for r in rows} == {"copied"}
    assert collections.Counter(r["reason"] for r in rows)["recovered"] == report["recovered"]["objects"]
    referenced = {p["key"] for p in manifest["parts"]}
    written = {k for k in contents("reports") if k.endswith(".parquet")}
    assert written == referenced, "a lost attempt's part was replaced by its redo"
    MemoryStore.reset("reports")


@pytest.mark.parametrize("value", ["s3://dst-bucket/", "memory://dst-x/in/scope/"])
def test_a_report_inside_the_destination_is_refused(tmp_path, buckets, value):
    from dth_ray.compose import load_settings
    from dth_ray.errors import ConfigError

    bucket = value.split("/")[2]
    with pytest.raises(ConfigError, match="inside the destination"):
        load_settings(["destination.type=memory", f"destination.bucket={bucket}", "destination.prefix=in/",
                       "source.type=memory", "source.bucket=src", f"report_objects={value}"])
