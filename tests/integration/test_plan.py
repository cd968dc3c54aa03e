"""`dth-ray plan`: a dry run over real endpoints that writes nothing and estimates time and cost."""

from __future__ import annotations

import json

from dth_ray.cli import main
from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects

MiB = 1024 * 1024


def test_plan_estimates_from_a_dry_run_and_writes_nothing(e2e_env, ray_local, unique_prefix, tmp_path, capsys):
    pair = e2e_env
    items = {f"{unique_prefix}a/{i}": b"x" * 1000 for i in range(30)}
    items[f"{unique_prefix}b/big"] = b"y" * (70 * MiB)
    seed_objects(pair.source.client(), pair.source.bucket, items)
    overrides = s3_overrides(pair, unique_prefix, "plan/" + unique_prefix, str(tmp_path / "m.sqlite"))
    report = tmp_path / "plan.json"
    # A test-sized object that still goes up in parts (the default threshold is 200 MiB).
    code = main(["plan", *overrides, f"report={report}", "plan.nodes=2", "plan.node_throughput=10MB",
                 "plan.egress_per_gb=0.1", "transfer.multipart_threshold=64MiB"])
    assert code == 0, capsys.readouterr()
    out = json.loads(report.read_text())
    est = out["estimate"]
    assert out["listed"] == 31 and est["objects"] == 31
    assert est["bytes"] == 30_000 + 70 * MiB
    assert est["duration_s"] == round(est["bytes"] / (2 * 10e6), 1)
    assert est["put_requests"] == 30 + 5 + 2  # 30 single PUTs; 5 parts of 16 MiB + Create + Complete
    assert est["cost_usd"]["egress"] == round(est["bytes"] / 1e9 * 0.1, 2)
    assert "would copy 31 objects" in capsys.readouterr().out
    assert listing(pair.destination.client(), pair.destination.bucket, "plan/") == {}, "a plan writes nothing"
