"""The suite's verdicts on the lean-data-plane targets follow from the runs in the result: rclone's better
configuration per figure, ratios paired by round, steady state as each tool's CPU minus its own empty-bucket
runs, and memory judged apart for runs that start Ray and runs that do not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
suite_report = pytest.importorskip("suite_report")


def run(tool: str, rnd: int, *, wall: float, cpu: float, objects: int, total_bytes: int, pss: float = 100.0,
        ray: bool = False, phase: str | None = None) -> dict:
    groups = {"driver": {}} | ({"raylet": {}, "gcs_server": {}} if ray else {})
    return {"tool": tool, "round": rnd, "valid": True, "phase": phase, "wall_s": wall, "client_cpu_tagged_s": cpu,
            "objects_per_s": objects / wall, "mb_per_s": total_bytes / 1e6 / wall, "peak_pss_mb": pss,
            "tagged_cpu_ms_per_object": 1000 * cpu / objects, "tagged_cpu_s_per_gb": cpu / (total_bytes / 1e9),
            "groups": groups, "exit_code": 0}


def result() -> dict:
    gb = 1_000_000_000
    large = [run("dth-ray", 1, wall=4.0, cpu=1.0, objects=8, total_bytes=gb, pss=250),
             run("rclone-default", 1, wall=4.4, cpu=0.62, objects=8, total_bytes=gb),
             run("rclone-tuned", 1, wall=4.6, cpu=0.7, objects=8, total_bytes=gb),
             run("dth-ray", 2, wall=4.2, cpu=1.1, objects=8, total_bytes=gb, pss=650, ray=True),
             run("rclone-default", 2, wall=4.2, cpu=0.6, objects=8, total_bytes=gb),
             run("rclone-tuned", 2, wall=4.3, cpu=0.72, objects=8, total_bytes=gb)]
    overhead = [run("dth-ray", 1, wall=0.4, cpu=0.35, objects=1, total_bytes=1, pss=40),
                run("rclone-default", 1, wall=0.05, cpu=0.05, objects=1, total_bytes=1),
                run("rclone-tuned", 1, wall=0.05, cpu=0.04, objects=1, total_bytes=1)]
    return {"scenarios": {"large": {"runs": large, "objects": 8, "total_bytes": gb}},
            "overhead": {"runs": overhead}}


def by_name(targets: list[dict], start: str) -> dict:
    (found,) = [t for t in targets if t["target"].startswith(start)]
    return found


def test_the_large_targets_pair_rounds_against_rclones_better_configuration():
    targets = suite_report.targets(result())
    speed = by_name(targets, "large: dth-ray MB/s")
    assert "rclone-default" in speed["target"]  # the faster one by median MB/s
    assert speed["value"] == pytest.approx((4.4 / 4.0 + 4.2 / 4.2) / 2) and speed["met"] is True
    whole = by_name(targets, "large: dth-ray CPU per GB, whole run")
    assert whole["value"] == pytest.approx((1.0 / 0.62 + 1.1 / 0.6) / 2) and whole["met"] is False
    steady = by_name(targets, "large: dth-ray CPU per GB, steady state")
    assert steady["value"] == pytest.approx(((1.0 - 0.35) / (0.62 - 0.05) + (1.1 - 0.35) / (0.6 - 0.05)) / 2)
    assert steady["met"] is True


def test_memory_is_judged_apart_for_runs_with_and_without_ray_and_the_fixed_cost_by_its_bounds():
    targets = suite_report.targets(result())
    without = by_name(targets, "peak memory, runs that do not start Ray")
    with_ray = by_name(targets, "peak memory, runs that start Ray")
    assert (without["value"], without["met"]) == (250, True)
    assert (with_ray["value"], with_ray["met"]) == (650, False)
    empty = by_name(targets, "empty bucket")
    assert empty["met"] is True and empty["text"] == "0.35 s CPU, 0.40 s wall"


def test_runs_with_runtime_ray_always_count_for_the_memory_of_runs_that_start_ray():
    data = result()
    gb = 1_000_000_000
    data["scenarios"]["large"]["runs"].append(
        run("dth-ray-ray-always", 1, wall=6.0, cpu=4.0, objects=8, total_bytes=gb, pss=720, ray=True))
    with_ray = by_name(suite_report.targets(data), "peak memory, runs that start Ray")
    assert (with_ray["value"], with_ray["met"]) == (720, False)
    assert "dth-ray-ray-always" in with_ray["text"]
    speed = by_name(suite_report.targets(data), "large: dth-ray MB/s")
    assert speed["value"] == pytest.approx((4.4 / 4.0 + 4.2 / 4.2) / 2)  # the variant is not the default
