"""dth_ray's own state (reports, watch status, SQLite manifest and its -wal/-shm, export state) is 0600 in 0700."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

from dth_ray.cli import write_report
from dth_ray.errors import Fatal
from dth_ray.files import private_dir
from dth_ray.maxcompute.state import ExportState
from dth_ray.runtime.manifest_sqlite import SqliteManifest
from dth_ray.sync.watch import _write_json


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    """The common umask (files 0644, folders 0755 unless asked otherwise), whatever the runner's is."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("write", [write_report, _write_json], ids=["report", "watch-status"])
def test_reports_are_0600_also_over_an_older_0644_file_and_a_stale_temp_file(write, tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o755)
    path = work / "report.json"
    write(str(path), {"status": "succeeded"})
    assert mode(path) == 0o600
    assert mode(work) == 0o755, "the user's folder keeps its mode"

    path.write_text("{}")
    path.chmod(0o644)  # written by an earlier release
    (work / "report.json.tmp").write_text("left by a crash")
    (work / "report.json.tmp").chmod(0o644)
    write(str(path), {"status": "failed"})
    assert json.loads(path.read_text()) == {"status": "failed"}
    assert mode(path) == 0o600
    assert sorted(os.listdir(work)) == ["report.json"]


def test_sqlite_manifest_and_its_wal_and_shm_are_0600_in_new_0700_folders(tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o755)
    path = work / "state" / "jobs" / "m.sqlite"
    manifest = SqliteManifest(str(path), "job-a")
    manifest.start_run([])  # a write: SQLite now has its -wal and -shm beside the database
    try:
        files = sorted(os.listdir(path.parent))
        assert files == ["m.sqlite", "m.sqlite-shm", "m.sqlite-wal"]
        assert {name: mode(path.parent / name) for name in files} == dict.fromkeys(files, 0o600)
        assert mode(work / "state") == mode(work / "state" / "jobs") == 0o700
        assert mode(work) == 0o755, "the user's folder keeps its mode"
    finally:
        manifest.close()


def test_a_manifest_left_0644_by_an_earlier_release_is_tightened_with_its_side_files(tmp_path):
    path = tmp_path / "m.sqlite"
    SqliteManifest(str(path), "job-b").close()
    reader = sqlite3.connect(path, isolation_level=None)  # open meanwhile: the -wal and -shm stay on disk
    reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
    try:
        for suffix in ("", "-wal", "-shm"):
            os.chmod(f"{path}{suffix}", 0o644)  # as SQLite creates them by default, and earlier releases left them
        manifest = SqliteManifest(str(path), "job-b")
        manifest.start_run([])
        manifest.close()
        assert {s: mode(f"{path}{s}") for s in ("", "-wal", "-shm")} == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    finally:
        reader.close()


def test_default_state_folder_is_tightened_but_a_chosen_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    own = tmp_path / "xdg" / "dth_ray"
    own.mkdir(parents=True)
    own.chmod(0o755)  # made by an earlier release
    manifest = SqliteManifest("", "job-c")
    manifest.close()
    assert mode(own) == 0o700
    assert mode(own / "manifest.sqlite") == 0o600
    assert mode(tmp_path / "xdg") == 0o755, "only dth_ray's own folder is tightened"

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    SqliteManifest(str(shared / "m.sqlite"), "job-d").close()
    assert mode(shared) == 0o750
    assert mode(shared / "m.sqlite") == 0o600


def test_maxcompute_export_state_is_0600_with_its_side_files(tmp_path):
    path = tmp_path / "mc" / "maxcompute.sqlite"
    state = ExportState(str(path), "mc-job")
    try:
        files = sorted(os.listdir(path.parent))
        assert "maxcompute.sqlite" in files
        assert {name: mode(path.parent / name) for name in files} == dict.fromkeys(files, 0o600)
        assert mode(path.parent) == 0o700
    finally:
        state.close()


def test_private_dir_creates_missing_parents_0700_and_returns_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = private_dir(os.path.join("a", "b", "c"))
    assert made == str(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert private_dir(made) == made  # existing: no error, unchanged


def test_a_symlink_planted_at_the_reports_temp_name_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "report.json.tmp").symlink_to(victim)
    with pytest.raises(Fatal, match="could not be written"):
        write_report(str(tmp_path / "report.json"), {"status": "succeeded"})
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "report.json").exists()
