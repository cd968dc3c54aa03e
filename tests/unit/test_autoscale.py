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
