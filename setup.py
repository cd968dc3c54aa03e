"""Packaging hook: wheels carry the top-level conf/ (the Hydra configs) as dth_ray/conf.

Project metadata is in pyproject.toml. Package discovery is here because pyproject's `packages.find` cannot
map a folder from outside the package tree into it: conf/ stays at the top level, where the layout and a
source checkout's CLI expect it, and `package_dir` maps it (every subfolder, every file) to `dth_ray.conf`,
which the installed CLI finds through importlib.resources.
"""

from __future__ import annotations

import os

from setuptools import find_namespace_packages, setup

CONF_DIR = "conf"
CONF_PACKAGE = "dth_ray.conf"


def conf_packages() -> list[str]:
    """`dth_ray.conf` and one package name per subfolder of conf/ (config groups such as `source`)."""
    names = []
    for folder, subdirs, _files in os.walk(CONF_DIR):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "__")))
        rel = os.path.relpath(folder, CONF_DIR)
        names.append(CONF_PACKAGE if rel == os.curdir else f"{CONF_PACKAGE}.{rel.replace(os.sep, '.')}")
    return names


CONF_PACKAGES = conf_packages()

setup(
    packages=find_namespace_packages(include=["dth_ray*"]) + CONF_PACKAGES,
    package_dir={CONF_PACKAGE: CONF_DIR},
    package_data={**{name: ["*"] for name in CONF_PACKAGES}, "dth_ray.console": ["static/*"]},
)
