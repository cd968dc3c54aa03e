"""Key mapping between source and destination prefixes, and prefix collapsing."""

import random

import pytest

from dth_ray.plan.keys import collapse_prefixes, dest_key, src_key_for

ODD_KEYS = [
    "a b/c d.txt",
    "plus+sign",
    "pct%20encoded",
    "q?uery&amp=1",
    "ünïcødé/日本語/файл",
    "emoji/😀.bin",
    "trailing/",
    "",
]


@pytest.mark.parametrize("rel", ODD_KEYS)
@pytest.mark.parametrize(("src_prefix", "dst_prefix"), [("", ""), ("data/", "backup/2024/"), ("raw", "x-")])
def test_dest_key_round_trips(rel, src_prefix, dst_prefix):
    src = src_prefix + rel
    dst = dest_key(src, src_prefix, dst_prefix)
    assert dst == dst_prefix + rel
    assert src_key_for(dst, src_prefix, dst_prefix) == src


def test_prefixes_are_plain_strings_without_slash_added():
    assert dest_key("logs2024/a", "logs", "archive") == "archive2024/a"
    assert dest_key("logs/a", "logs/", "") == "a"


def test_key_outside_prefix_raises():
    with pytest.raises(ValueError, match="not under source prefix"):
        dest_key("other/a", "data/", "x/")
    with pytest.raises(ValueError, match="not under destination prefix"):
        src_key_for("other/a", "data/", "x/")


def test_collapse_drops_covered_and_duplicates():
    assert collapse_prefixes(["a/b/", "a/", "b/", "a/", "ab/", "a/b/c"]) == ["a/", "ab/", "b/"]
    # 'a' covers 'a/' and 'ab/' as plain strings.
    assert collapse_prefixes(["ab/", "a", "a/x"]) == ["a"]
    assert collapse_prefixes([]) == []


def test_collapse_matches_brute_force():
    rng = random.Random(7)
    alphabet = "ab/"
    for _ in range(300):
        prefixes = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(8)]
        expected = sorted({p for p in prefixes if not any(q != p and p.startswith(q) for q in prefixes)})
        assert collapse_prefixes(prefixes) == expected
