"""Where to cut a large key range into listable sub-ranges (pure): boundary candidates and the shards
between occupied boundaries. Coverage never depends on the guesses: shards are (b_i, b_i+1] intervals."""

from __future__ import annotations

from collections.abc import Sequence

from dth_ray.model import Shard
from dth_ray.plan.shard import shard_id

# Characters keys commonly branch on, in code-point order. A boundary only guides balance: keys with other
# characters still fall into exactly one interval.
BRANCH_CHARS = "!-./0123456789:=ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"


def common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def boundaries(stem: str, low: str, high: str) -> list[str]:
    """Candidate cut points stem+c strictly inside (low, high) ('' high = unbounded), sorted."""
    return [b for b in (stem + c for c in BRANCH_CHARS) if b > low and (not high or b < high)]


def interval_shards(template: Shard, edges: Sequence[str]) -> list[Shard]:
    """The template's range cut at sorted `edges`: (start_after, e1], (e1, e2], ..., (en, end_at]."""
    starts = [template.start_after, *edges]
    ends = [*edges, template.end_at]
    return [Shard(shard_id(template.prefix, a, b, template.delimiter), template.prefix, a, b, template.delimiter)
            for a, b in zip(starts, ends, strict=True)]


def occupied_edges(edges: Sequence[str], first_after: Sequence[str | None], end_at: str) -> list[str]:
    """Keep the edges that leave no empty interval: edge e_i survives when the interval that starts at it
    holds a key (`first_after[i]`, the first key after e_i, lies before the next kept boundary)."""
    kept: list[str] = []
    for i, edge in enumerate(edges):
        nxt = first_after[i]
        if nxt is None or (end_at and nxt > end_at):
            break  # nothing after this edge inside the range: the rest is one interval with the previous
        upper = edges[i + 1] if i + 1 < len(edges) else end_at
        if not upper or nxt <= upper:
            kept.append(edge)
    return kept
