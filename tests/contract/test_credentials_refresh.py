"""Credentials over days, against real servers: keys read from Secrets Manager (moto) follow a rotation — on
the store's next request after the old key is refused (rclone serve s3 with SigV4 checks; the OSS test
endpoint) and on the refresh schedule — and `role:ARN` assumes a role through STS (moto)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import botocore.exceptions
import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.credentials import RefreshingCredentials
from dth_ray.errors import PermissionDenied
from dth_ray.locals3 import free_port, rclone_binary
from dth_ray.model import ObjectHeaders
from dth_ray.stores.oss import OssStore
from dth_ray.stores.s3 import S3Store
from tests.servers.oss_server import OssTestServer
from tests.servers.s3_servers import s3_client

KEY1 = ("ROTATEKEYONE0001", "rotate-secret-one-aaaaaaaa")
KEY2 = ("ROTATEKEYTWO0002", "rotate-secret-two-bbbbbbbb")
KEY3 = ("ROTATEKEYTHREE03", "rotate-secret-three-cccccc")
WRONG = ("ROTATEKEYWRONG04", "rotate-secret-wrong-dddddd")


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


class RestartableRclone:
    """`rclone serve s3` on one fixed port over one directory, restartable with other key pairs (what an
    operator revoking the old key looks like to a client)."""

    def __init__(self, root: str, keys: list[tuple[str, str]]):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self.start(keys)

    def start(self, keys: list[tuple[str, str]]) -> None:
        argv = [rclone_binary(), "serve", "s3", self.root, "--addr", f"127.0.0.1:{self.port}", "--log-level", "ERROR"]
        for key_id, secret in keys:
            argv += ["--auth-key", f"{key_id},{secret}"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, "rclone exited (port still held?)"
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)  # noqa: S310 - loopback
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("rclone serve s3 did not start")

    def restart(self, keys: list[tuple[str, str]]) -> None:
        self.stop()
        self.start(keys)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
        self._proc = None


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """Secrets Manager and STS on moto; base keys for the default chain (moto accepts any)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "base-testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "base-testing-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


def _secret(keys: tuple[str, str], token: str = "") -> str:
    doc = {"access_key_id": keys[0], "secret_access_key": keys[1]}
    if token:
        doc["session_token"] = token
    return json.dumps(doc)


@pytest.fixture
def secret(aws_env):
    """A fresh Secrets Manager secret holding KEY1; yields (name, put(keys, token=''))."""
    sm = aws_env.client("secretsmanager")
    name = f"dth-rotation-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString=_secret(KEY1))
    yield name, lambda keys, token="": sm.put_secret_value(SecretId=name, SecretString=_secret(keys, token))
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def rclone(tmp_path):
    server = RestartableRclone(str(tmp_path / "rclone"), [KEY1])
    s3_client(server.endpoint, *KEY1).create_bucket(Bucket="rotation")
    yield server
    server.stop()


def test_secret_keys_sign_requests_on_moto_s3(aws_env, secret):
    name, _ = secret
    aws_env.create_bucket("secret-read")
    store = S3Store(StoreConfig(bucket="secret-read", endpoint=aws_env.endpoint, credentials=f"secret:{name}"))

    async def scenario():
        await store.put("k", b"payload", ObjectHeaders(), md5(b"payload"))
        got = await store.get("k")
        await store.aclose()
        return got

    assert asyncio.run(scenario()).data == b"payload"
    assert store._creds.current()[0].access_key_id == KEY1[0]


def test_s3_store_follows_a_rotated_secret_on_the_next_request(secret, rclone):
    name, put_secret = secret
    store = S3Store(StoreConfig(bucket="rotation", endpoint=rclone.endpoint, credentials=f"secret:{name}"))

    async def scenario():
        await store.put("before", b"one", ObjectHeaders(), md5(b"one"))
        put_secret(KEY2)  # the rotation: new key published, then the old one revoked
        rclone.restart([KEY2])
        got = await store.get("before")  # signed with KEY1 → InvalidAccessKeyId → secret re-read → KEY2
        await store.put("after", b"two", ObjectHeaders(), md5(b"two"))
        await store.aclose()
        return got

    assert asyncio.run(scenario()).data == b"one"
    assert store._creds.generation == 1 and store._creds.refreshes == 1
    with pytest.raises(botocore.exceptions.ClientError):
        s3_client(rclone.endpoint, *KEY1).head_bucket(Bucket="rotation")  # the old key is really gone
    assert s3_client(rclone.endpoint, *KEY2).get_object(Bucket="rotation", Key="after")["Body"].read() == b"two"


def test_refused_keys_fail_once_without_naming_them(secret, rclone):
    name, put_secret = secret
    store = S3Store(StoreConfig(bucket="rotation", endpoint=rclone.endpoint, credentials=f"secret:{name}"))
    put_secret(WRONG)

    async def scenario():
        try:
            with pytest.raises(PermissionDenied) as err:
                await store.head("missing")
            with pytest.raises(PermissionDenied) as err2:
                await store.put("k", b"x", ObjectHeaders(), md5(b"x"))
        finally:
            await store.aclose()
        return err.value, err2.value

    errors = asyncio.run(scenario())
    text = " ".join(f"{e!r} {e}" for e in errors)
    for value in (*KEY1, *WRONG):
        assert value not in text
    assert errors[1].code in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
    assert store._creds.refreshes == 1  # one re-read (the second failure came within the minimum interval)


def test_s3_store_rereads_the_secret_on_schedule(secret, rclone):
    name, put_secret = secret
    rclone.restart([KEY1, KEY3])  # both keys valid: only the schedule can move the store to KEY3
    store = S3Store(StoreConfig(bucket="rotation", endpoint=rclone.endpoint, credentials=f"secret:{name}"))
    clock = [1000.0]
    store._creds = RefreshingCredentials(f"secret:{name}", "destination", "us-east-1", clock=lambda: clock[0])

    async def scenario():
        await store.put("s1", b"1", ObjectHeaders(), md5(b"1"))
        put_secret(KEY3)
        await store.put("s2", b"2", ObjectHeaders(), md5(b"2"))
        assert store._creds.generation == 0  # not due yet
        clock[0] += 901
        await store.put("s3", b"3", ObjectHeaders(), md5(b"3"))
        await store.aclose()

    asyncio.run(scenario())
    assert store._creds.generation == 1 and store._creds.current()[0].access_key_id == KEY3[0]


def test_oss_store_follows_a_rotated_secret_with_a_session_token(secret):
    name, put_secret = secret
    with OssTestServer(*KEY1, region="cn-hangzhou") as server:
        server.create_bucket("oss-rotation")
        store = OssStore(StoreConfig(type=StoreType.oss, bucket="oss-rotation", endpoint=server.endpoint,
                                     region="cn-hangzhou", credentials=f"secret:{name}"))

        async def scenario():
            await store.put("before", b"one", ObjectHeaders(), md5(b"one"))
            server.add_key(*KEY2, security_token="CAIS-rotated-session-token")
            put_secret(KEY2, token="CAIS-rotated-session-token")
            del server._keys[KEY1[0]]  # revoke the old key
            got = await store.get("before")
            await store.put("after", b"two", ObjectHeaders(), md5(b"two"))
            await store.aclose()
            return got

        assert asyncio.run(scenario()).data == b"one"
        assert server.get_object_bytes("oss-rotation", "after") == b"two"
        assert store._creds.generation == 1


def test_role_credentials_assume_the_role_through_sts(aws_env):
    arn = "arn:aws:iam::123456789012:role/dth-ray-transfer"
    aws_env.create_bucket("role-bucket")
    store = S3Store(StoreConfig(bucket="role-bucket", endpoint=aws_env.endpoint, credentials=f"role:{arn}"))

    async def scenario():
        await store.put("k", b"via role", ObjectHeaders(), md5(b"via role"))
        got = await store.get("k")
        await store.aclose()
        return got

    assert asyncio.run(scenario()).data == b"via role"
    keys, _ = store._creds.current()
    assert keys.session_token and keys.access_key_id != "base-testing-key"


def test_assumed_role_is_refreshed_before_it_expires(aws_env):
    arn = "arn:aws:iam::123456789012:role/dth-ray-transfer"
    clock = [0.0]
    creds = RefreshingCredentials(f"role:{arn}", "source", "us-east-1", refresh_interval_s=1e9,
                                  clock=lambda: clock[0])
    first, _ = creds.current()
    clock[0] = 3600 - 601  # ten minutes before the one-hour session ends
    assert not creds.due()
    clock[0] = 3600 - 599
    assert creds.due()
    creds.refresh_if_due()
    second, generation = creds.current()
    assert generation == 1 and second.session_token and second != first
