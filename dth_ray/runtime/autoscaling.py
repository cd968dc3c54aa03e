"""Driver-side elasticity: asks the Ray autoscaler for transfer slots in proportion to the backlog (policy in
dth_ray.plan.autoscale), and starts transfer actors on nodes that join while the run goes on."""

from __future__ import annotations

import logging
import time

from dth_ray.plan.autoscale import ScalePolicy, slots_wanted

log = logging.getLogger(__name__)
SLOT = "transfer_slot"
_NODE_CHECK_S = 5.0


class Elasticity:
    """One per run; `tick()` from the dispatch loop, `release()` at the end. Only the driver uses it."""

    def __init__(self, enabled: bool, grow_actors: bool, policy: ScalePolicy, spawn):
        """`spawn(node_id, count)` starts `count` transfer actors on that node and returns them."""
        self.enabled = enabled
        self.grow_actors = grow_actors
        self.policy = policy
        self._spawn = spawn
        self.requested = 0
        self.known_nodes: set[str] = set()
        self._next_node_check = 0.0
        self.requests: list[int] = []  # every request made, for the report

    def tick(self, pending_shards: int, pending_bytes: int) -> list:
        """Update the capacity request; returns transfer actors started on newly joined nodes."""
        if self.enabled:
            want = slots_wanted(pending_shards, pending_bytes, self.requested, self.policy)
            if want != self.requested:
                self._request(want)
        return self._grow() if self.grow_actors else []

    def _request(self, slots: int) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{SLOT: 1}] * slots)
        log.info("autoscaler request: %d transfer slots (was %d)", slots, self.requested)
        self.requested = slots
        self.requests.append(slots)

    def _grow(self) -> list:
        import ray

        now = time.monotonic()
        if now < self._next_node_check:
            return []
        self._next_node_check = now + _NODE_CHECK_S
        started = []
        for node in ray.nodes():
            node_id = node["NodeID"]
            if not node.get("Alive") or node_id in self.known_nodes:
                continue
            self.known_nodes.add(node_id)
            resources = node.get("Resources", {})
            count = max(1, int(resources.get(SLOT) or resources.get("CPU") or 1))
            log.info("node %s joined: starting %d transfer actors", node_id[:12], count)
            started.extend(self._spawn(node_id, count))
        return started

    def release(self) -> None:
        if self.requested:
            self._request(0)
