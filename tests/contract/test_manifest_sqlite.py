"""The manifest contract against SqliteManifest (the embedded default): one SQLite file per test."""

from __future__ import annotations

import pytest

from dth_ray.config import ManifestConfig, ManifestType
from dth_ray.runtime.manifest_sqlite import SqliteManifest
from dth_ray.runtime.manifests import open_manifest
from tests.contract.manifest_suite import ManifestContract


class TestSqliteManifest(ManifestContract):
    @pytest.fixture
    def make(self, tmp_path):
        cfg = ManifestConfig(type=ManifestType.sqlite, path=str(tmp_path / "manifest.sqlite"))
        opened = []

        def make(job: str):
            manifest = open_manifest(cfg, job)
            assert isinstance(manifest, SqliteManifest)
            opened.append(manifest)
            return manifest

        yield make
        for manifest in opened:
            manifest.close()
