"""Shared fixtures: real local S3 servers (session-scoped) and scratch directories for the local store.

Server modules are imported inside the fixtures, so collecting the unit tests stays fast.
"""

from __future__ import annotations

import os
import sys

import pytest

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)  # `import tests.servers...` from any rootdir or import mode


@pytest.fixture(scope="session")
def moto_server():
    """A `tests.servers.s3_servers.MotoServer` (subprocess) shared by the session; `.endpoint`, `.reset()`."""
    from tests.servers.s3_servers import MotoServer

    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rclone_pair(tmp_path_factory):
    """A `RclonePair`: `.source` and `.destination` rclone S3 servers with different keys, one bucket each.

    Each server has `.endpoint`, `.access_key`, `.secret_key`, `.bucket` ('src-bucket' / 'dst-bucket').
    """
    from tests.servers.s3_servers import RclonePair

    pair = RclonePair(str(tmp_path_factory.mktemp("rclone-pair")))
    yield pair
    pair.stop()


@pytest.fixture(scope="session")
def rclone_server(tmp_path_factory):
    """One `RcloneS3Server` on disk with bucket 'contract' (`.bucket`), keys RCLONEACCESSKEY/rclone-secret-key."""
    from tests.servers.s3_servers import RcloneS3Server

    server = RcloneS3Server(str(tmp_path_factory.mktemp("rclone-one")), "RCLONEACCESSKEY", "rclone-secret-key",
                            bucket="contract")
    yield server
    server.stop()


@pytest.fixture
def tmp_store_dir(tmp_path):
    """An empty directory (pathlib.Path) to root a LocalStore in."""
    path = tmp_path / "store"
    path.mkdir()
    return path
