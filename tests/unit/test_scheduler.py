"""The scheduler on its own: in-process workers (no Ray, no servers) running a scripted worker class, so every
policy is checked in milliseconds — zero items, retries and their bound, raising calls, a worker lost with items
in hand (redone elsewhere, bounded), every worker gone, interrupts (stop at a safe point, unfinished items
returned), and a client fed from another thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dth_ray.runtime.interrupts import Interrupts
from dth_ray.runtime.scheduler import ACTOR_RESTARTS, Item, Scheduler, Workers, actor_nodes


class Script:
    """Shared by the workers of one test: what each call of each key does, and what happened."""

    def __init__(self, plan: dict[str, list[str]] | None = None):
        self.plan = plan or {}  # key -> behaviours by call: ok, error (a result asking for a retry), raise, hang
        self.calls: list[tuple[str, str]] = []  # (key, worker id)
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.stops = 0
        self.hanging = threading.Event()

    def next(self, key: str) -> str:
        with self.lock:
            steps = self.plan.get(key, [])
            return steps.pop(0) if steps else "ok"


class Worker:
    """A scripted worker (the scheduler calls `work`, `stop`, `close`)."""

    def __init__(self, script: Script, worker_id: str):
        self.script = script
        self.worker_id = worker_id
        self.stopping = False

    async def work(self, key: str) -> dict:
        s = self.script
        with s.lock:
            s.calls.append((key, self.worker_id))
            s.running += 1
            s.peak = max(s.peak, s.running)
        try:
            behaviour = s.next(key)
            await asyncio.sleep(0.005)
            if behaviour == "raise":
                raise RuntimeError(f"{key} broke")
            if behaviour == "hang":
                s.hanging.set()
                while not self.stopping:
                    await asyncio.sleep(0.01)
                return {"key": key, "stopped": True}
            return {"key": key, "error": behaviour == "error"}
        finally:
            with s.lock:
                s.running -= 1

    def stop(self) -> None:
        self.stopping = True
        self.script.stops += 1


class Client:
    """Records every hook; a result with `error` asks for a retry; redo returns the item unchanged."""

    def __init__(self):
        self.done: dict[str, dict] = {}
        self.failed: dict[str, str] = {}
        self.redone: list[tuple[str, bool]] = []
        self.ticks = 0

    def on_item_done(self, item, result, where):
        if result.get("error"):
            return Item(item.key, item.method, item.args, attempt=item.attempt + 1)
        self.done[item.key] = {**result, "worker": where.worker_id}
        return None

    def on_item_failed(self, item, error, where):
        self.failed[item.key] = error

    def redo(self, item, where, lost):
        self.redone.append((item.key, lost))
        return item

    def on_tick(self, scheduler):
        self.ticks += 1


def pool(script: Script, workers: int = 3, capacity: int = 2) -> Workers:
    counter = iter(range(1000))
    return Workers(build_local=lambda: Worker(script, f"w{next(counter)}"), local_workers=workers,
                   per_local=capacity)


def items(n: int) -> list[Item]:
    return [Item(f"k{i}", "work", (f"k{i}",)) for i in range(n)]


def run(script: Script, todo: list[Item], client: Client | None = None, **kwargs):
    client = client or Client()
    scheduler = Scheduler(pool(script, **{k: kwargs.pop(k) for k in ("workers", "capacity") if k in kwargs}),
                          tick_s=0.05, **kwargs)
    try:
        outcome = scheduler.run(client, todo)
    finally:
        scheduler.close(timeout_s=5)
    return outcome, client


def test_zero_items_complete_at_once_with_no_hook_called():
    outcome, client = run(Script(), [])
    assert outcome.completed and outcome.unfinished == []
    assert client.done == {} and client.failed == {} and client.redone == []


def test_every_item_runs_once_spread_over_the_workers_within_their_capacity():
    script = Script()
    outcome, client = run(script, items(40), workers=3, capacity=2)
    assert outcome.completed
    assert sorted(client.done) == sorted(f"k{i}" for i in range(40))
    assert len(script.calls) == 40
    assert script.peak <= 3 * 2
    assert len({worker for _, worker in script.calls}) == 3, "all three workers took items"


def test_a_result_asking_for_a_retry_is_retried_up_to_the_bound_then_fails():
    script = Script({"k0": ["error", "ok"], "k1": ["error", "error", "error", "ok"]})
    outcome, client = run(script, items(3), max_attempts=3)
    assert outcome.completed
    assert set(client.done) == {"k0", "k2"}
    assert client.failed == {"k1": "gave up after 3 attempts (attempt 3 did not finish)"}
    assert [k for k, _ in script.calls].count("k1") == 3


def test_all_items_failing_end_the_loop_with_every_item_failed():
    script = Script({f"k{i}": ["error"] * 5 for i in range(6)})
    outcome, client = run(script, items(6), max_attempts=2)
    assert outcome.completed
    assert sorted(client.failed) == sorted(f"k{i}" for i in range(6)) and client.done == {}
    assert len(script.calls) == 12


def test_a_call_that_raises_is_redone_from_the_client_with_a_bounded_count():
    script = Script({"k0": ["raise", "ok"], "k1": ["raise", "raise", "raise"]})
    outcome, client = run(script, items(2), max_attempts=2)
    assert "k0" in client.done
    assert client.redone.count(("k0", False)) == 1
    assert client.failed["k1"].startswith("gave up after 2 attempts (RuntimeError: k1 broke")


def test_a_worker_lost_with_items_in_hand_is_restarted_and_its_items_redone_elsewhere():
    script = Script({"k0": ["hang"]})
    client = Client()
    scheduler = Scheduler(pool(script, workers=2, capacity=2), tick_s=0.05)
    try:
        scheduler.start_local()
        scheduler.start(client, items(6))
        assert script.hanging.wait(5)
        holder = next(s for s in scheduler.slots if s.load)  # the slot running k0 (k0 hangs until lost)
        holder.worker.kill()
        outcome = scheduler.wait()
        deaths = holder.deaths
    finally:
        scheduler.close(timeout_s=5)
    assert outcome.completed and deaths == 1
    assert sorted(client.done) == sorted(f"k{i}" for i in range(6))
    lost = {key for key, was_lost in client.redone if was_lost}
    assert "k0" in lost and sum(1 for k, _ in script.calls if k == "k0") == 2, "k0 ran again after the loss"
    assert not client.done["k0"].get("stopped")


def test_an_item_whose_workers_keep_dying_fails_after_max_losses():
    script = Script({"k0": ["hang"] * 10})
    client = Client()
    scheduler = Scheduler(pool(script, workers=1, capacity=1), tick_s=0.02, max_losses=2)
    killer_done = threading.Event()

    def killer():
        for _ in range(3):
            deadline = time.monotonic() + 5
            while not script.hanging.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            script.hanging.clear()
            scheduler.slots[0].worker.kill()
        killer_done.set()

    try:
        threading.Thread(target=killer, daemon=True).start()
        outcome = scheduler.run(client, items(1))
    finally:
        scheduler.close(timeout_s=5)
    assert killer_done.wait(5)
    assert client.failed == {"k0": "its worker was lost 3 times"}
    assert outcome.completed


def test_with_every_worker_gone_the_remaining_items_fail_instead_of_waiting_forever():
    script = Script({f"k{i}": ["hang"] * 10 for i in range(3)})
    client = Client()
    scheduler = Scheduler(pool(script, workers=1, capacity=1), tick_s=0.02, max_losses=100)

    def killer():
        for _ in range(ACTOR_RESTARTS + 1):
            deadline = time.monotonic() + 5
            while not script.hanging.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            script.hanging.clear()
            scheduler.slots[0].worker.kill()

    try:
        threading.Thread(target=killer, daemon=True).start()
        outcome = scheduler.run(client, items(3))
    finally:
        scheduler.close(timeout_s=5)
    assert outcome.completed and client.done == {}
    assert set(client.failed) == {"k0", "k1", "k2"}
    assert all("no worker left" in error for error in client.failed.values())


def test_an_interrupt_stops_dispatching_asks_busy_workers_to_stop_and_returns_the_unfinished():
    script = Script({"k0": ["hang"], "k1": ["hang"]})
    interrupts = Interrupts()
    client = Client()
    scheduler = Scheduler(pool(script, workers=1, capacity=2), interrupts, tick_s=0.05, stop_grace_s=5)
    try:
        scheduler.start_local()
        scheduler.start(client, items(10))
        assert script.hanging.wait(5)
        interrupts.request()
        outcome = scheduler.wait()
    finally:
        scheduler.close(timeout_s=5)
    assert outcome.interrupted and not outcome.completed
    assert script.stops >= 1
    assert {"k0", "k1"} <= set(client.done) and client.done["k0"]["stopped"]
    assert sorted(item.key for item, _ in outcome.unfinished) == sorted(f"k{i}" for i in range(2, 10))
    assert len(script.calls) == 2, "nothing was dispatched after the interrupt"


def test_items_still_running_at_the_grace_deadline_are_returned_with_their_worker():
    script = Script({"k0": ["hang"]})
    script_worker_ignores_stop = Script({"k0": ["hang"]})
    interrupts = Interrupts()
    client = Client()

    class Stubborn(Worker):
        def stop(self) -> None:  # never stops: the scheduler must not wait past its grace
            self.script.stops += 1

    scheduler = Scheduler(Workers(build_local=lambda: Stubborn(script_worker_ignores_stop, "w0"), per_local=1),
                          interrupts, tick_s=0.05, stop_grace_s=0.3)
    try:
        scheduler.start_local()
        scheduler.start(client, items(1))
        assert script_worker_ignores_stop.hanging.wait(5)
        started = time.monotonic()
        interrupts.request()
        outcome = scheduler.wait()
        waited = time.monotonic() - started
    finally:
        scheduler.close(timeout_s=1)
    assert outcome.interrupted and waited < 2.0
    assert [(item.key, where.worker_id) for item, where in outcome.unfinished] == [("k0", "lane")]
    assert script.calls == []


def test_a_client_fed_from_another_thread_is_woken_at_once():
    """A long-running client (watch) adds items from its receivers: wake() has the loop take them in."""
    script = Script()

    class Feeder(Client):
        def __init__(self):
            super().__init__()
            self.inbox: list[Item] = []
            self.lock = threading.Lock()
            self.stop = threading.Event()

        def on_tick(self, scheduler):
            with self.lock:
                batch, self.inbox = self.inbox, []
            scheduler.submit(batch)

        def finished(self):
            return self.stop.is_set()

    client = Feeder()
    scheduler = Scheduler(pool(script), tick_s=60.0)  # no tick would come in time: only wake() can
    try:
        scheduler.start_local()
        scheduler.start(client, [])
        started = time.monotonic()
        with client.lock:
            client.inbox.append(Item("late", "work", ("late",)))
        scheduler.wake()
        while "late" not in client.done and time.monotonic() - started < 5:
            time.sleep(0.005)
        latency = time.monotonic() - started
        client.stop.set()
        scheduler.wake()
        outcome = scheduler.wait()
    finally:
        scheduler.close(timeout_s=5)
    assert "late" in client.done and latency < 1.0
    assert outcome.completed


def test_an_error_in_a_hook_reaches_the_caller():
    class Broken(Client):
        def on_item_done(self, item, result, where):
            raise ValueError("hook bug")

    with pytest.raises(ValueError, match="hook bug"):
        run(Script(), items(2), Broken())


def test_transfer_actors_skip_nodes_with_no_cpus_unless_every_node_has_none():
    head = {"NodeID": "h", "Alive": True, "Resources": {"memory": 1.0}}  # ray start --num-cpus=0
    workers = [{"NodeID": f"w{i}", "Alive": True, "Resources": {"CPU": 1.0}} for i in (2, 1)]
    dead = {"NodeID": "d", "Alive": False, "Resources": {"CPU": 8.0}}
    assert actor_nodes([head, *workers, dead]) == ["w1", "w2"]
    assert actor_nodes([head, dead]) == ["h"]  # nothing advertises a CPU: every alive node works
    assert actor_nodes([]) == []


def _misplacement(monkeypatch, nodes):
    import types

    import ray

    from dth_ray.runtime.pool import Slot

    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    scheduler = Scheduler(Workers(actor_class=object))
    added, killed = [], []
    monkeypatch.setattr(scheduler, "_add_actor", lambda args, node_id, soft=True: added.append((node_id, soft)))
    monkeypatch.setattr(scheduler, "kill_actor", killed.append)
    already = Slot(types.SimpleNamespace(worker_id="a1", handle="h1"), 4, local=False, node_id="w1")
    scheduler.slots = [already]
    return scheduler, Slot, already, added, killed


HEAD = {"NodeID": "head", "Alive": True, "Resources": {"memory": 1.0}}  # ray start --num-cpus=0


def worker_node(name, alive=True):
    return {"NodeID": name, "Alive": alive, "Resources": {"CPU": 1.0}}


def test_an_actor_soft_affinity_put_elsewhere_is_replaced_by_one_pinned_to_its_node(monkeypatch):
    import types

    for landed in ("head", "w1"):  # a node kept free of actors, or one that has its own already
        scheduler, Slot, already, added, killed = _misplacement(
            monkeypatch, [HEAD, worker_node("w1"), worker_node("w2")])
        misplaced = Slot(types.SimpleNamespace(worker_id="a2", handle="h2"), 4, local=False, node_id=landed,
                         intended_node="w2")
        scheduler.slots.append(misplaced)
        scheduler._misplaced(misplaced)
        assert added == [("w2", False)]  # the pool keeps its size, one actor per node
        assert killed == ["h2"] and misplaced.gone and not already.gone


def test_an_actor_whose_node_is_gone_stays_where_it_landed_unless_that_node_has_no_cpus(monkeypatch):
    import types

    for landed, kept in (("w1", True), ("head", False)):
        scheduler, Slot, _, added, killed = _misplacement(
            monkeypatch, [HEAD, worker_node("w1"), worker_node("w2", alive=False)])
        misplaced = Slot(types.SimpleNamespace(worker_id="a2", handle="h2"), 4, local=False, node_id=landed,
                         intended_node="w2")
        scheduler._misplaced(misplaced)
        assert added == []
        assert misplaced.gone is not kept and killed == ([] if kept else ["h2"])


def test_a_call_to_a_closed_local_worker_fails_at_once_and_leaves_no_coroutine_behind():
    """After close() the worker's loop never runs again: a call then fails with WorkerLost rather than wait
    forever (its coroutine, handed to that loop, was reported as never awaited)."""
    import gc
    import warnings

    from dth_ray.runtime.pool import LocalWorker, WorkerLost

    worker = LocalWorker("lane", lambda: Worker(Script(), "lane"))
    worker.start().result(5)
    assert worker.submit("work", ("k",)).result(5) == {"key": "k", "error": False}
    worker.close(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        late = worker.submit("work", ("k",))
        with pytest.raises(WorkerLost):
            late.result(1)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
