"""AWS conventions against real servers: a bucket in another region is followed (rclone serve s3 behind a proxy
that answers like S3 for a request signed for the wrong region), and `secret:ID` is read in the store's region
before the environment's (Secrets Manager on moto)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import pytest

from dth_ray.config import StoreConfig
from dth_ray.credentials import resolve
from dth_ray.errors import PermissionDenied
from dth_ray.model import ObjectHeaders
from dth_ray.stores import open_store
from tests.servers.region_proxy import RegionProxy
from tests.servers.s3_servers import seed_objects


@pytest.fixture
def keys_env(rclone_server, monkeypatch):
    monkeypatch.setenv("REGIONTEST_ACCESS_KEY_ID", rclone_server.access_key)
    monkeypatch.setenv("REGIONTEST_SECRET_ACCESS_KEY", rclone_server.secret_key)
    return rclone_server


@pytest.mark.parametrize(("mode", "region"), [("redirect", "eu-west-1"), ("malformed", "ap-southeast-2")])
def test_a_bucket_in_another_region_is_followed_once(keys_env, mode, region, caplog):
    server = keys_env
    prefix = f"region-{mode}-{uuid.uuid4().hex[:8]}/"
    seed_objects(server.client(), server.bucket, {prefix + "a": b"alpha", prefix + "b": b"bravo"})
    proxy = RegionProxy(server.endpoint, region, mode).start()
    try:
        store = open_store(StoreConfig(bucket=server.bucket, endpoint=proxy.endpoint, region="us-east-1",
                                       credentials="env:REGIONTEST"), "source")

        async def scenario():
            try:
                listed = await asyncio.gather(*(store.list_page(prefix) for _ in range(4)))  # all redirected at once
                head = await store.head(prefix + "a")
                await store.put(prefix + "c", b"charlie", ObjectHeaders(), hashlib.md5(b"charlie").digest())
                return listed, head, (await store.get(prefix + "c")).data
            finally:
                await store.aclose()

        with caplog.at_level("WARNING", logger="dth_ray.stores.s3"):
            listed, head, body = asyncio.run(scenario())
    finally:
        proxy.stop()
    assert all([o.key for o in page.objects] == [prefix + "a", prefix + "b"] for page in listed)
    assert head.meta.size == 5 and body == b"charlie"
    assert store.region == region
    # The four concurrent first listings were each refused once and re-signed; nothing after them was.
    assert proxy.wrong_region_requests() == 4
    assert [signed for _, signed in proxy.seen[-3:]] == [region] * 3
    said = [r.getMessage() for r in caplog.records if f"is in region {region}" in r.getMessage()]
    assert len(said) == 1, said  # once, though four requests followed it
    assert said[0].startswith(f"source.bucket='{server.bucket}' is in region {region}, not us-east-1: following it "
                              f"at {proxy.endpoint}")


@pytest.fixture
def secrets_env(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "region-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "region-test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_server


def _put_secret(moto, region: str, key_id: str) -> str:
    name = f"dth-region-{uuid.uuid4().hex[:8]}"
    moto.client("secretsmanager", region).create_secret(
        Name=name, SecretString=json.dumps({"access_key_id": key_id, "secret_access_key": "s" * 20}))
    return name


def test_a_secret_is_read_in_the_configured_region_before_the_environments(secrets_env):
    name = _put_secret(secrets_env, "eu-west-1", "KEYINEUWEST1")
    assert resolve(f"secret:{name}", "source", "eu-west-1").access_key_id == "KEYINEUWEST1"
    with pytest.raises(PermissionDenied, match=rf"source.credentials=secret:{name} cannot be read \(ResourceNotFound"):
        resolve(f"secret:{name}", "source")  # no configured region: AWS_REGION's, where it is not


def test_an_aliyun_region_never_picks_the_secrets_region(secrets_env):
    name = _put_secret(secrets_env, "us-east-1", "KEYINUSEAST1")
    assert resolve(f"secret:{name}", "source", "cn-hangzhou", provider="aliyun").access_key_id == "KEYINUSEAST1"
