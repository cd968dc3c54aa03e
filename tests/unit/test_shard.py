"""Shards never overlap and together cover every key."""

import random

import pytest

from dth_ray.model import Shard
from dth_ray.plan.shard import (
    order_largest_first,
    shard_covers,
    shard_id,
    shards_for_prefixes,
    shards_from_level,
    split_by_boundaries,
    split_level_by_bytes,
)

ALPHABET = ["a", "b", "/", "ü", " ", "+", "%", "?", "&", "日"]


def random_keys(rng, prefix, count):
    keys = set()
    while len(keys) < count:
        keys.add(prefix + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 7))))
    return sorted(keys)


def level_listing(prefix, keys):
    """What a '/'-delimited listing of `prefix` returns: common prefixes and whether objects sit at it."""
    common, direct = set(), False
    for key in keys:
        rest = key[len(prefix):]
        if "/" in rest:
            common.add(prefix + rest[: rest.index("/") + 1])
        else:
            direct = True
    return sorted(common), direct


def assert_partition(shards, keys):
    for key in keys:
        owners = [s.shard_id for s in shards if shard_covers(s, key)]
        assert len(owners) == 1, (key, owners)


def test_level_shards_partition_random_key_sets():
    rng = random.Random(1234)
    for trial in range(200):
        prefix = rng.choice(["", "data/", "a/b/", "日本/"])
        keys = random_keys(rng, prefix, rng.randint(1, 60))
        common, direct = level_listing(prefix, keys)
        shards = shards_from_level(prefix, common, direct)
        assert len(shards) == len(common) + direct, trial
        assert_partition(shards, keys)


def test_level_shards_recursive_descent_partitions():
    # Expanding one common prefix into its own level keeps the partition intact.
    rng = random.Random(99)
    keys = random_keys(rng, "", 400)
    common, direct = level_listing("", keys)
    shards = shards_from_level("", common, direct)
    expanded = []
    for s in shards:
        if s.delimiter:
            expanded.append(s)
            continue
        below = [k for k in keys if k.startswith(s.prefix)]
        expanded.extend(shards_from_level(s.prefix, *level_listing(s.prefix, below)))
    assert_partition(expanded, keys)


def test_level_shards_shape_and_stable_ids():
    shards = shards_from_level("p/", ["p/b/", "p/a/", "p/a/"], True)
    assert [(s.prefix, s.delimiter) for s in shards] == [("p/a/", ""), ("p/b/", ""), ("p/", "/")]
    again = shards_from_level("p/", ["p/a/", "p/b/"], True)
    assert [s.shard_id for s in shards] == [s.shard_id for s in again]
    assert len({s.shard_id for s in shards}) == 3
    assert shards_from_level("p/", [], False) == []


def test_level_rejects_foreign_common_prefix():
    with pytest.raises(ValueError):
        shards_from_level("p/", ["q/a/"], False)


def test_delimiter_shard_excludes_deeper_keys():
    (only,) = shards_from_level("p/", [], True)
    assert shard_covers(only, "p/x")
    assert not shard_covers(only, "p/x/y")
    assert not shard_covers(only, "q/x")


def test_boundaries_partition_random_key_sets():
    rng = random.Random(4321)
    for _ in range(200):
        prefix = rng.choice(["", "logs/"])
        keys = random_keys(rng, prefix, rng.randint(1, 80))
        # Boundaries may be listed keys or arbitrary keys between them.
        pool = keys + random_keys(rng, prefix, 10)
        boundaries = rng.sample(pool, rng.randint(0, min(10, len(pool))))
        shards = split_by_boundaries(prefix, boundaries)
        assert len(shards) == len(set(boundaries)) + 1
        assert_partition(shards, keys)


def test_boundaries_shape():
    shards = split_by_boundaries("k/", ["k/m", "k/c", "k/m"])
    assert [(s.start_after, s.end_at) for s in shards] == [("", "k/c"), ("k/c", "k/m"), ("k/m", "")]
    assert all(s.prefix == "k/" for s in shards)
    first, middle, last = shards
    assert first.contains("k/c") and not middle.contains("k/c")  # end_at inclusive, start_after exclusive
    assert last.contains("k/zzz") and not last.contains("k/m")
    (whole,) = split_by_boundaries("k/", [])
    assert whole.contains("k/anything")


def test_boundaries_must_be_keys_under_prefix():
    with pytest.raises(ValueError):
        split_by_boundaries("k/", ["j/x"])
    with pytest.raises(ValueError):
        split_by_boundaries("", [""])


def test_prefix_list_shards_do_not_overlap():
    shards = shards_for_prefixes(["a/b/", "a/", "c/", "c/"])
    assert [s.prefix for s in shards] == ["a/", "c/"]
    assert_partition(shards, ["a/x", "a/b/y", "c/z"])
    assert not any(shard_covers(s, "b/x") for s in shards)


def test_ids_differ_for_different_extents():
    ids = {
        shard_id("a/"),
        shard_id("a/", delimiter="/"),
        shard_id("a/", "a/m"),
        shard_id("a/", "", "a/m"),
        shard_id("a/m"),
    }
    assert len(ids) == 5
    assert shard_id("a/") == shard_id("a/")


def test_order_largest_first_is_stable():
    a, b, c, d = (Shard(x, x) for x in "abcd")
    assert order_largest_first([(a, 5), (b, 10), (c, 5), (d, 0)]) == [b, a, c, d]
    assert order_largest_first([]) == []


def test_split_level_by_bytes_covers_each_key_once_and_balances_bytes():
    objects = [(f"p/k{i:02d}", 128 if i < 8 else 1) for i in range(20)]
    shards = split_level_by_bytes("p/", objects, 4)
    assert 2 <= len(shards) <= 4
    owners = {key: [s for s in shards if s.contains(key)] for key, _ in objects}
    assert all(len(found) == 1 for found in owners.values()), "each key in exactly one shard"
    assert not any(s.contains("p/sub/k") for s in shards), "objects below the level belong to other shards"
    per_shard = [sum(size for key, size in objects if s.contains(key)) for s in shards]
    assert max(per_shard) <= 2 * 128 + 12, per_shard  # about total/parts each, never one shard with it all
    assert len({s.shard_id for s in shards}) == len(shards)


def test_split_level_by_bytes_edge_cases():
    assert len(split_level_by_bytes("p/", [("p/only", 10)], 8)) == 1
    zero = split_level_by_bytes("", [("a", 0), ("b", 0)], 2)
    assert all(sum(s.contains(k) for s in zero) == 1 for k in ("a", "b"))
    with pytest.raises(ValueError):
        split_level_by_bytes("p/", [("p/deeper/x", 1)], 2)
