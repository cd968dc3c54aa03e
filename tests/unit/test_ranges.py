"""Cutting a key range at branch points: candidates inside the range, empty intervals merged, coverage exact."""

import random

from dth_ray.model import Shard
from dth_ray.plan.ranges import boundaries, common_prefix, interval_shards, occupied_edges


def test_boundaries_lie_strictly_inside_the_range():
    cuts = boundaries("p/obj-", "p/obj-3", "p/obj-7")
    assert cuts and all("p/obj-3" < b < "p/obj-7" for b in cuts)
    assert cuts == sorted(cuts)
    assert boundaries("p/", "", "")[0] == "p/!"


def test_occupied_edges_drop_empty_intervals():
    keys = sorted(f"k{d}{i:03d}" for d in "1357" for i in range(10))
    edges = boundaries("k", "", "")

    def first_after(edge):
        return next((k for k in keys if k > edge), None)

    kept = occupied_edges(edges, [first_after(e) for e in edges], "")
    shards = interval_shards(Shard("t", "k"), kept)
    for shard in shards[1:]:
        assert any(shard.contains(k) for k in keys), f"empty interval {shard}"
    assert all(sum(s.contains(k) for s in shards) == 1 for k in keys)


def test_intervals_cover_every_key_once_whatever_the_cuts():
    rng = random.Random(9)
    keys = sorted({"p/" + "".join(rng.choice("ab/Zü 9~") for _ in range(rng.randint(1, 6))) for _ in range(500)})
    cuts = sorted(rng.sample(keys, 20))
    shards = interval_shards(Shard("t", "p/", start_after="", end_at=""), cuts)
    assert all(sum(s.contains(k) for s in shards) == 1 for k in keys)
    assert len({s.shard_id for s in shards}) == len(shards)


def test_common_prefix():
    assert common_prefix("abc", "abd") == "ab"
    assert common_prefix("", "x") == ""
