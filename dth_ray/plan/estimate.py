"""Pre-transfer estimate for `dth-ray plan`: duration and cost of copying what a dry run found (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rates:
    """Throughput per node and the prices an estimate uses (all configurable: `plan.*`)."""

    nodes: int
    node_bytes_per_s: float
    node_objects_per_s: float
    egress_per_gb: float
    put_per_1000: float
    get_per_1000: float
    dynamodb_write_per_million: float
    instance_per_hour: float


def estimate(objects: int, nbytes: int, multipart_objects: int, multipart_bytes: int, part_size_bytes: int,
             rates: Rates, manifest_writes_per_object: float = 0.01) -> dict:
    """Duration (the slower of the byte and the object budget, over all nodes) and cost by component.

    Multipart objects cost one GET and one PUT per part plus Create and Complete; every other object one GET
    and one PUT. Raises ValueError for a non-positive rate.
    """
    if rates.nodes < 1 or rates.node_bytes_per_s <= 0 or rates.node_objects_per_s <= 0:
        raise ValueError("plan.nodes, plan.node_throughput and plan.node_objects_per_s must be positive")
    parts = math.ceil(multipart_bytes / part_size_bytes) if multipart_bytes and part_size_bytes else 0
    single = objects - multipart_objects
    puts = single + parts + 2 * multipart_objects
    gets = single + parts
    duration_s = max(nbytes / (rates.nodes * rates.node_bytes_per_s), objects / (rates.nodes * rates.node_objects_per_s))
    writes = single * manifest_writes_per_object + multipart_objects * 3 + parts
    cost = {
        "egress": nbytes / 1e9 * rates.egress_per_gb,
        "requests": puts / 1000 * rates.put_per_1000 + gets / 1000 * rates.get_per_1000,
        "manifest": writes / 1e6 * rates.dynamodb_write_per_million,
        "instances": rates.nodes * math.ceil(duration_s / 3600) * rates.instance_per_hour if objects else 0.0,
    }
    cost = {k: round(v, 2) for k, v in cost.items()}
    return {"objects": objects, "bytes": nbytes, "put_requests": puts, "get_requests": gets,
            "nodes": rates.nodes, "duration_s": round(duration_s, 1), "cost_usd": cost,
            "cost_usd_total": round(sum(cost.values()), 2)}
