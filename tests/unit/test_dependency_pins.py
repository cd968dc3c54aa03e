"""constraints.txt pins every package the project installs, on every supported Python, above the CVE floors.

The file is uv's universal resolution of pyproject.toml with the test and bench extras (`make constraints`);
the Makefile installs with it. These checks read it as pip does (PEP 508 markers per environment), compare
it with pyproject's floors and the known-vulnerable releases, walk the installed dependency tree to find any
package it leaves unpinned, and hold the OSS forwarder's hashed requirements to the same versions.
"""

from __future__ import annotations

import re
from importlib import metadata

try:
    import tomllib
except ImportError:  # Python 3.10 (pytest brings tomli there)
    import tomli as tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
FORWARDER = ROOT / "dth_ray" / "functions" / "oss_forwarder"
PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]
PLATFORMS = ["linux", "darwin"]

# The first release without each known vulnerability; pyproject's floors must be at least these.
FIXED_IN = {
    "pyarrow": ("14.0.1", "CVE-2023-47248: arbitrary code execution reading IPC / Parquet"),
    "aiohttp": ("3.13.4", "CVE-2026-22815 and CVE-2026-34513..34525; CVE-2025-69223 (3.13.3), "
                          "CVE-2025-53643 (3.12.14), CVE-2024-52304 (3.10.11)"),
    "ray": ("2.54", "CVE-2026-27482: dashboard DELETE endpoints without auth; CVE-2025-62593 (2.52)"),
    "urllib3": ("2.7", "CVE-2026-44431, CVE-2026-44432; CVE-2025-66418 / CVE-2025-66471 (2.6.0)"),
    "hydra-core": ("1.3.4", "CVE-2026-68508: hydra.utils.instantiate() target blocking"),
}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(extras=("test", "bench")) -> list[Requirement]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def _pins() -> list[Requirement]:
    """Each `name==version [; marker]` line of constraints.txt (uv's `# via` notes skipped)."""
    out = []
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        req = Requirement(line)
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", line
        out.append(req)
    return out


def _environment(python: str, platform: str) -> dict:
    env = default_environment()
    env.update(python_version=python, python_full_version=f"{python}.0", sys_platform=platform,
               platform_system={"linux": "Linux", "darwin": "Darwin"}[platform],
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def _pinned(env: dict) -> dict[str, Version]:
    """The version constraints.txt gives each package in `env`; a package pinned twice there is an error."""
    out: dict[str, Version] = {}
    for pin in _pins():
        if pin.marker is None or pin.marker.evaluate(env):
            name = canonicalize_name(pin.name)
            assert name not in out, f"{name} pinned twice for {env['python_version']} {env['sys_platform']}"
            out[name] = Version(next(iter(pin.specifier)).version)
    return out


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("python", PYTHONS)
def test_every_dependency_is_pinned_within_its_range(python, platform):
    env = _environment(python, platform)
    pinned = _pinned(env)
    assert "dth-ray" not in pinned and "dth_ray" not in pinned, "the project itself is not a constraint"
    for req in _requirements():
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req} has no pin for Python {python} on {platform}"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{req}: pinned {pinned[name]}"


def test_floors_exclude_known_vulnerable_releases():
    floors: dict[str, Version] = {}
    for req in _requirements(extras=()):
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        floors[canonicalize_name(req.name)] = max(lows) if lows else Version("0")
    for name, (fixed, why) in FIXED_IN.items():
        assert name in floors, f"{name} needs a floor in pyproject.toml ({why})"
        assert floors[name] >= Version(fixed), f"{name} floor {floors[name]} admits {why}"
    for python in PYTHONS:  # (the pins satisfy the floors: checked above for every Python)
        pinned = _pinned(_environment(python, "linux"))
        for name, (fixed, why) in FIXED_IN.items():
            assert pinned[name] >= Version(fixed), f"{name}=={pinned[name]} on {python}: {why}"


def _dist(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def test_installed_dependency_tree_is_pinned_and_installed_at_its_pins():
    """Walk what this environment installed for the project (the Makefile installs with constraints.txt):
    every package reachable from pyproject's requirements has a pin, and is installed at it."""
    env = default_environment()
    pinned = _pinned(env)
    todo = [(req, ()) for req in _requirements() if req.marker is None or req.marker.evaluate(env)]
    seen: dict[str, str] = {}
    walked: set[tuple[str, frozenset]] = set()
    while todo:
        req, path = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in walked:
            continue
        walked.add((name, frozenset(req.extras)))
        dist = _dist(req.name)
        if dist is None:  # an extra this environment did not install (bench): nothing below it either
            assert path == (), f"{name} is required (via {' > '.join(path)}) but not installed"
            continue
        assert name in pinned, f"{name} is installed (via {' > '.join(path) or 'pyproject'}) but not pinned"
        seen[name] = dist.version
        for extra in sorted(req.extras) or [""]:
            for sub in dist.requires or []:
                dep = Requirement(sub)
                if dep.marker is None or dep.marker.evaluate({**env, "extra": extra}):
                    todo.append((dep, (*path, name)))
    off = {n: (v, str(pinned[n])) for n, v in seen.items() if Version(v) != pinned[n]}
    assert not off, f"installed versions differ from constraints.txt (reinstall with make install): {off}"
    assert len(seen) > 50  # ray, boto3, moto and the rest: the walk really happened


def test_make_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if re.search(r"pip install .*-e ", line)]
    assert len(installs) >= 2, installs  # the project with [test], and with [test,bench]
    assert all("-c constraints.txt" in line for line in installs), installs
    assert re.search(r"^constraints:", makefile, re.M)
    assert "constraints.txt" in makefile.split("$(STAMP):", 1)[1].splitlines()[0], "rebuild when it changes"


def test_forwarder_package_is_pinned_hashed_and_at_the_projects_versions():
    pinned = _pinned(_environment("3.10", "linux"))  # Function Compute's Python 3.10 on Linux
    text = (FORWARDER / "requirements.txt").read_text()
    entries = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+)", text, re.M)
    names = {canonicalize_name(name): Version(version) for name, version, _ in entries}
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert len(lines) == len(entries), "every requirement has an exact version and at least one hash"
    assert "boto3" in names
    assert {n: v for n, v in names.items() if pinned.get(n) != v} == {}, "forwarder and project disagree"
    # the set is complete: what boto3 needs on Python 3.10 is all there
    env = _environment("3.10", "linux")
    for name in names:
        dist = _dist(name)
        if dist is None or Version(dist.version) != names[name]:
            continue  # its metadata is not at hand here; uv resolved it
        for sub in dist.requires or []:
            dep = Requirement(sub)
            if dep.marker is None or dep.marker.evaluate({**env, "extra": ""}):
                assert canonicalize_name(dep.name) in names, f"{name} needs {dep.name} (not listed)"
    script = (FORWARDER / "package.sh").read_text().replace("\\\n", " ").replace("\n", " ")
    install = r"pip --isolated install .*--no-deps --require-hashes -r \"\$here/requirements.txt\""
    assert re.search(install, script), "package.sh must install only the hashed pins"


def test_resolution_starts_at_requires_python():
    floor = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert PYTHONS[0] == floor, "the checks above start at the oldest supported Python"
    assert f"--python-version {floor}" in (ROOT / "Makefile").read_text(), "so does `make constraints`"
