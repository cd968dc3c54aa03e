"""The autoscaling request follows simulated backlogs: ramps up within limits, capped, zero when done."""

from dth_ray.plan.autoscale import GiB, ScalePolicy, slots_wanted

POLICY = ScalePolicy(shards_per_slot=1, bytes_per_slot=4 * GiB, max_slots=64, max_growth=2.0, min_step=4)


def simulate(backlog: list[tuple[int, int]]) -> list[int]:
    requested, out = 0, []
    for shards, nbytes in backlog:
        requested = slots_wanted(shards, nbytes, requested, POLICY)
        out.append(requested)
    return out


def test_ramps_up_by_at_most_double_or_min_step_and_caps():
    steps = simulate([(1000, 0)] * 8)
    assert steps == [4, 8, 16, 32, 64, 64, 64, 64]


def test_bytes_drive_it_when_shards_are_few():
    assert slots_wanted(2, 40 * GiB, 100, POLICY) == 10  # 40 GiB / 4 GiB per slot


def test_shrinks_with_the_backlog_and_releases_at_zero():
    steps = simulate([(100, 0)] * 6 + [(10, 0), (3, 0), (0, 0)])
    assert steps[-3:] == [10, 3, 0]
    assert max(steps) == 64


def test_a_draining_backlog_never_requests_more_than_it_has_work_for():
    requested = 0
    for shards in range(50, 0, -5):
        requested = slots_wanted(shards, 0, requested, POLICY)
        assert requested <= shards


def test_ray_pays_only_when_the_driver_alone_would_take_longer_than_the_threshold():
    from dth_ray.plan.autoscale import Backlog, ray_pays, remaining_s

    # 3 s in, 3,000 objects (300 MB) done: 1,000 objects/s, 100 MB/s.
    small = Backlog(3.0, 3000, 300_000_000, left_objects=5_000, left_bytes=500_000_000)
    assert remaining_s(small) == 5.0 and not ray_pays(small)
    many = Backlog(3.0, 3000, 300_000_000, left_objects=40_000, left_bytes=500_000_000)
    assert remaining_s(many) == 40.0 and ray_pays(many)
    big = Backlog(3.0, 3000, 300_000_000, left_objects=10, left_bytes=4_000_000_000)
    assert remaining_s(big) == 40.0 and ray_pays(big), "bytes count as much as objects"
    assert not ray_pays(many, threshold_s=60.0)


def test_ray_is_not_decided_on_too_little_evidence_but_a_stuck_driver_gets_help():
    from dth_ray.plan.autoscale import Backlog, ray_pays, remaining_s

    early = Backlog(1.0, 500, 1_000, left_objects=10**6, left_bytes=0)
    assert remaining_s(early) is None and not ray_pays(early)
    nothing_yet = Backlog(5.0, 0, 0, left_objects=100, left_bytes=0)
    assert remaining_s(nothing_yet) is None and not ray_pays(nothing_yet)
    assert ray_pays(Backlog(31.0, 0, 0, left_objects=100, left_bytes=0)), "a slow source: still nothing after 30 s"
    assert not ray_pays(Backlog(31.0, 0, 0, left_objects=0, left_bytes=0)), "nothing left: no Ray"
