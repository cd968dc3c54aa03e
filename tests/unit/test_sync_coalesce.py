"""Per-key ordering: one reconcile per key at a time; events arriving meanwhile get a reconcile of their own
afterwards; events for a pending key merge (latest wins), every token is acknowledged exactly once."""

from __future__ import annotations

from dth_ray.sync.coalesce import Coalescer
from dth_ray.sync.events import CREATED, REMOVED, S3, Event


def ev(key: str, t: float, kind: str = CREATED, seq: str = "") -> Event:
    return Event("b", key, kind, event_time_s=t, sequencer=seq, fmt=S3 if seq else "")


def test_pending_events_merge_latest_wins_tokens_kept():
    c = Coalescer()
    assert c.add(ev("k", 5.0), "m1") == "new"
    assert c.add(ev("k", 7.0, REMOVED), "m2") == "merged"
    assert c.add(ev("k", 6.0), "m3") == "merged"  # older than what is pending: counted stale
    assert c.add(ev("other", 1.0), "m4") == "new"
    first, second = c.take(10)
    assert first.key == "k" and first.latest.event_time_s == 7.0 and first.latest.kind == REMOVED
    assert [t for t, _ in first.tokens] == ["m1", "m2", "m3"] and first.stale == 1
    assert second.key == "other"
    assert c.pending == 0 and c.running == 2


def test_events_behind_a_running_key_get_the_next_reconcile_first():
    c = Coalescer()
    c.add(ev("k", 1.0), "m1")
    c.add(ev("a", 1.0), "m2")
    (running,) = c.take(1)
    assert running.key == "k"
    for i in range(10):  # ten overwrites while the first reconcile runs
        assert c.add(ev("k", 2.0 + i), f"w{i}") == "behind"
    assert c.take(10)[0].key == "a"  # 'k' is running: nothing of it is handed out
    assert c.take(10) == []
    done = c.finish("k")
    assert [t for t, _ in done.tokens] == ["m1"]
    (again,) = c.take(10)  # exactly one more reconcile covers the ten overwrites
    assert again.key == "k" and len(again.tokens) == 10 and again.latest.event_time_s == 11.0
    assert [t for t, _ in c.finish("k").tokens] == [f"w{i}" for i in range(10)]
    assert c.finish("a").key == "a"
    assert (c.pending, c.running, c.waiting) == (0, 0, 0)


def test_sequencer_orders_before_time_and_release_hands_back_unstarted_work():
    c = Coalescer()
    c.add(ev("k", 9.0, seq="0055AED6DCD90281F0"), "new")
    c.add(ev("k", 10.0, seq="0055AED6DCD90281E5"), "old")  # later clock, earlier sequencer: stale
    (p,) = c.take(1)
    assert p.latest.sequencer.endswith("F0") and p.stale == 1
    c.add(ev("k", 11.0), "behind")
    c.add(ev("z", 1.0), "pending")
    released = c.release()
    assert sorted(t for r in released for t, _ in r.tokens) == ["behind", "pending"]
    assert c.finish("k").key == "k" and c.pending == 0
