"""rclone-style include/exclude globs and the prefix-list loader."""

import pickle

import pytest

from dth_ray.config import FilterConfig, StoreConfig, SyncConfig
from dth_ray.errors import ConfigError
from dth_ray.keyfilter import KeyFilter
from dth_ray.plan.prefix_list import load_prefix_list
from dth_ray.settings import resolve


def test_empty_filter_is_noop_and_accepts_everything():
    f = KeyFilter()
    assert f.is_noop
    assert f.accepts("anything/at/all.bin")
    assert not KeyFilter(exclude=["*.tmp"]).is_noop


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("*.csv", "x.csv", True),
        ("*.csv", "a/b/x.csv", True),  # unanchored: matches the tail at a '/' boundary
        ("*.csv", "a/b/x.csv.gz", False),
        ("b/*.csv", "a/b/x.csv", True),
        ("b/*.csv", "ab/x.csv", False),  # only at a '/' boundary
        ("/*.csv", "a/x.csv", False),  # anchored: '*' does not cross '/'
        ("/*.csv", "x.csv", True),
        ("/logs/**", "logs/2024/01/a.gz", True),
        ("/logs/**", "app/logs/a.gz", False),
        ("logs/**", "app/logs/a.gz", True),
        ("/logs/*", "logs/2024/a.gz", False),
        ("**.gz", "deep/er/x.gz", True),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file10.txt", False),
        ("a?b", "a/b", False),  # '?' never matches '/'
        ("[ab]*.txt", "b1.txt", True),
        ("[ab]*.txt", "c1.txt", False),
        ("[!ab]*.txt", "c1.txt", True),
        ("[!ab]*.txt", "a1.txt", False),
        ("x[!a]y", "x/y", False),  # a negated class never matches '/'
        ("x[--0]y", "x/y", False),  # nor does a range that spans '/'
        ("[0-9][0-9].log", "dir/42.log", True),
        ("*.{jpg,png}", "img/a.png", True),
        ("*.{jpg,png}", "img/a.gif", False),
        (r"a\*b", "a*b", True),
        (r"a\*b", "axb", False),
        ("a+b (1).txt", "dir/a+b (1).txt", True),  # regex metacharacters are literal
        ("100%.txt", "100%.txt", True),
        ("q?x&y=1", "q?x&y=1", True),
        ("日本/*", "データ/日本/ファイル", True),
        ("*", "line\nbreak", True),
    ],
)
def test_include_glob_semantics(pattern, key, expected):
    assert KeyFilter(include=[pattern]).accepts(key) is expected


def test_exclude_wins_over_include():
    f = KeyFilter(include=["*.csv", "/keep/**"], exclude=["/keep/tmp/**", "*secret*"])
    assert f.accepts("a/b.csv")
    assert f.accepts("keep/x.bin")
    assert not f.accepts("keep/tmp/x.bin")
    assert not f.accepts("a/secret-stuff.csv")
    assert not f.accepts("a/b.json")


def test_exclude_only_accepts_the_rest():
    f = KeyFilter(exclude=["*.tmp", "/.git/**"])
    assert f.accepts("a/b.txt")
    assert not f.accepts("a/b.tmp")
    assert not f.accepts(".git/config")
    assert f.accepts("sub/.git/config")


def test_leading_slash_from_prefix_without_slash_is_ignored():
    # source.prefix='data' gives rel keys like '/x.csv'; anchored patterns still see 'x.csv'.
    assert KeyFilter(include=["/x.csv"]).accepts("/x.csv")


def test_resolved_from_the_config_once():
    cfg = SyncConfig(source=StoreConfig(bucket="src"), destination=StoreConfig(bucket="dst"),
                     filter=FilterConfig(include=["*.csv"], exclude=["/tmp/**"]))
    f = resolve(cfg).worker.key_filter
    assert f.accepts("a.csv")
    assert not f.accepts("tmp/a.csv")
    bare = SyncConfig(source=StoreConfig(bucket="src"), destination=StoreConfig(bucket="dst"))
    assert resolve(bare).worker.key_filter.is_noop


@pytest.mark.parametrize("pattern", ["[abc", "a{b,c", "a}b", "x\\", "[z-a]", ""])
def test_invalid_pattern_raises_config_error_naming_it(pattern):
    with pytest.raises(ConfigError) as info:
        KeyFilter(include=["ok*", pattern])
    message = str(info.value)
    assert message.startswith(f"filter.include pattern {pattern!r} is not a valid glob")
    assert "\n" not in message


def test_invalid_exclude_named_as_exclude():
    with pytest.raises(ConfigError, match=r"^filter\.exclude pattern '\[abc' is not a valid glob"):
        KeyFilter(exclude=["[abc"])


def test_load_prefix_list(tmp_path):
    path = tmp_path / "prefixes.txt"
    path.write_bytes(
        b"# comment\r\n"
        b"b/\r\n"
        b"a/b/\n"
        b"\n"
        b"   \n"
        b"a/\n"
        b"with inner space/ \n"
        b"b/\n"
        b"\xc3\xbcml/\n"
        b"c/"
    )
    assert load_prefix_list(str(path)) == ["a/", "b/", "c/", "with inner space/ ", "üml/"]


def test_load_prefix_list_missing_file(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match=r"source\.prefix_list="):
        load_prefix_list(missing)


def test_load_prefix_list_empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# only comments\n\n")
    with pytest.raises(ConfigError, match=r"source\.prefix_list=.*lists no prefixes"):
        load_prefix_list(str(path))


def test_load_prefix_list_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9/\n")
    with pytest.raises(ConfigError, match=r"source\.prefix_list="):
        load_prefix_list(str(path))


def test_filter_survives_pickle_round_trip():
    f = pickle.loads(pickle.dumps(KeyFilter(include=["*.csv"], exclude=["/tmp/**"])))
    assert f.accepts("a/b.csv")
    assert not f.accepts("tmp/b.csv")
    assert not f.accepts("a/b.json")
