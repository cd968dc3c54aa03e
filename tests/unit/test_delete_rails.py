"""Delete rails as pure logic: prefix refusal, new keys, watch's limit per window, prefix-list scope."""

from __future__ import annotations

import pytest

from dth_ray.config import EventsType, SyncConfig, check_delete_scope, validate_sync_settings
from dth_ray.errors import ConfigError
from dth_ray.settings import resolve
from dth_ray.sync.coalesce import Coalescer
from dth_ray.sync.deletelimit import DeleteLimit, EventDeletes
from dth_ray.sync.events import CREATED, REMOVED, Event, EventScope


def cfg(prefix: str, delete: bool = False, as_is: bool = False) -> SyncConfig:
    c = SyncConfig()
    c.source.bucket, c.destination.bucket, c.destination.prefix = "src-b", "dst-b", prefix
    c.sync.delete, c.sync.delete_prefix_as_is = delete, as_is
    return c


@pytest.mark.parametrize("prefix", ["backup", "a/b", "logs/2024-"])
def test_a_prefix_without_slash_is_refused_when_deletes_are_on(prefix):
    with pytest.raises(ConfigError) as err:
        resolve(cfg(prefix, delete=True))
    message = str(err.value)
    assert "\n" not in message and f"destination.prefix={prefix!r}" in message
    assert "sync.delete=true" in message and "sync.delete_prefix_as_is=true" in message
    with pytest.raises(ConfigError, match="events.deletes=true"):
        check_delete_scope(cfg(prefix), events_deletes=True)


@pytest.mark.parametrize("prefix, delete, as_is", [
    ("", True, False),  # the whole bucket: allowed
    ("backup/", True, False),
    ("backup", False, False),  # no deletes: a plain-string prefix is fine for copies
    ("backup", True, True),  # acknowledged
])
def test_allowed_delete_scopes(prefix, delete, as_is):
    settings = resolve(cfg(prefix, delete, as_is))
    check_delete_scope(settings.config, events_deletes=delete)  # watch with event deletes: the same rule
    assert settings.delete.enabled is delete and settings.delete.prefix_as_is is as_is


def test_event_limit_keys_validated_and_resolved_once():
    c = cfg("")
    c.events.max_delete, c.events.max_delete_window = 5, "90m"
    limit = resolve(c).event_deletes
    assert (limit.max_count, limit.window_s, limit.window) == (5, 5400.0, "90m")
    default = resolve(cfg("")).event_deletes
    assert (default.max_count, default.window_s) == (1000, 3600.0)
    for field, value, expected in [
            ("max_delete", 0, "events.max_delete=0 must be at least 1"),
            ("max_delete", -3, "events.max_delete=-3 must be at least 1"),
            ("max_delete_window", "0s", "events.max_delete_window='0s' must be at least 1s"),
            ("max_delete_window", "soon", "events.max_delete_window='soon' is not a duration")]:
        c = cfg("")
        c.events.type = EventsType.sqs
        setattr(c.events, field, value)
        with pytest.raises(ConfigError) as err:
            validate_sync_settings(c)
        assert str(err.value).startswith(expected)


def test_sliding_window_grants_and_give_backs():
    lim = DeleteLimit(3, 10.0)
    grants = [lim.take(t) for t in (0.0, 1.0, 2.0)]
    assert None not in grants and lim.take(3.0) is None and lim.used(3.0) == 3
    lim.give_back(grants[1])  # its reconcile deleted nothing
    assert lim.take(4.0) == 4.0 and lim.take(4.5) is None
    assert lim.take(10.0) == 10.0  # the grant at 0.0 left the window
    assert lim.used(10.0) == 3 and lim.take(11.0) is None
    lim.give_back(0.0)  # already out of the window: nothing changes
    assert lim.used(11.0) == 3


def test_refusals_alert_once_per_window():
    lim = DeleteLimit(1, 60.0)
    assert [lim.refuse(t) for t in (0.0, 1.0, 59.0)] == [True, False, False]
    assert lim.refuse(60.0) is True and lim.refuse(61.0) is False
    assert lim.skipped == 5


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_event_deletes_cover_every_delete_and_alert_once():
    clock, alerts = Clock(), []
    rail = EventDeletes(True, 2, 3600.0, "1h", "job", lambda s, t: alerts.append((s, t)), clock)
    # Removals take grants at dispatch, up to the limit; a created event never does.
    assert rail.may_delete("r1", removed=True) and rail.may_delete("r2", removed=True)
    assert not rail.may_delete("r3", removed=True) and not rail.may_delete("c1", removed=False)
    assert rail.settle("r1", "deleted") == "deleted"
    assert rail.settle("r2", "copied") == "copied"  # back at the source: the grant returns
    # A created event whose source is gone: a delete too; the returned grant lets it run again.
    assert rail.settle("c1", "gone_at_source") == "again"
    assert rail.may_delete("c1", removed=False)
    assert rail.settle("c1", "deleted") == "deleted"
    # The window is full: the rest are skipped, counted, and alerted once.
    assert rail.settle("r3", "gone_at_source") == "delete_skipped"
    for key in ("c2", "c3", "r4"):
        assert rail.settle(key, "gone_at_source") == "delete_skipped"
    assert rail.settle("c4", "absent") == "absent"  # nothing at the destination: no delete needed
    report = rail.report()
    assert report["skipped"] == 4 and report["in_window"] == 2 and report["alerts"] == 1
    assert report["skipped_keys"] == ["r3", "c2", "c3", "r4"]
    assert len(alerts) == 1 and "events.max_delete=2" in alerts[0][1] and "sync.delete=true" in alerts[0][1]
    clock.now = 3600.0  # a new window: deletes again, and a later storm alerts again
    assert rail.may_delete("r5", removed=True) and rail.settle("r5", "deleted") == "deleted"
    assert rail.settle("r6", "gone_at_source") == "again" and rail.settle("r6", "deleted") == "deleted"
    assert rail.settle("r7", "gone_at_source") == "delete_skipped" and len(alerts) == 2


def test_a_failed_delete_keeps_its_grant_and_disabled_deletes_pass_through():
    rail = EventDeletes(True, 1, 60.0, "1m", "job", None, Clock())
    assert rail.may_delete("k", removed=True)
    assert rail.settle("k", "failed") == "failed"  # the DELETE may have happened: still counted
    assert not rail.may_delete("k2", removed=True)
    off = EventDeletes(False, 1, 60.0, "1m", "job", None, Clock())
    assert not off.may_delete("k", removed=True)
    assert off.settle("k", "gone_at_source") == "gone_at_source" and off.report()["skipped"] == 0


def test_a_granted_reconcile_that_still_kept_the_object_never_loops():
    rail = EventDeletes(True, 5, 60.0, "1m", "job", None, Clock())
    assert rail.may_delete("k", removed=True)
    assert rail.settle("k", "gone_at_source") == "delete_skipped"  # the worker refused it (out of scope)


def test_scope_honours_the_prefix_list():
    scope = EventScope("b", "data/", prefix_list=("data/a/", "data/c", "data/x/y/"))
    reasons = {key: scope.reason_to_ignore(Event("b", key, REMOVED)) for key in
               ["data/a/1", "data/b/1", "data/c", "data/cc/1", "data/x/y/z", "data/x/z", "data/", "data/a",
                "other/a/1"]}
    assert reasons == {"data/a/1": "", "data/b/1": "outside_prefix_list", "data/c": "", "data/cc/1": "",
                       "data/x/y/z": "", "data/x/z": "outside_prefix_list", "data/": "outside_prefix_list",
                       "data/a": "outside_prefix_list", "other/a/1": "outside_prefix"}


def test_again_keeps_tokens_and_absorbs_waiting_events():
    c = Coalescer()
    c.add(Event("b", "k", REMOVED, 1.0), "m1")
    c.add(Event("b", "other", CREATED, 1.0), "m2")
    (first,) = c.take(1)
    c.add(Event("b", "k", CREATED, 2.0), "m3")  # waits behind the running reconcile
    c.again("k")
    (again, other) = c.take(10)  # ahead of newer keys
    assert again.key == "k" and [t for t, _ in again.tokens] == ["m1", "m3"] and c.waiting == 0
    assert other.key == "other"
    with pytest.raises(KeyError):
        c.again("not-running")
