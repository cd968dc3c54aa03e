"""Against a real MaxCompute project, read-only: skipped unless DTH_MC_LIVE_PROJECT, DTH_MC_LIVE_TABLE,
DTH_MC_LIVE_REGION (or DTH_MC_LIVE_ENDPOINT) and ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET are
set. It reads the table's schema and partitions and the first rows of one partition through the Tunnel."""

from __future__ import annotations

import os

import pytest

from dth_ray.config import MaxComputeConfig, StoreConfig, StoreType
from dth_ray.maxcompute.client import MaxComputeClient

LIVE = {name: os.environ.get(f"DTH_MC_LIVE_{name.upper()}", "") for name in ("project", "table", "region", "endpoint")}

pytestmark = pytest.mark.skipif(
    not (LIVE["project"] and LIVE["table"] and (LIVE["region"] or LIVE["endpoint"])
         and os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID") and os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")),
    reason="no live MaxCompute project configured (DTH_MC_LIVE_* and ALIBABA_CLOUD_ACCESS_KEY_*)")


def test_live_table_reads_through_the_tunnel():
    client = MaxComputeClient(
        StoreConfig(type=StoreType.maxcompute, endpoint=LIVE["endpoint"], region=LIVE["region"], read_timeout_s=120),
        MaxComputeConfig(project=LIVE["project"], table=LIVE["table"]))
    table = client.table()
    assert table.columns
    parts = client.partitions()
    assert parts
    download_id, count = client.session(parts[0].spec)
    rows = min(count, 100)
    assert sum(b.num_rows for b in client.read(parts[0].spec, download_id, 0, rows)) == rows
