"""The terminal progress line shows counts, bytes, rate and an ETA from the bytes still in flight."""

from dth_ray.model import Tally
from dth_ray.runtime.progress import Snapshot, progress_line


def test_progress_line_has_rate_and_eta():
    tally = Tally(listed=100, copied=40, skipped=2, failed=1, bytes_copied=40_000_000)
    line = progress_line(Snapshot(tally, bytes_in_flight=20_000_000), 4.0)
    assert "copied 40" in line and "skipped 2" in line and "failed 1" in line
    assert "10.0 MB/s" in line and "10 obj/s" in line
    assert "ETA 2s" in line


def test_progress_line_without_rate_has_no_eta():
    assert "ETA -" in progress_line(Snapshot(Tally(listed=5)), 0.5)
