"""The configuration key registry (dth_ray/config_keys.py) against the schema, the conf/ presets and the
README's table: every key documented once, with the default a run really gets, so they cannot drift apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dth_ray import config_keys
from dth_ray.compose import load_config
from dth_ray.config import SyncConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def schema_leaves(cls: type = SyncConfig, node: object = None, prefix: str = "") -> dict[str, object]:
    """Every leaf of the schema with its default, walked independently of the module under test."""
    node = cls() if node is None else node
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            out.update(schema_leaves(type(value), value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def value_at(cfg: object, name: str) -> object:
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_every_schema_key_is_listed_once_with_a_meaning_and_its_default():
    leaves = schema_leaves()
    listed = {k.name: k for k in config_keys.all_keys()}
    assert len(listed) == len(config_keys.all_keys()), "no key listed twice"
    groups = {g for g in config_keys.GROUPS}
    # A preset's `<group>.type` is listed as the group itself (`source=oss`); everything else by its own name.
    expected = {n for n in leaves if n.rpartition(".")[0] not in groups or not n.endswith(".type")} | groups
    assert set(listed) == expected
    for name, key in listed.items():
        assert key.meaning.strip() and "\n" not in key.meaning, name
        assert key.default == leaves[f"{name}.type" if key.group else name], name
    assert {"maxcompute.oss.bucket", "maxcompute.oss.prefix", "maxcompute.oss.credentials"} <= set(listed)
    assert listed["maxcompute.oss.prefix"].meaning.startswith("`maxcompute.mode=unload` staging store")


def test_no_meaning_or_type_is_kept_for_a_key_the_schema_does_not_have():
    names = set(schema_leaves()) | set(config_keys.GROUPS)
    assert set(config_keys.MEANINGS) - names == set()
    assert set(config_keys.KINDS) - names == set()
    store_fields = {f.name for f in dataclasses.fields(SyncConfig().source)}
    assert set(config_keys.STORE_MEANINGS) == store_fields
    assert set(config_keys.STORE_KINDS) <= store_fields


def test_the_readme_table_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    assert config_keys.BEGIN in text and config_keys.END in text
    assert config_keys.with_table(text) == text, (
        "README.md's configuration table differs from dth_ray/config_keys.py: run "
        "`python -m dth_ray.config_keys --write-readme README.md`")
    table = text.split(config_keys.BEGIN)[1].split(config_keys.END)[0]
    for key in config_keys.all_keys():
        assert f"| `{key.name}` | `{key.default_text.replace('|', chr(92) + '|')}` |" in table, key.name


def test_the_composed_defaults_are_the_listed_ones_under_every_preset():
    """What a command really runs with (conf/ composed by Hydra) is what `keys` and the README say, whichever
    preset is chosen: a preset sets its group's type and nothing that contradicts a documented default."""
    listed = [k for k in config_keys.all_keys() if not k.group]
    for group in config_keys.GROUPS:
        for option in config_keys.group_options(group):
            cfg = load_config([f"{group}={option}"], check=False)
            assert format(value_at(cfg, f"{group}.type").value) == option
            for key in listed:
                assert value_at(cfg, key.name) == key.default, f"{group}={option}: {key.name}"


@pytest.mark.parametrize(("typed", "meant"), [
    ("transfer.concurrenc", ["transfer.concurrency"]),
    ("concurrency", ["transfer.concurrency"]),
    ("sorce.bucket", ["source.bucket"]),
    ("dryrun", ["dry_run"]),
    ("maxcompute.oss.bukcet", ["maxcompute.oss.bucket"]),
    ("bucket", ["source.bucket", "destination.bucket", "maxcompute.oss.bucket"]),
    ("zzzz", []),
])
def test_suggestions_for_a_misspelled_key(typed, meant):
    assert config_keys.suggest(typed) == meant


def test_values_are_shown_as_they_are_written_on_the_command_line():
    shown = {k.name: k.default_text for k in config_keys.all_keys()}
    assert shown["dry_run"] == "false" and shown["resume"] == "true"
    assert shown["report"] == '""' and shown["filter.include"] == "[]"
    assert shown["compare"] == "size_etag" and shown["transfer.buffer_size"] == "160MiB"
    assert shown["source"] == "s3" and shown["manifest"] == "sqlite"
