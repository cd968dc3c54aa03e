"""Ranged-GET sizing: fixed when configured, else learned from how fast single streams read."""

from dth_ray.engine.readsize import KiB, MiB, ReadSizer


def test_fixed_size_ignores_observations():
    sizer = ReadSizer(fixed_bytes=2 * MiB)
    sizer.observe(16 * MiB, 0.01)
    assert sizer.piece_bytes() == 2 * MiB


def test_starts_at_the_initial_size_until_a_read_finishes():
    assert ReadSizer(initial_bytes=4 * MiB).piece_bytes() == 4 * MiB
    assert ReadSizer().piece_bytes() == 256 * KiB, "by default the first wave assumes a slow, far source"


def test_fast_streams_stop_splitting_a_part():
    sizer = ReadSizer()
    for _ in range(5):
        sizer.observe(4 * MiB, 0.02)  # 200 MiB/s per stream: a loopback or in-region read
    assert sizer.piece_bytes() > 16 * MiB, "a 16 MiB part is one GET"


def test_slow_lossy_streams_split_parts_down_to_the_floor():
    sizer = ReadSizer()
    for _ in range(20):
        sizer.observe(1 * MiB, 8.0)  # ~0.13 MB/s per stream: CUBIC at 150 ms RTT with 1% loss
    assert sizer.piece_bytes() == 256 * KiB


def test_rate_is_a_moving_average_and_short_reads_do_not_count():
    sizer = ReadSizer(weight=0.5)
    sizer.observe(10 * MiB, 1.0)
    sizer.observe(100, 10.0)  # a tiny read says more about latency than rate
    assert sizer.rate_bytes_per_s == 10 * MiB
    sizer.observe(2 * MiB, 1.0)
    assert sizer.rate_bytes_per_s == 6 * MiB
    assert sizer.piece_bytes() == 6 * MiB
