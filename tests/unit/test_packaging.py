"""The wheel ships conf/ as dth_ray/conf, and an installed CLI composes its config from that copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_NOT_BUILD_INPUTS = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                           ".*_cache", "tests", "benchmarks", "outputs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tree (so the build leaves no build/ or egg-info in the checkout)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_NOT_BUILD_INPUTS)
    out = tmp / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q",
         str(src), "-w", str(out)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (built,) = out.glob("dth_ray-*.whl")
    return built


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_wheel_carries_every_conf_file_under_dth_ray_conf(wheel):
    conf = _files(REPO / "conf")
    assert "config.yaml" in conf
    with zipfile.ZipFile(wheel) as packed:
        names = set(packed.namelist())
        assert [f for f in conf if f"dth_ray/conf/{f}" not in names] == []
        for rel in conf:
            assert packed.read(f"dth_ray/conf/{rel}") == (REPO / "conf" / rel).read_bytes(), rel
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"dth_ray"}, "no conf/ atop site-packages"


def test_wheel_carries_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = [f"dth_ray/{f}" for f in _files(REPO / "dth_ray") if f.endswith(".py")]
    assert [m for m in modules if m not in names] == []


def test_unpacked_wheel_composes_config_from_its_own_conf(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from dth_ray.compose import conf_dir, load_config\n"
             "args = ['source=local', 'source.path=/d', 'destination=local', 'destination.path=/o']\n"
             "cfg = load_config(args)\n"
             "print(conf_dir()); print(cfg.source.type.value, cfg.destination.path)\n")
    env = {k: v for k, v in os.environ.items() if k != "DTH_RAY_CONF"}
    env["PYTHONPATH"] = str(site)  # ahead of the checkout's editable install
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    where, composed = result.stdout.split("\n")[:2]
    assert Path(where) == site / "dth_ray" / "conf"
    assert composed == "local /o"


def test_wheel_carries_the_consoles_script_and_style(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    static = _files(REPO / "dth_ray" / "console" / "static")
    assert {"console.js", "console.css"} <= set(static)
    assert [f for f in static if f"dth_ray/console/static/{f}" not in names] == []
