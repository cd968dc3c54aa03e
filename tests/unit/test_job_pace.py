"""The driver's side of job-wide budgets: shares follow what workers used, a throttle anywhere shrinks the
budgets and raises the epoch every worker backs off on, quiet ticks grow them back; a worker applies its share."""

import pytest

from dth_ray.engine.pacing import START_FRACTION, Share, SourcePace
from dth_ray.engine.ratelimit import AdaptiveLimit
from dth_ray.runtime.pace import BACK_OFF, RECOVER, JobPace


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def usage(requests: float, waited_s: float = 0.0) -> tuple[float, float, float, float]:
    return (requests, 0.0, waited_s, 0.0)


def test_shares_follow_use_and_sum_to_the_budget():
    clock = Clock()
    pace = JobPace(200.0, 0.0, clock)
    first = pace.tick({"lane": usage(0), "actor": usage(0)}, 0)
    assert first is not None
    shares, newcomer = first
    assert sum(s.requests_per_s for s in shares.values()) == pytest.approx(200.0)
    assert newcomer.requests_per_s == pytest.approx(200.0 * START_FRACTION)
    clock.now = 1.0  # the lane used 10/s and never waited; the actor used its share and waited
    shares, _ = pace.tick({"lane": usage(10), "actor": usage(100, waited_s=0.5)}, 0)
    assert shares["lane"].requests_per_s == pytest.approx(12.5)
    assert shares["actor"].requests_per_s == pytest.approx(187.5)
    assert all(s.bytes_per_s == 0 for s in shares.values())  # no bandwidth budget set


def test_a_throttle_anywhere_shrinks_the_budget_and_raises_the_epoch_then_it_recovers():
    clock = Clock()
    pace = JobPace(100.0, 0.0, clock)
    pace.tick({"a": usage(0)}, 0)
    clock.now = 1.0
    shares, newcomer = pace.tick({"a": usage(90, 0.5)}, throttled=3)
    assert pace.epoch == 1 and newcomer.throttle_epoch == 1
    assert shares["a"].requests_per_s == pytest.approx(100.0 * BACK_OFF)
    clock.now = 2.0
    shares, _ = pace.tick({"a": usage(160, 0.9)}, throttled=3)  # no new throttle: growing back
    assert pace.epoch == 1 and shares["a"].requests_per_s == pytest.approx(100.0 * (BACK_OFF + RECOVER))


def test_nothing_is_sent_again_until_something_changes():
    clock = Clock()
    pace = JobPace(100.0, 0.0, clock)
    assert pace.tick({"a": usage(0)}, 0) is not None
    clock.now = 1.0
    assert pace.tick({"a": usage(50, 0.5)}, 0) is None  # alone, it has the whole budget still
    clock.now = 2.0
    assert pace.tick({"a": usage(150, 1.5), "b": usage(0)}, 0) is not None  # a second worker
    clock.now = 9.0
    assert pace.tick({"a": usage(850, 8.5), "b": usage(0)}, 0) is not None  # resent every few seconds


def test_a_worker_takes_its_share_and_backs_off_on_a_newer_epoch():
    limit = AdaptiveLimit(64)
    pace = SourcePace(200.0, 0.0)
    assert pace.requests.rate_per_s == pytest.approx(200.0 * START_FRACTION)
    pace.apply(Share(80.0, 0.0, throttle_epoch=2), limit)  # its first share: no back-off for the past
    assert pace.requests.rate_per_s == 80.0 and limit.limit == 64
    pace.apply(Share(80.0, 0.0, throttle_epoch=3), limit)
    assert limit.limit == 32
    pace.apply(Share(80.0, 0.0, throttle_epoch=3), limit)
    assert limit.limit == 32
