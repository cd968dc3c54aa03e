"""The store contract against S3Store talking to moto's S3 (near-AWS semantics, real multipart ETags)."""

from __future__ import annotations

import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.errors import DthError
from dth_ray.stores import open_store
from tests.contract.suite import StoreContract

BUCKET = "contract-moto"


@pytest.fixture(scope="module")
def moto_bucket(moto_server) -> str:
    return moto_server.create_bucket(BUCKET)


def moto_config(endpoint: str, bucket: str) -> StoreConfig:
    return StoreConfig(type=StoreType.s3, bucket=bucket, endpoint=endpoint, region="us-east-1",
                       credentials="env:MOTO", addressing_style="path", connect_timeout_s=5, read_timeout_s=30)


class TestS3StoreOnMoto(StoreContract):
    # moto 5.2.5 gaps (AWS behaves as the contract says): it stores bodies whose Content-MD5 does not match,
    # and an UploadPart to an aborted upload fails with 500 (KeyError) instead of 404 NoSuchUpload.
    server_verifies_md5 = False
    gone_upload_part_error = DthError

    @pytest.fixture
    def store(self, moto_server, moto_bucket, monkeypatch):
        monkeypatch.setenv("MOTO_ACCESS_KEY_ID", "testing-key")
        monkeypatch.setenv("MOTO_SECRET_ACCESS_KEY", "testing-secret")
        return open_store(moto_config(moto_server.endpoint, moto_bucket))
