"""The scale-out benchmark's arithmetic: efficiency = rate(N) / (N × rate(1)), medians per (set, N)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_scale  # noqa: E402


def test_efficiency_is_the_rate_over_n_times_the_single_node_rate():
    eff = bench_scale.efficiency({4: 30.0, 1: 8.0, 2: 16.0})
    assert list(eff) == [1, 2, 4]
    assert eff[1] == 1.0 and eff[2] == 1.0
    assert eff[4] == pytest.approx(30.0 / 32.0)


def test_efficiency_without_a_single_node_rate_is_unknown():
    assert bench_scale.efficiency({2: 10.0, 4: 20.0}) == {2: None, 4: None}
    assert bench_scale.efficiency({1: 0.0, 2: 5.0}) == {1: None, 2: None}


def run(name, nodes, mb, valid=True, load=1.0):
    return {"set": name, "nodes": nodes, "valid": valid, "mb_per_s": mb, "objects_per_s": mb * 10,
            "mb_per_s_after_actors": mb * 1.1, "wall_s": 10.0, "machine_cores": 1.0, "own_cores": 0.5,
            "link_mb_per_s_per_node": mb / nodes, "load_avg": [load, 0.0, 0.0]}


def test_summary_takes_medians_of_valid_runs_and_derives_efficiency_from_them():
    runs = [run("large", 1, 8.0), run("large", 1, 6.0), run("large", 1, 100.0, valid=False),
            run("large", 2, 14.0, load=2.5), run("small", 1, 4.0), run("small", 4, 12.0)]
    rows = bench_scale.summarize(runs)
    assert [(r["set"], r["nodes"]) for r in rows] == [("small", 1), ("small", 4), ("large", 1), ("large", 2)]
    large1, large2 = rows[2], rows[3]
    assert large1["valid"] == "2/3" and large1["mb_per_s"] == 7.0
    assert large1["load_avg_1m"] == [1.0, 1.0, 1.0]  # every run's, valid or not
    assert large2["efficiency"] == pytest.approx(14.0 / (2 * 7.0))
    assert rows[1]["efficiency"] == pytest.approx(12.0 / (4 * 4.0))
    assert large2["efficiency_after_actors"] == pytest.approx(14.0 * 1.1 / (2 * 7.0 * 1.1))
