"""`source=maxcompute` direct mode on a local Ray: unmodified pyodps in the export actors against the MaxCompute
test endpoint, Parquet streamed into rclone's S3 (SigV4 checked), read back with pyarrow and compared with what
the endpoint served; `_SUCCESS` only once a partition is complete; failed and SIGKILLed exports resume without
re-reading finished shards or duplicating rows; new and rewritten partitions are found on the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from dth_ray.compose import load_settings
from dth_ray.maxcompute.common import job_name, state_path
from dth_ray.maxcompute.plan import parse_spec
from dth_ray.maxcompute.runner import run_maxcompute
from dth_ray.maxcompute.state import ExportState
from tests.integration.helpers import listing
from tests.integration.mc_helpers import (
    COLUMNS,
    MC_KEY,
    PARQUET_TYPES,
    PARTITION_KEYS,
    PROJECT,
    expected_rows,
    make_rows,
    mc_overrides,
    read_folder,
    same_type,
)
from tests.servers.odps_server import OdpsServiceError, OdpsTestServer

# Export actors resolve keys from their environment, which they inherit from the Ray started for the session:
# set them at import, before any test starts Ray.
os.environ.update({"MCTEST_ACCESS_KEY_ID": MC_KEY[0], "MCTEST_SECRET_ACCESS_KEY": MC_KEY[1]})

PARTS = {  # spec -> (first id, rows); shard_rows=500 below gives 3, 1, 2 and 1 shards
    "ds=2024-01-01,region=cn": (0, 1300),
    "ds=2024-01-01,region=us": (10_000, 420),
    "ds=2024-01-02,region=cn": (20_000, 1000),
    "ds=2024-01-02,region=us:west 1": (30_000, 3),  # a value Hive escapes in the path
}
FOLDERS = {"ds=2024-01-01,region=cn": "ds=2024-01-01/region=cn/", "ds=2024-01-01,region=us": "ds=2024-01-01/region=us/",
           "ds=2024-01-02,region=cn": "ds=2024-01-02/region=cn/", "ds=2024-01-02,region=us:west 1": "ds=2024-01-02/region=us%3Awest 1/"}
TUNING = ["maxcompute.shard_rows=500", "maxcompute.row_group_size=16KiB", "maxcompute.file_size=20KB",
          "transfer.actors=2"]


@pytest.fixture(scope="module")
def odps():
    with OdpsTestServer(*MC_KEY, project=PROJECT, batch_rows=200, chunk_bytes=8192) as srv:
        srv.create_table("orders", COLUMNS, PARTITION_KEYS)
        for index, (spec, (first, rows)) in enumerate(PARTS.items()):
            srv.add_partition("orders", {"ds": spec.split(",")[0][3:], "region": spec.split("region=")[1]},
                              make_rows(first, rows, seed=index))
        yield srv


def _check_partition(client, bucket: str, folder: str, served) -> dict:
    """The folder's Parquet equals what the endpoint served (rows and types); returns its manifest."""
    table, manifest, keys = read_folder(client, bucket, folder)
    assert table is not None, f"no data files in {folder}"
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == expected_rows(served)
    assert table.column_names == [name for name, _ in COLUMNS]  # partition columns live in the path
    for name, expected in PARQUET_TYPES.items():
        assert same_type(table.schema.field(name).type, expected), (name, table.schema.field(name).type)
    sizes = {k: v["Size"] for k, v in listing(client, bucket, folder).items()}
    assert manifest["rows"] == manifest["source_record_count"] == served.num_rows
    assert sorted(f["key"] for f in manifest["files"]) == keys
    assert all(f["bytes"] == sizes[f["key"]] for f in manifest["files"])
    assert manifest["bytes"] == sum(sizes[k] for k in keys)
    return manifest


def _no_open_uploads(client, bucket: str, prefix: str) -> bool:
    try:
        return client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
    except client.exceptions.NoSuchUpload:  # rclone's answer when there are none
        return True


def test_direct_export_types_hive_layout_and_success_only_when_complete(odps, e2e_env, ray_local, unique_prefix,
                                                                        tmp_path):
    dst = e2e_env.destination
    client = dst.client()
    prefix = f"lake/{unique_prefix}orders/"
    seen = {}

    def hold_last_shard(partition: str, start: int, count: int) -> None:
        # The last shard of the first partition waits until its other shards' files are at the destination;
        # the partition's _SUCCESS must not be there yet.
        if partition != "ds=2024-01-01,region=cn" or start != 1000:
            return
        folder = prefix + FOLDERS[partition]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = {k[len(folder):] for k in listing(client, dst.bucket, folder)}
            if any(n.startswith("part-00000-") for n in names) and any(n.startswith("part-00001-") for n in names):
                break
            time.sleep(0.1)
        seen["others_done"] = time.monotonic() < deadline
        seen["success_early"] = "_SUCCESS" in {k[len(folder):] for k in listing(client, dst.bucket, folder)}

    odps.gate_downloads(hold_last_shard)
    try:
        cfg = load_settings(mc_overrides(odps, dst, prefix, str(tmp_path / "m.sqlite"), *TUNING))
        report = run_maxcompute(cfg)
    finally:
        odps.gate_downloads(None)

    assert report["status"] == "succeeded", report["failures"]
    assert report["partitions"] == {"selected": 4, "exported": 4, "skipped": 0, "failed": 0}
    assert report["rows"] == sum(rows for _, rows in PARTS.values())
    assert seen == {"others_done": True, "success_early": False}
    keys = set(listing(client, dst.bucket, prefix))
    assert {k[len(prefix):].rsplit("/", 1)[0] + "/" for k in keys} == set(FOLDERS.values())  # Hive-style only
    files = 0
    for spec, folder in FOLDERS.items():
        manifest = _check_partition(client, dst.bucket, prefix + folder, odps.rows("orders", spec))
        assert manifest["partition"] == spec and manifest["table"] == f"{PROJECT}.orders"
        files += len(manifest["files"])
    assert files == report["files"] > 7  # 7 shards, and files rolled at 20 KB within shards
    assert _no_open_uploads(client, dst.bucket, prefix)


def test_failed_shard_then_rerun_resumes_without_rereading_or_duplicating(odps, e2e_env, ray_local, unique_prefix,
                                                                          tmp_path):
    dst = e2e_env.destination
    client = dst.client()
    prefix = f"lake/{unique_prefix}orders/"
    target = "ds=2024-01-02,region=cn"

    def refuse_second_shard(partition: str, start: int, count: int) -> None:
        if partition == target and start == 500:
            raise OdpsServiceError(403, "NoPermission", "ODPS-0130013: Authorization exception (injected)")

    cfg = load_settings(mc_overrides(odps, dst, prefix, str(tmp_path / "m.sqlite"), *TUNING))
    odps.gate_downloads(refuse_second_shard)
    try:
        first = run_maxcompute(cfg)
    finally:
        odps.gate_downloads(None)
    assert first["status"] == "failed"
    assert [f["partition"] for f in first["failures"]] == [target]
    assert "_SUCCESS" not in {k.rsplit("/", 1)[1] for k in listing(client, dst.bucket, prefix + FOLDERS[target])}
    state = ExportState(state_path(cfg), job_name(cfg))
    finished = state.shards_done(parse_spec(target))
    state.close()
    assert 1 not in finished

    mark = len(odps.downloads)
    second = run_maxcompute(cfg)
    assert second["status"] == "succeeded", second["failures"]
    assert second["partitions"] == {"selected": 4, "exported": 1, "skipped": 3, "failed": 0}
    reread = [(p, start) for _, p, start, _ in odps.downloads[mark:]]
    assert reread and all(p == target for p, _ in reread)  # unchanged partitions are not read again
    assert not {start // 500 for _, start in reread} & set(finished)  # nor are finished shards
    for spec, folder in FOLDERS.items():
        _check_partition(client, dst.bucket, prefix + folder, odps.rows("orders", spec))
    assert _no_open_uploads(client, dst.bucket, prefix)


def test_sigkilled_export_resumes_without_duplicating_rows(odps, e2e_env, ray_local, unique_prefix, tmp_path):
    dst = e2e_env.destination
    client = dst.client()
    prefix = f"lake/{unique_prefix}orders/"
    args = mc_overrides(odps, dst, prefix, str(tmp_path / "m.sqlite"), *TUNING)
    reached, release = threading.Event(), threading.Event()
    served = []

    def stop_at_fourth(partition: str, start: int, count: int) -> None:
        served.append((partition, start))
        if len(served) == 4:
            reached.set()
            release.wait(60)  # held until the driver is gone; the shard is then lost with it
            raise OdpsServiceError(503, "ServiceUnavailable", "the export was killed")

    odps.gate_downloads(stop_at_fourth)
    proc = subprocess.Popen([sys.executable, "-m", "dth_ray", "sync", *args, "runtime.num_cpus=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert reached.wait(120), f"the export never reached its 4th shard: {proc.poll()} {served}"
        time.sleep(0.3)  # let the other actor's shard land mid-flight too
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
        odps.gate_downloads(None)
        cfg = load_settings(args)
        state = ExportState(state_path(cfg), job_name(cfg))
        finished = {spec: set(state.shards_done(parse_spec(spec))) for spec in PARTS}
        state.close()
        done_before = sum(len(s) for s in finished.values())
        assert 0 < done_before < 7

        mark = len(odps.downloads)
        report = run_maxcompute(cfg)
    finally:
        # The held request is answered only now: until Ray reaps the dead driver's actors, an answer would let
        # the orphan retry its read (harmless, it writes the same files, but it would blur the counts below).
        odps.gate_downloads(None)
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert report["status"] == "succeeded", report["failures"]
    reread = [(p, start // 500) for _, p, start, _ in odps.downloads[mark:]]
    assert len(reread) == 7 - done_before  # only shards without a recorded completion are read again
    shards = report["shards"]  # of the partitions still open: finished ones resumed, the others exported now
    assert shards["exported"] == 7 - done_before and shards["resumed"] + shards["exported"] == shards["planned"]
    assert not [r for r in reread if r[1] in finished[r[0]]]
    for spec, folder in FOLDERS.items():
        _check_partition(client, dst.bucket, prefix + folder, odps.rows("orders", spec))
    assert _no_open_uploads(client, dst.bucket, prefix)


def test_new_and_rewritten_partitions_are_exported_on_the_next_run(e2e_env, ray_local, unique_prefix, tmp_path):
    dst = e2e_env.destination
    client = dst.client()
    prefix = f"lake/{unique_prefix}events/"
    columns = [("id", "bigint"), ("msg", "string")]
    with OdpsTestServer(*MC_KEY, project=PROJECT) as srv:
        srv.create_table("events", columns, [("ds", "string")])
        srv.add_partition("events", "ds=1", [(i, f"a{i}") for i in range(900)], modified_s=1_700_000_000)
        srv.add_partition("events", "ds=2", [(i, f"b{i}") for i in range(50)], modified_s=1_700_000_000)
        args = [a.replace("maxcompute.table=orders", "maxcompute.table=events")
                for a in mc_overrides(srv, dst, prefix, str(tmp_path / "m.sqlite"), "maxcompute.shard_rows=300")]
        cfg = load_settings(args)
        first = run_maxcompute(cfg)
        assert first["partitions"]["exported"] == 2 and first["status"] == "succeeded"
        assert len(read_folder(client, dst.bucket, prefix + "ds=1/")[2]) == 3

        srv.add_partition("events", "ds=1", [(i, f"c{i}") for i in range(100)], modified_s=1_700_000_500)
        srv.add_partition("events", "ds=3", [(i, f"d{i}") for i in range(10)])
        mark = len(srv.downloads)
        second = run_maxcompute(cfg)
        assert second["status"] == "succeeded", second["failures"]
        assert second["partitions"] == {"selected": 3, "exported": 2, "skipped": 1, "failed": 0}
        assert {p for _, p, _, _ in srv.downloads[mark:]} == {"ds=1", "ds=3"}
        rewritten, manifest, keys = read_folder(client, dst.bucket, prefix + "ds=1/")
        assert sorted(rewritten.column("msg").to_pylist()) == sorted(f"c{i}" for i in range(100))
        assert len(keys) == 1 and manifest["rows"] == 100  # the older export's extra files were removed
        assert read_folder(client, dst.bucket, prefix + "ds=3/")[1]["rows"] == 10
        assert run_maxcompute(cfg)["partitions"]["skipped"] == 3
