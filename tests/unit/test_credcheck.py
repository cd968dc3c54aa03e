"""The credentials gate with the real scheduler and in-process workers (no Ray, no servers): a client's items go
out only after a worker's check_credentials answered '', a refusal ends the loop with ConfigError before any
item ran, and a check that cannot run lets the items go rather than holding them forever."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from dth_ray.errors import ConfigError
from dth_ray.runtime.credcheck import CredentialGate
from dth_ray.runtime.scheduler import Item, Scheduler, Workers


class Worker:
    """Answers the check as told ('' = fine, 'raise' = the call fails) and records every call."""

    def __init__(self, answer: str, calls: list[str], lock: threading.Lock):
        self.answer = answer
        self.calls = calls
        self.lock = lock

    async def check_credentials(self) -> str:
        with self.lock:
            self.calls.append("check")
        await asyncio.sleep(0.01)
        if self.answer == "raise":
            raise RuntimeError("the check itself broke")
        return self.answer

    async def work(self, key: str) -> str:
        with self.lock:
            self.calls.append(key)
        return key


class Client:
    def __init__(self):
        self.done: list[str] = []
        self.failed: list[str] = []
        self.ticks = 0

    def on_item_done(self, item, result, where):
        self.done.append(result)

    def on_item_failed(self, item, error, where):
        self.failed.append(item.key)

    def redo(self, item, where, lost):
        return item

    def on_tick(self, scheduler):
        self.ticks += 1


def run_gated(answer: str) -> tuple[Client, list[str], BaseException | None]:
    calls: list[str] = []
    lock = threading.Lock()
    scheduler = Scheduler(Workers(build_local=lambda: Worker(answer, calls, lock), local_workers=2), tick_s=0.01)
    client = Client()
    gate = CredentialGate(client, scheduler)
    planned: concurrent.futures.Future = concurrent.futures.Future()
    planned.set_result([Item(f"k{i}", "work", (f"k{i}",)) for i in range(6)])
    scheduler.start_local()
    scheduler.start(gate, gate.hold(planned))
    error = None
    try:
        scheduler.wait()
    except BaseException as exc:  # noqa: BLE001 - the test looks at it
        error = exc
    finally:
        scheduler.close()
    return client, calls, error


def test_items_go_out_only_after_the_check_answered():
    client, calls, error = run_gated("")
    assert error is None
    assert calls[0] == "check" and calls.count("check") == 1
    assert sorted(client.done) == [f"k{i}" for i in range(6)]
    assert client.ticks > 0, "other hooks still reach the client"


def test_a_refusal_ends_the_run_before_any_item():
    client, calls, error = run_gated("source.credentials=env:X needs X_ACCESS_KEY_ID (on node n1)")
    assert isinstance(error, ConfigError)
    assert str(error) == "source.credentials=env:X needs X_ACCESS_KEY_ID (on node n1)"
    assert calls == ["check"] and client.done == [] and client.failed == []


def test_a_check_that_cannot_run_lets_the_items_go():
    client, calls, error = run_gated("raise")
    assert error is None
    assert calls.count("check") == 3  # the scheduler's max_attempts, then given up
    assert sorted(client.done) == [f"k{i}" for i in range(6)]


def test_the_gate_passes_other_attributes_through():
    client = Client()
    gate = CredentialGate(client, scheduler=None)
    assert gate.ticks == 0
    with pytest.raises(AttributeError):
        gate.finished  # noqa: B018 - a client without `finished` must look like one to the scheduler
