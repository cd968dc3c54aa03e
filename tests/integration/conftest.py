"""End-to-end fixtures: one embedded Ray per session, credentials in the environment before Ray starts."""

from __future__ import annotations

import os
import uuid

import pytest

OSS_KEY = ("LTAI5tE2eOssTestKey", "oss-e2e-secret-value-9f3c")


@pytest.fixture(scope="session")
def e2e_env(rclone_pair):
    """Source/destination keys as env:E2ESRC / env:E2EDST, exported before Ray starts (workers inherit them)."""
    src, dst = rclone_pair.source, rclone_pair.destination
    os.environ.update({
        "E2ESRC_ACCESS_KEY_ID": src.access_key, "E2ESRC_SECRET_ACCESS_KEY": src.secret_key,
        "E2EDST_ACCESS_KEY_ID": dst.access_key, "E2EDST_SECRET_ACCESS_KEY": dst.secret_key,
        "E2EOSS_ACCESS_KEY_ID": OSS_KEY[0], "E2EOSS_SECRET_ACCESS_KEY": OSS_KEY[1],
    })
    return rclone_pair


@pytest.fixture(scope="session")
def ray_local(e2e_env):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def unique_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}/"


@pytest.fixture
def buckets(request):
    """A fresh in-memory source and destination bucket for the test (names unique to it)."""
    from dth_ray.stores.memory import MemoryStore

    name = request.node.name.replace("[", "-").replace("]", "")[-40:]
    src, dst = f"src-{name}", f"dst-{name}"
    MemoryStore.reset(src)
    MemoryStore.reset(dst)
    yield src, dst
    MemoryStore.reset(src)
    MemoryStore.reset(dst)
