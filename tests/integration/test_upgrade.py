"""Upgrades: a run interrupted on release 0.1.0 (its manifest and destination kept in tests/fixtures) resumes on
this release — the manifest migrated to the current schema, finished shards not listed again, the copies the
old driver made after its last checkpoint counted once — and a manifest from a newer release is refused with
one line that says how to start afresh."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from dth_ray.compose import load_settings
from dth_ray.console.data import run_state
from dth_ray.errors import ConfigError
from dth_ray.runtime.driver import EARLIER, run_sync
from dth_ray.runtime.manifest import ObjectRecord
from dth_ray.runtime.manifest_sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteManifest

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "release-0.1.0"
BASE_NS = 1_700_000_000_000_000_000


def make_source(root: Path) -> dict[str, tuple[bytes, int]]:
    """The fixture's source: 72 files, bytes and mtimes exactly as release 0.1.0 saw them."""
    rng = random.Random(2026)
    files = {}
    for p in range(6):
        for i in range(12):
            key = f"part-{p}/file-{i:02d}.dat"
            body = rng.randbytes(rng.randint(100, 3000))
            mtime_ns = BASE_NS + p * 100 + i
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            os.utime(path, ns=(BASE_NS + i, mtime_ns))
            files[key] = (body, mtime_ns)
    return files


def test_a_run_interrupted_on_release_0_1_0_resumes_and_completes_exactly(tmp_path):
    files = make_source(tmp_path / "src")
    dst = tmp_path / "dst"
    shutil.copytree(FIXTURE / "destination", dst)
    for path in dst.rglob("*.dat"):  # a local copy keeps its source's mtime (git did not keep it)
        key = path.relative_to(dst).as_posix()
        os.utime(path, ns=(files[key][1], files[key][1]))
    manifest = tmp_path / "manifest.sqlite"
    shutil.copy(FIXTURE / "manifest.sqlite", manifest)
    assert sqlite3.connect(manifest).execute("PRAGMA user_version").fetchone()[0] == 2

    settings = load_settings(["source=local", f"source.path={tmp_path / 'src'}", "destination=local",
                              f"destination.path={dst}", "job=upgrade-fixture", f"manifest.path={manifest}",
                              "progress=off"])
    report = run_sync(settings, in_process=2)

    assert report.resumed and report.run_id == 1 and report.executions == 2
    t = report.tally
    assert report.status == "succeeded", (report.errors, report.unfinished)
    assert t.listed == 72 == t.copied + t.skipped + t.failed
    assert t.copied == 72 and t.skipped == 0, "the old driver's copies count as copied, once"
    assert t.recovered > 0, "copies made after the old driver's last checkpoint were found, not re-sent"
    assert sum(n.objects for n in report.nodes) == 72
    earlier = next(n for n in report.nodes if n.node_id == EARLIER)
    assert earlier.objects >= 25  # the 2 finished shards, the settled key and the recovered ones
    assert {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*.dat")} == {
        k: body for k, (body, _) in files.items()}
    assert sqlite3.connect(manifest).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_manifest_from_a_newer_release_is_refused_with_one_line(tmp_path):
    path = tmp_path / "manifest.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (run_id INTEGER PRIMARY KEY)")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ConfigError) as info:
        SqliteManifest(str(path), "job")
    message = str(info.value)
    assert "\n" not in message and f"schema {SCHEMA_VERSION + 1}" in message
    assert "another manifest.path" in message


def _schema_3_copy(tmp_path: Path) -> Path:
    """The 0.1.0 fixture brought to schema 3 (the release before the console's tables) by its own steps."""
    path = tmp_path / "manifest-v3.sqlite"
    shutil.copy(FIXTURE / "manifest.sqlite", path)
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[2]:
        db.execute(statement)
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    return path


def test_a_schema_3_manifest_opens_migrated_with_the_consoles_tables(tmp_path):
    path = _schema_3_copy(tmp_path)
    manifest = SqliteManifest(str(path), "upgrade-fixture")
    try:
        tables = {n for (n,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"failures", "live", "jobs"} <= tables
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        (info,) = manifest.jobs()
        assert info.job == "upgrade-fixture" and info.run.run_id == 1 and info.args == ()
        assert manifest.failures_page(1, "", 10) == [] and manifest.live(1) is None
        manifest.record([ObjectRecord("part-9/x", 1, "e", "part-9/x", "", "failed", "Transient: reset", run_id=1)])
        assert [f.key for f in manifest.failures_page(1, "", 10)] == ["part-9/x"]
    finally:
        manifest.close()


def test_the_console_reads_an_old_manifest_without_changing_it(tmp_path):
    path = tmp_path / "manifest.sqlite"
    shutil.copy(FIXTURE / "manifest.sqlite", path)
    before = path.read_bytes()
    manifest = SqliteManifest(str(path), "upgrade-fixture", read_only=True)
    try:
        (info,) = manifest.jobs()
        assert info.run.status == "running" and info.shards[1] > 0  # its driver was killed
        assert run_state(info.run, None, time.time()) == ("interrupted", True), "no heartbeat: shown cut off"
        assert manifest.failures_page(1, "", 10) == [] and manifest.live(1) is None
        assert [r.run_id for r in manifest.runs(5)] == [1]
    finally:
        manifest.close()
    assert path.read_bytes() == before and sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
    with pytest.raises(ConfigError, match="does not exist"):
        SqliteManifest(str(tmp_path / "absent.sqlite"), "job", read_only=True)
