"""The job's budgets, driver side: every tick, each worker's share of `transfer.max_requests_per_s` and
`transfer.max_bandwidth` from what it used (plan/shares.py), and a job-wide back-off when any worker is
throttled: the budgets shrink (×0.7, to a tenth at least) and every worker halves its concurrency once (a new
throttle epoch); they grow back by 5% of the configured total per quiet tick. Shares reach the workers with
the manifest's answer to their progress flushes (engine/pacing.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from dth_ray.engine.pacing import START_FRACTION, Share
from dth_ray.plan.shares import Demand, allocate

BACK_OFF = 0.7
MIN_FACTOR = 0.1
RECOVER = 0.05
WAITED_FRACTION = 0.05  # a worker that slept this much of the interval for tokens is held back by its share
RESEND_S = 5.0  # shares are sent again at least this often (a worker or manifest that restarted gets them)


class JobPace:
    """Turns the workers' usage reports into shares; `tick` answers what to send (None: nothing new)."""

    def __init__(self, requests_per_s: float, bytes_per_s: float, clock: Callable[[], float] = time.monotonic):
        self.totals = (requests_per_s, bytes_per_s)
        self.scale = 1.0  # the part of the budgets these workers have (watch: half while a scan runs)
        self.factor = 1.0
        self.epoch = 0
        self._clock = clock
        self._seen: dict[str, tuple[float, tuple[float, ...]]] = {}  # worker -> (when, its last usage)
        self._throttled = 0
        self._sent: tuple[dict[str, Share], Share] | None = None
        self._sent_at = 0.0

    def tick(self, reports: dict[str, tuple[float, ...]], throttled: int) -> tuple[dict[str, Share], Share] | None:
        """`reports`: each worker's cumulative usage (SourcePace.usage()); `throttled`: the job's throttle
        answers so far. Returns (shares by worker, a newcomer's share) when they changed."""
        now = self._clock()
        if throttled > self._throttled:
            self.epoch += 1
            self.factor = max(MIN_FACTOR, self.factor * BACK_OFF)
        else:
            self.factor = min(1.0, self.factor + RECOVER)
        self._throttled = max(self._throttled, throttled)
        budget = self.factor * self.scale
        newcomer = Share(*(t * budget * START_FRACTION for t in self.totals), throttle_epoch=self.epoch)
        demands: list[dict[str, Demand]] = [{}, {}]
        for worker, usage in reports.items():
            before = self._seen.get(worker)
            self._seen[worker] = (now, usage)
            for i in (0, 1):
                if before is None or now <= before[0]:  # first seen: it asks for twice a newcomer's share
                    demands[i][worker] = Demand(self.totals[i] * START_FRACTION, True)
                    continue
                interval_s = now - before[0]
                used = (usage[i] - before[1][i]) / interval_s
                waited = usage[2 + i] - before[1][2 + i] > WAITED_FRACTION * interval_s
                demands[i][worker] = Demand(used, waited)
        split = [allocate(t * budget, d) if t > 0 else {} for t, d in zip(self.totals, demands, strict=True)]
        shares = {w: Share(split[0].get(w, 0.0), split[1].get(w, 0.0), self.epoch) for w in reports}
        if not self._changed(shares, newcomer) and now - self._sent_at < RESEND_S:
            return None
        self._sent, self._sent_at = (shares, newcomer), now
        return shares, newcomer

    def _changed(self, shares: dict[str, Share], newcomer: Share) -> bool:
        if self._sent is None:
            return True
        sent, sent_newcomer = self._sent
        if sent.keys() != shares.keys() or sent_newcomer != newcomer:
            return True
        return any(abs(a - b) > 0.05 * max(a, b) for w in shares for a, b in (
            (shares[w].requests_per_s, sent[w].requests_per_s), (shares[w].bytes_per_s, sent[w].bytes_per_s)))
