"""On the lean embedded cluster (no log monitor) the scheduler relays its actors' log lines to the driver's
stderr, and keeps doing so for an actor Ray restarted after it was killed mid-run."""

from __future__ import annotations

import re

from tests.integration.helpers import run_on_own_ray

# A real Scheduler over one actor of the embedded cluster: six items; after the second, the actor is killed
# (Ray restarts it); the items it held are redone on the restarted actor. Prints one line per finished item.
RUN = r"""
import logging, os, sys, time
from dth_ray.runtime.rayhost import stop_ray
from dth_ray.runtime.scheduler import Item, Scheduler, Workers
from dth_ray.settings import RuntimeSettings


class Talker:
    def __init__(self):
        from dth_ray.ops.logs import setup_actor_logging
        setup_actor_logging("INFO", "text")
        self.log = logging.getLogger("dth_ray.talker")
        self.log.warning("up in pid %d", os.getpid())

    def node_id(self):
        import ray
        return ray.get_runtime_context().get_node_id()

    def log_lines(self):
        from dth_ray.ops.logs import relayed_lines
        return relayed_lines()

    def work(self, n):
        self.log.warning("item %d in pid %d", n, os.getpid())
        time.sleep(0.3)
        return os.getpid()

    def stop(self):
        pass

    def close(self):
        self.log.warning("closing in pid %d", os.getpid())


class Client:
    def __init__(self):
        self.done = {}
        self.killed = False

    def on_item_done(self, item, result, where):
        self.done[item.key] = result
        if len(self.done) == 2 and not self.killed:
            import ray
            self.killed = True
            ray.kill(where.worker.handle, no_restart=False)
        return None

    def on_item_failed(self, item, error, where):
        print("FAILED", item.key, error, flush=True)

    def redo(self, item, where, lost):
        return item

    def on_tick(self, scheduler):
        pass


client = Client()
scheduler = Scheduler(Workers(actor_class=Talker, actors=1, per_actor=1), tick_s=0.3)
try:
    outcome = scheduler.run(client, [Item(f"i{n}", "work", (n,)) for n in range(6)], RuntimeSettings())
finally:
    scheduler.close()
    stop_ray()
print("completed", outcome.completed, flush=True)
for key, pid in sorted(client.done.items()):
    print("done", key, pid, flush=True)
"""


def test_actor_lines_reach_the_driver_and_keep_coming_after_ray_restarts_the_actor(tmp_path):
    out = run_on_own_ray(RUN, tmp_path / "home")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "completed True" in out.stdout and "FAILED" not in out.stdout, out.stdout + out.stderr[-3000:]
    done = dict(re.findall(r"^done (i\d) (\d+)$", out.stdout, re.MULTILINE))
    assert sorted(done) == [f"i{n}" for n in range(6)]
    first, second = done["i0"], done["i5"]
    assert first != second, "the actor was killed and Ray restarted it in a new process"

    relayed = re.findall(r"^\((actor-[0-9a-f]{8})\) \S+ \S+ WARNING dth_ray\.talker (.+)$", out.stderr, re.MULTILINE)
    assert len({worker for worker, _ in relayed}) == 1, "one slot: the restarted actor keeps its worker's tag"
    lines = [text for _, text in relayed]
    # The restarted process's lines all came through: its start, the items it ran, and its close.
    assert f"up in pid {second}" in lines
    assert {f"item {n} in pid {second}" for n, pid in ((int(k[1:]), v) for k, v in done.items()) if pid == second} \
        <= set(lines)
    assert f"closing in pid {second}" in lines
    assert len(lines) == len(set(lines)), "each line is relayed once"
