"""What the embedded Ray's start-up writes before Ray does: a 0600 token and a 0700 folder around its sessions."""

from __future__ import annotations

import os
import stat

import pytest

from dth_ray.runtime import rayhost


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    old = os.umask(0o022)
    yield tmp_path / "home"
    os.umask(old)


def test_a_missing_token_is_created_0600_in_a_0700_folder(home):
    rayhost._private_token()
    token = home / ".ray" / "auth_token"
    assert len(token.read_text()) == 64 and int(token.read_text(), 16) > 0
    assert mode(token) == 0o600 and mode(home / ".ray") == 0o700
    assert os.listdir(home / ".ray") == ["auth_token"], "no temp file left beside it"


def test_a_token_ray_wrote_0644_is_tightened_and_kept(home):
    (home / ".ray").mkdir(parents=True, mode=0o755)
    token = home / ".ray" / "auth_token"
    token.write_text("a" * 64)
    token.chmod(0o644)
    rayhost._private_token()
    assert token.read_text() == "a" * 64, "a token in use by another cluster is never replaced"
    assert mode(token) == 0o600
    assert mode(home / ".ray") == 0o755, "Ray's folder, not ours"


def test_a_token_path_from_the_environment_is_the_one_created(home, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tokens" / "cluster.token"))
    rayhost._private_token()
    assert mode(tmp_path / "tokens" / "cluster.token") == 0o600
    assert not (home / ".ray").exists()


def test_a_token_in_the_environment_writes_nothing(home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    rayhost._private_token()
    assert not home.exists()


def test_ray_sessions_live_in_a_0700_folder_of_ours(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    temp_dir = rayhost._private_temp_dir()
    assert temp_dir == str(tmp_path / f"dth-ray-{os.geteuid()}" / "ray")
    assert mode(tmp_path / f"dth-ray-{os.geteuid()}") == 0o700
    (tmp_path / f"dth-ray-{os.geteuid()}").chmod(0o755)
    assert rayhost._private_temp_dir() == temp_dir
    assert mode(tmp_path / f"dth-ray-{os.geteuid()}") == 0o700, "ours, tightened again"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder owned by another user needs root")
def test_a_folder_of_that_name_made_by_another_user_is_passed_over(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    squatted = tmp_path / f"dth-ray-{os.geteuid()}"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 65534, 65534)
    temp_dir = rayhost._private_temp_dir()
    assert not temp_dir.startswith(str(squatted) + os.sep)
    assert mode(os.path.dirname(temp_dir)) == 0o700 and os.stat(os.path.dirname(temp_dir)).st_uid == 0


def test_a_symlink_of_that_name_is_passed_over(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"dth-ray-{os.geteuid()}").symlink_to(elsewhere)
    temp_dir = rayhost._private_temp_dir()
    assert os.path.dirname(temp_dir) != str(tmp_path / f"dth-ray-{os.geteuid()}")
    assert mode(os.path.dirname(temp_dir)) == 0o700
