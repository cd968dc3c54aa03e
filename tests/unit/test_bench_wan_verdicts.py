"""The WAN benchmark's verdicts follow from what was proven: a peer killed at the timeout is rated at
payload ÷ timeout at most, so a ratio against it is a floor and never a point; the best peer judges; the
ceiling alternative applies only where 3 × the best peer's measured rate exceeds the ceiling."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench_wan = pytest.importorskip("bench_wan")

PAYLOAD = 1_000_000_000  # bytes


def run(tool: str, wall: float, *, timed_out: bool = False, link_bytes: int = 0, cc: str = "bbr") -> dict:
    return {"rtt_ms": 150.0, "loss": 0.01, "cc": cc, "tool": tool, "round": 1, "measured_rtt_ms": 150.3,
            "valid": not timed_out, "timed_out": timed_out, "wall_s": wall, "mb_per_s": PAYLOAD / wall / 1e6,
            "link_estimate_mb_per_s": link_bytes / wall / 1e6 if timed_out else None,
            "check": {"bytes": link_bytes // 2}, "exit_code": -9 if timed_out else 0}


def judge(runs: list[dict], ceiling: float | None = None) -> dict:
    tools = list(dict.fromkeys(r["tool"] for r in runs))
    ceilings = [{"rtt_ms": 150.0, "loss": 0.01, "mb_per_s": ceiling}] if ceiling else []
    summary = bench_wan.summarize(runs, tools, ceilings)
    (verdict,) = bench_wan.verdicts(summary)
    return verdict


def test_a_timed_out_peer_gives_a_floor_at_payload_over_timeout_not_its_link_bytes():
    # The peer moved 900 MB of link bytes in 100 s (9 MB/s estimated) but was killed: it can have moved the
    # 1 GB payload at 10 MB/s at most, so dth-ray at 50 MB/s is at least 5×, not ≈ 5.6×.
    v = judge([run("dth-ray", 20.0), run("rclone-mt", 100.0, timed_out=True, link_bytes=900_000_000)])
    assert v["ratio_kind"] == "floor"
    assert v["ratio"] == pytest.approx(5.0)
    assert v["text"].startswith("≥ 5.00×")
    assert "estimate" in v["text"]
    assert v["ratio_vs_link_estimate"] == pytest.approx(50 / 9)
    assert v["met"] is True


def test_a_floor_under_the_target_is_not_proven_either_way():
    v = judge([run("dth-ray", 50.0), run("rclone-mt", 100.0, timed_out=True, link_bytes=10_000_000)])
    assert v["ratio_kind"] == "floor" and v["ratio"] == pytest.approx(2.0)
    assert v["met"] is None


def test_the_best_peer_judges_and_a_measured_ratio_is_a_point():
    v = judge([run("dth-ray", 20.0), run("rclone-mt", 50.0), run("s5cmd-tuned", 40.0)])
    assert v["best_peer"] == "s5cmd-tuned"
    assert v["ratio_kind"] == "point" and v["ratio"] == pytest.approx(2.0)
    assert v["met"] is False


def test_a_killed_peer_outranks_a_slower_finished_one_at_its_bound():
    v = judge([run("dth-ray", 10.0), run("rclone-mt", 200.0), run("s5cmd-tuned", 100.0, timed_out=True)])
    assert v["best_peer"] == "s5cmd-tuned"
    assert v["ratio_kind"] == "floor" and v["ratio"] == pytest.approx(10.0)


def test_ceiling_alternative_only_where_three_times_the_best_peer_exceeds_it():
    # Best peer 20 MB/s measured, ceiling 50 MB/s: 3× = 60 > 50, so 46 MB/s (92%) meets it.
    v = judge([run("dth-ray", PAYLOAD / 46e6), run("rclone-mt", 50.0)], ceiling=50.0)
    assert v["ceiling_applies"] and v["met"] is True and "ceiling" in v["how"]
    # Ceiling 100 MB/s: 3× the peer (60) is below it, so 92% of a lower ceiling would not count.
    v = judge([run("dth-ray", PAYLOAD / 46e6), run("rclone-mt", 50.0)], ceiling=100.0)
    assert not v["ceiling_applies"] and v["met"] is False


def test_no_ceiling_alternative_against_a_bounded_peer():
    v = judge([run("dth-ray", PAYLOAD / 46e6), run("rclone-mt", 50.0, timed_out=True)], ceiling=50.0)
    assert not v["ceiling_applies"]
    assert v["ratio_kind"] == "floor" and v["met"] is None


def test_dth_ray_killed_gives_an_upper_bound_and_both_killed_no_ratio():
    v = judge([run("dth-ray", 100.0, timed_out=True), run("rclone-mt", 50.0)])
    assert v["ratio_kind"] == "ceiling" and v["met"] is False
    v = judge([run("dth-ray", 100.0, timed_out=True), run("rclone-mt", 100.0, timed_out=True)])
    assert v["ratio"] is None and v["met"] is None


def test_markdown_marks_bounds():
    runs = [run("dth-ray", 20.0), run("rclone-mt", 100.0, timed_out=True, link_bytes=900_000_000)]
    summary = bench_wan.summarize(runs, ["dth-ray", "rclone-mt"], [])
    result = {"date": "2026-12-04 00:00", "payload": "1 GB", "runs_per_condition": 1, "timeout_s": 100,
              "machine": {"nproc": 2, "kernel": "k", "versions": {}, "loadavg_start": "0"},
              "dth_ray_code": {"commit": "0" * 40, "source": "HEAD"}, "summary": summary,
              "verdicts": bench_wan.verdicts(summary), "emulation": "test",
              "tools": [{"name": "dth-ray", "flags_text": "x"}, {"name": "rclone-mt", "flags_text": "y"}]}
    text = bench_wan.markdown(result)
    assert "≤ 10.00 (timed out: payload ÷ timeout, at most; link-byte estimate ≈ 9.00" in text
    assert "≥ 5.00× rclone-mt" in text
