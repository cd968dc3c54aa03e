"""`dth-ray watch` with source=maxcompute: each scheduled tick exports the partitions that are new (or changed)
since the last export, through the normal MaxCompute runner, with _SUCCESS per partition."""

from __future__ import annotations

import os

from tests.integration.mc_helpers import MC_KEY, PROJECT, mc_overrides, read_folder
from tests.integration.watch_helpers import RunningWatch, wait_for
from tests.servers.odps_server import OdpsTestServer

# Export actors inherit their keys from the session's Ray: set them at import, before any test starts Ray.
os.environ.update({"MCTEST_ACCESS_KEY_ID": MC_KEY[0], "MCTEST_SECRET_ACCESS_KEY": MC_KEY[1]})


def test_scheduled_ticks_export_new_partitions(e2e_env, ray_local, unique_prefix, tmp_path):
    dst = e2e_env.destination
    client = dst.client()
    prefix = f"lake/{unique_prefix}events/"
    with OdpsTestServer(*MC_KEY, project=PROJECT) as srv:
        srv.create_table("events", [("id", "bigint"), ("msg", "string")], [("ds", "string")])
        srv.add_partition("events", "ds=1", [(i, f"a{i}") for i in range(40)])
        args = [a.replace("maxcompute.table=orders", "maxcompute.table=events")
                for a in mc_overrides(srv, dst, prefix, str(tmp_path / "m.sqlite"))]
        with RunningWatch([*args, "schedule.interval=2s", "schedule.on_start=true"]) as w:
            wait_for(lambda: read_folder(client, dst.bucket, prefix + "ds=1/")[1].get("rows") == 40, 120,
                     "ds=1 exported with _SUCCESS")
            srv.add_partition("events", "ds=2", [(i, f"b{i}") for i in range(7)])
            wait_for(lambda: read_folder(client, dst.bucket, prefix + "ds=2/")[1].get("rows") == 7, 120,
                     "the new partition ds=2 exported on a later tick")
            final = w.stop()
    assert final["scans"]["runs"] >= 2 and final["scans"].get("error", 0) == 0, final["scans"]
    assert final["scans"]["last"]["status"] == "succeeded"
    rows, _, _ = read_folder(client, dst.bucket, prefix + "ds=2/")
    assert sorted(rows.column("msg").to_pylist()) == sorted(f"b{i}" for i in range(7))
