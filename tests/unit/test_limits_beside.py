"""A request that runs beside the requests it waits on (a streamed PUT fed by its own GETs) takes no slot of the
cap, so it cannot fill the cap and stall them; its throttles still halve the cap and its errors are counted."""

from __future__ import annotations

import asyncio

import pytest

from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.limits import Limits
from dth_ray.engine.ratelimit import AdaptiveLimit
from dth_ray.errors import Throttled


def test_a_request_beside_takes_no_slot_so_the_requests_it_waits_on_still_run():
    limits = Limits(ByteBudget(1 << 20), AdaptiveLimit(1))

    async def main():
        async def put_fed_by_gets():
            # With the one slot taken by this request, the GET it waits on could never run.
            return await limits.call(lambda: asyncio.sleep(0, result="got"))

        return await asyncio.wait_for(limits.call_beside(put_fed_by_gets), 5)

    assert asyncio.run(main()) == "got"
    assert limits.concurrency.in_flight == 0


def test_a_throttled_request_beside_halves_the_cap_and_is_counted():
    limits = Limits(ByteBudget(1 << 20), AdaptiveLimit(16))

    async def throttled():
        raise Throttled("SlowDown")

    with pytest.raises(Throttled):
        asyncio.run(limits.call_beside(throttled))
    assert limits.concurrency.limit == 8 and limits.concurrency.in_flight == 0
    assert limits.take_errors() == {"Throttled": 1}
