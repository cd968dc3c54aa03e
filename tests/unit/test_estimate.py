"""The pre-transfer estimate: duration from the slower of bytes and objects, cost by component."""

import pytest

from dth_ray.plan.estimate import Rates, estimate

RATES = Rates(nodes=2, node_bytes_per_s=1e9, node_objects_per_s=1000, egress_per_gb=0.1, put_per_1000=0.005,
              get_per_1000=0.0004, dynamodb_write_per_million=1.25, instance_per_hour=2.0)


def test_bytes_bound_job():
    out = estimate(objects=10, nbytes=7_200 * 10**9, multipart_objects=10, multipart_bytes=7_200 * 10**9,
                   part_size_bytes=100 * 10**6, rates=RATES)
    assert out["duration_s"] == 3600.0  # 7.2 TB over 2 × 1 GB/s
    assert out["put_requests"] == 72_000 + 20 and out["get_requests"] == 72_000
    assert out["cost_usd"]["egress"] == 720.0
    assert out["cost_usd"]["instances"] == 4.0  # 2 nodes × 1 h
    assert out["cost_usd_total"] == pytest.approx(sum(out["cost_usd"].values()), abs=0.01)


def test_objects_bound_job_and_manifest_writes():
    out = estimate(objects=7_200_000, nbytes=7_200 * 10**6, multipart_objects=0, multipart_bytes=0,
                   part_size_bytes=16 << 20, rates=RATES)
    assert out["duration_s"] == 3600.0  # 7.2 M objects over 2 × 1000/s
    assert out["put_requests"] == out["get_requests"] == 7_200_000
    assert out["cost_usd"]["requests"] == pytest.approx(7_200 * 0.005 + 7_200 * 0.0004, abs=0.01)
    assert out["cost_usd"]["manifest"] == pytest.approx(72_000 / 1e6 * 1.25, abs=0.01)


def test_nothing_to_copy_costs_nothing_and_bad_rates_are_refused():
    assert estimate(0, 0, 0, 0, 16 << 20, RATES)["cost_usd_total"] == 0.0
    with pytest.raises(ValueError):
        estimate(0, 0, 0, 0, 1, Rates(0, 1, 1, 0, 0, 0, 0, 0))
