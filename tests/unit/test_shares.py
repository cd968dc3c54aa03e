"""Job-wide budget shares: they always sum to the total, idle workers keep a floor, a waiting worker gets
what the modest ones leave, and equal needs split equally."""

import random

import pytest

from dth_ray.plan.shares import FLOOR_FRACTION, Demand, allocate


def test_equal_needs_split_equally():
    shares = allocate(200.0, {"a": Demand(100, True), "b": Demand(100, True)})
    assert shares == pytest.approx({"a": 100.0, "b": 100.0})


def test_a_modest_worker_leaves_the_rest_to_a_waiting_one():
    shares = allocate(200.0, {"lane": Demand(10, False), "actor": Demand(100, True)})
    assert shares["lane"] == pytest.approx(12.5) and shares["actor"] == pytest.approx(187.5)


def test_an_idle_worker_keeps_a_floor_and_the_sum_is_the_total():
    shares = allocate(1000.0, {"idle": Demand(0, False), "busy": Demand(5000, True)})
    assert shares["idle"] == pytest.approx(1000.0 * FLOOR_FRACTION)
    assert sum(shares.values()) == pytest.approx(1000.0)


def test_when_all_are_satisfied_the_rest_is_shared_for_growth():
    shares = allocate(100.0, {"a": Demand(10, False), "b": Demand(20, False)})
    assert shares["a"] == pytest.approx(12.5 + 31.25) and shares["b"] == pytest.approx(25 + 31.25)


def test_random_demands_always_sum_to_the_total_and_respect_the_floor():
    rng = random.Random(7)
    for _ in range(500):
        total = rng.uniform(1, 10_000)
        demands = {f"w{i}": Demand(rng.uniform(0, total), rng.random() < 0.5) for i in range(rng.randint(1, 12))}
        shares = allocate(total, demands)
        assert sum(shares.values()) == pytest.approx(total)
        floor = min(total * FLOOR_FRACTION, total / len(demands))
        assert min(shares.values()) >= floor * (1 - 1e-9)


def test_no_workers_no_shares():
    assert allocate(10.0, {}) == {}
