"""A dry run you can read: the summary shows the first keys it would copy and delete (with why), and
`dry_run_list=PATH` writes every one as JSON lines, published only when every shard finished — on the real
runtime over the in-memory store, with a listing retried mid-run so a shard's changes arrive in two results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dth_ray.compose import load_settings
from dth_ray.errors import ConfigError, Transient
from dth_ray.runtime.driver import run_sync
from dth_ray.stores.memory import MemoryStore
from tests.integration.test_runtime_in_memory import contents, seed, settings_for

SOURCE = {f"p{i % 3}/o{i:03d}": bytes([i]) * (i + 1) for i in range(60)}
SOURCE.update({f"p2/m{i:05d}": b"m" for i in range(2500)})  # p2/ is listed in 3 pages


def _changed_world(src: str, dst: str) -> tuple[dict, dict]:
    """The destination holds some keys equal, one a different size, and keys the source lacks; returns what
    a dry run with sync.delete must list (key -> (size, reason)) for copies and for deletes."""
    seed(src, SOURCE)
    equal = {k: v for k, v in SOURCE.items() if int(k[-3:]) % 2 == 0}
    stale = {"p1/o001": b"different size", "p2/extra": b"x" * 7, "gone/a": b"yy", "gone/b": b"zzz"}
    seed(dst, {**equal, **stale})
    copies = {k: (len(v), "new") for k, v in SOURCE.items() if k not in equal}
    copies["p1/o001"] = (len(SOURCE["p1/o001"]), "size")
    deletes = {k: (len(v), "not_at_source") for k, v in stale.items() if k not in SOURCE}
    return copies, deletes


def test_the_sample_shows_the_first_keys_of_each_and_the_list_has_every_one(tmp_path, buckets, caplog):
    copies, deletes = _changed_world(*buckets)
    before = contents(buckets[1])
    # p2/'s shard listing fails once after its first pages (planning lists p2/ 3 times): the retry continues
    # from its watermark, and what the first attempt listed is written once.
    MemoryStore.faults(buckets[0]).fail("list_page", Transient("listing broke"), times=1, key_prefix="p2/", after=5)
    path = tmp_path / "changes.jsonl"
    settings = settings_for(tmp_path, buckets, "dry_run=true", "sync.delete=true", f"dry_run_list={path}",
                            "compare=size")
    report = run_sync(settings, in_process=2)

    assert report.status == "succeeded", report.errors
    assert "shard 'p2/': attempt 1 failed: Transient: listing broke; trying again from its watermark" in caplog.text
    assert contents(buckets[1]) == before, "a dry run writes and deletes nothing"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(copies) + len(deletes) == report.dry_run_listed
    got = {(c["action"], c["key"]): (c["size"], c["reason"]) for c in lines}
    assert len(got) == len(lines), "each change once"
    assert got == {**{("copy", k): v for k, v in copies.items()}, **{("delete", k): v for k, v in deletes.items()}}
    assert not (tmp_path / "changes.jsonl.tmp").exists()

    sample = [(c.action, c.key) for c in report.sample]
    assert sample == [("copy", k) for k in sorted(copies)[:10]] + [("delete", k) for k in sorted(deletes)]
    out = report.to_json()
    assert out["objects"]["would_copy"] == len(copies) and out["objects"]["would_delete"] == len(deletes)
    assert out["dry_run_list"] == {"path": str(path), "lines": len(lines)}
    text = report.summary()
    first = sorted(copies)[0]
    assert f"would copy: {first!r} ({copies[first][0]:,} bytes, {copies[first][1]})" in text
    assert "would delete: 'gone/a' (2 bytes, not_at_source)" in text
    assert f"all of them: {path} ({len(lines):,} lines)" in text


def test_without_a_list_the_summary_says_how_to_get_one(tmp_path, buckets):
    copies, _ = _changed_world(*buckets)
    report = run_sync(settings_for(tmp_path, buckets, "dry_run=true", "compare=size"), in_process=1)
    assert report.status == "succeeded"
    assert [c.key for c in report.sample] == sorted(copies)[:10]
    assert "dry_run_list=PATH writes them all" in report.summary()


def test_a_failed_listing_leaves_no_list(tmp_path, buckets):
    _changed_world(*buckets)
    MemoryStore.faults(buckets[0]).fail("list_page", Transient("down"), times=None, key_prefix="p1/", after=1)
    path = tmp_path / "changes.jsonl"
    report = run_sync(settings_for(tmp_path, buckets, "dry_run=true", f"dry_run_list={path}"), in_process=1)
    assert report.status == "failed"
    assert not path.exists() and not (tmp_path / "changes.jsonl.tmp").exists()


def test_bad_list_paths_are_refused_before_listing(tmp_path, buckets):
    seed(buckets[0], SOURCE)
    with pytest.raises(ConfigError, match="needs dry_run=true"):
        load_settings(["source.type=memory", f"source.bucket={buckets[0]}", "destination.type=memory",
                       f"destination.bucket={buckets[1]}", f"dry_run_list={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match=f"dry_run_list='{tmp_path}' is a directory"):
        run_sync(settings_for(tmp_path, buckets, "dry_run=true", f"dry_run_list={tmp_path}"), in_process=1)
    missing = tmp_path / "no" / "such.jsonl"
    with pytest.raises(ConfigError, match="cannot be written"):
        run_sync(settings_for(tmp_path, buckets, "dry_run=true", f"dry_run_list={missing}"), in_process=1)
    assert MemoryStore.faults(buckets[0]).calls["list_page"] == 0


def test_the_cli_prints_the_sample(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(12):
        (src / "d").mkdir(parents=True, exist_ok=True)
        (src / "d" / f"f{i:02d}").write_bytes(b"x" * (i + 1))
    dst.mkdir()
    (dst / "old").write_bytes(b"zz")
    cli = subprocess.run([sys.executable, "-m", "dth_ray", "sync", "source=local", f"source.path={src}",
                          "destination=local", f"destination.path={dst}", f"manifest.path={tmp_path / 'm.db'}",
                          "dry_run=true", "sync.delete=true", "progress=none"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert lines[0].startswith("dry run: 12 listed, would copy 12 objects") and lines[0].endswith("would delete 1")
    assert lines[1:11] == [f"  would copy: 'd/f{i:02d}' ({i + 1} bytes, new)" for i in range(10)]
    assert lines[11] == "  would delete: 'old' (2 bytes, not_at_source)"
    assert lines[12] == "  (the first keys of each; dry_run_list=PATH writes them all)"
    assert sorted(p.name for p in dst.iterdir()) == ["old"]
