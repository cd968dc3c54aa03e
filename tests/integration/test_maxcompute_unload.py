"""`source=maxcompute` unload mode: the UNLOAD statements sent to the MaxCompute test endpoint (whose UNLOAD
writes Parquet into the OSS test endpoint, as the service does), the normal engine copying the staging
folders to rclone's S3, then footers counted and `_SUCCESS` written per partition; leftovers of an interrupted
unload are cleared first, and a rerun unloads nothing again."""

from __future__ import annotations

import os

import pytest

from dth_ray.cli import main
from dth_ray.compose import load_settings
from dth_ray.maxcompute.runner import run_maxcompute
from tests.integration.conftest import OSS_KEY
from tests.integration.helpers import listing
from tests.integration.mc_helpers import (
    COLUMNS,
    MC_KEY,
    PARTITION_KEYS,
    PROJECT,
    make_rows,
    mc_overrides,
    read_folder,
)
from tests.servers.odps_server import OdpsTestServer, parse_unload, unload_to
from tests.servers.oss_server import OssTestServer

os.environ.update({"MCTEST_ACCESS_KEY_ID": MC_KEY[0], "MCTEST_SECRET_ACCESS_KEY": MC_KEY[1]})  # before Ray starts

ROLE = "acs:ram::1234567890123456:role/upload2oss"
PARTS = {"ds=2024-01-01,region=cn": (0, 700), "ds=2024-01-01,region=us": (5000, 260),
         "ds=2024-01-02,region=cn": (9000, 0)}


@pytest.fixture(scope="module")
def servers():
    with OssTestServer(*OSS_KEY, region="cn-hangzhou") as oss, \
            OdpsTestServer(*MC_KEY, project=PROJECT) as odps:
        oss.create_bucket("mc-stage")
        odps.create_table("orders", COLUMNS, PARTITION_KEYS)
        for index, (spec, (first, rows)) in enumerate(PARTS.items()):
            odps.add_partition("orders", spec, make_rows(first, rows, seed=10 + index))
        odps.on_sql = unload_to(odps, oss)
        yield odps, oss


def test_unload_runs_the_seed_sql_syncs_and_marks_each_partition(servers, e2e_env, ray_local, unique_prefix,
                                                                 tmp_path, capsys):
    odps, oss = servers
    dst = e2e_env.destination
    client = dst.client()
    staging, prefix = f"unload/{unique_prefix}", f"lake/{unique_prefix}orders/"
    # An earlier, interrupted unload of the first partition left a file behind (UNLOAD appends, never
    # overwrites): it must be cleared before that partition is unloaded again.
    oss.put_object("mc-stage", f"{staging}ds=2024-01-01/region=cn/M1_stale_000000", b"half of an old export")
    args = mc_overrides(odps, dst, prefix, str(tmp_path / "m.sqlite"), "maxcompute.mode=unload",
                        f"maxcompute.role_arn={ROLE}", "maxcompute.unload_compression=SNAPPY",
                        "maxcompute.oss.bucket=mc-stage", f"maxcompute.oss.endpoint={oss.endpoint}",
                        "maxcompute.oss.region=cn-hangzhou", "maxcompute.oss.credentials=env:E2EOSS",
                        f"maxcompute.oss.prefix={staging}", f"report={tmp_path / 'report.json'}")
    first_sql = len(odps.sql)

    assert main(["sync", *args]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "3 partitions selected, 3 exported" in out

    sent = odps.sql[first_sql:]
    assert sent == [
        f"UNLOAD FROM {PROJECT}.orders PARTITION (ds='{ds}', region='{region}')\n"
        "INTO\n"
        f"LOCATION 'oss://oss-cn-hangzhou-internal.aliyuncs.com/mc-stage/{staging}ds={ds}/region={region}/'\n"
        "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n"
        f"WITH SERDEPROPERTIES ('odps.properties.rolearn'='{ROLE}')\n"
        "STORED AS PARQUET\n"
        "PROPERTIES ('mcfed.parquet.compression'='SNAPPY');"
        for ds, region in (("2024-01-01", "cn"), ("2024-01-01", "us"), ("2024-01-02", "cn"))]
    assert parse_unload(sent[0])["spec"] == (("ds", "2024-01-01"), ("region", "cn"))

    keys = set(listing(client, dst.bucket, prefix))
    assert not [k for k in keys if "stale" in k]
    for spec in PARTS:
        folder = prefix + spec.replace(",", "/") + "/"
        table, manifest, data_keys = read_folder(client, dst.bucket, folder)
        served = odps.rows("orders", spec)
        assert manifest["rows"] == manifest["source_record_count"] == served.num_rows
        assert manifest["mode"] == "unload" and sorted(f["key"] for f in manifest["files"]) == data_keys
        assert all(f["rows"] >= 0 and f["bytes"] > 0 for f in manifest["files"])
        if served.num_rows:
            # The files are the ones UNLOAD wrote, byte for byte (the emulated service keeps its own types).
            assert sorted(table.to_pylist(), key=lambda r: r["id"]) == sorted(served.to_pylist(), key=lambda r: r["id"])
            assert len(data_keys) == 2

    # Nothing changed at the source: nothing is unloaded or copied again.
    again = run_maxcompute(load_settings(args))
    assert again["status"] == "succeeded"
    assert again["partitions"] == {"selected": 3, "exported": 0, "skipped": 3, "failed": 0}
    assert len(odps.sql) == first_sql + 3


def test_failed_unload_is_reported_and_retried_on_the_next_run(servers, e2e_env, ray_local, unique_prefix, tmp_path):
    odps, oss = servers
    dst = e2e_env.destination
    staging, prefix = f"unload/{unique_prefix}", f"lake/{unique_prefix}orders/"
    args = mc_overrides(odps, dst, prefix, str(tmp_path / "m.sqlite"), "maxcompute.mode=unload",
                        f"maxcompute.role_arn={ROLE}", "maxcompute.unload_compression=NONE",
                        "maxcompute.oss.bucket=mc-stage", f"maxcompute.oss.endpoint={oss.endpoint}",
                        "maxcompute.oss.region=cn-hangzhou", "maxcompute.oss.credentials=env:E2EOSS",
                        f"maxcompute.oss.prefix={staging}", 'maxcompute.partitions=["region=us"]')
    cfg = load_settings(args)
    working = odps.on_sql
    odps.on_sql = lambda sql: "ODPS-0130013: no permission to write OSS"
    try:
        failed = run_maxcompute(cfg)
    finally:
        odps.on_sql = working
    assert failed["status"] == "failed"
    assert [f["partition"] for f in failed["failures"]] == ["ds=2024-01-01,region=us"]
    assert not listing(dst.client(), dst.bucket, prefix)
    assert "mcfed.parquet.compression" not in odps.sql[-1]

    retried = run_maxcompute(cfg)
    assert retried["status"] == "succeeded", retried["failures"]
    assert retried["partitions"]["exported"] == 1
    _, manifest, _ = read_folder(dst.client(), dst.bucket, prefix + "ds=2024-01-01/region=us/")
    assert manifest["rows"] == PARTS["ds=2024-01-01,region=us"][1]
