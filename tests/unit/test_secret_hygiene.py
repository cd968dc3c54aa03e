"""Objects holding keys refuse pickling; endpoints with user info are refused naming no secret; SDKs kept quiet."""

from __future__ import annotations

import copy
import io
import logging
import pickle

import pytest
from ray import cloudpickle

from dth_ray.config import LogConfig, StoreConfig, StoreType, SyncConfig, validate_store
from dth_ray.credentials import Credentials, RefreshingCredentials
from dth_ray.errors import ConfigError
from dth_ray.ops.logs import setup_actor_logging, setup_logging
from dth_ray.stores.sigv4 import SigV4Signer

SECRET = "wJalrXUtnFEMI-k7MDENG-bPxRfiCY"
TOKEN = "FwoGZXIvYXdzEJr-session-token"


def holders():
    refreshing = RefreshingCredentials("env:HYGIENE", "source")
    refreshing._creds, refreshing._loaded = Credentials("AKIDHYGIENE", SECRET, TOKEN), True  # keys in hand
    return [Credentials("AKIDHYGIENE", SECRET, TOKEN), SigV4Signer("AKIDHYGIENE", SECRET, "us-east-1", TOKEN),
            refreshing]


@pytest.mark.parametrize("dump", [pickle.dumps, cloudpickle.dumps, lambda o: pickle.dumps(o, protocol=0),
                                  copy.deepcopy], ids=["pickle", "ray-cloudpickle", "pickle-protocol-0", "deepcopy"])
@pytest.mark.parametrize("holder", holders(), ids=lambda h: type(h).__name__)
def test_objects_holding_keys_refuse_to_be_pickled(holder, dump):
    with pytest.raises(TypeError, match="never pickled") as refused:
        dump(holder)
    assert SECRET not in str(refused.value) and TOKEN not in str(refused.value)


def test_reprs_show_no_key():
    for holder in holders():
        assert SECRET not in repr(holder) + str(holder) and TOKEN not in repr(holder) + str(holder)


@pytest.mark.parametrize(("endpoint", "shown"), [
    ("https://alice:s3cr3t-pass@oss-cn-hangzhou.aliyuncs.com", "'https://***@oss-cn-hangzhou.aliyuncs.com'"),
    ("alice:s3cr3t-pass@oss.example.com:8443", "'***@oss.example.com:8443'"),
    ("http://AKIDUSER:s3cr3t-pass@127.0.0.1:9000/base", "'http://***@127.0.0.1:9000/base'"),
    ("ftp://alice:s3cr3t-pass@host", "'ftp://***@host'"),  # refused for its user info before its scheme
    ("https://s3cr3t-pass@host", "'https://***@host'"),  # a token as the user name is a secret too
])
@pytest.mark.parametrize("role", ["source", "destination"])
def test_endpoint_with_user_info_is_refused_in_one_line_without_the_secret(endpoint, shown, role):
    with pytest.raises(ConfigError) as refused:
        validate_store(StoreConfig(type=StoreType.s3, bucket="bkt1", endpoint=endpoint), role)
    message = str(refused.value)
    assert message.startswith(f"{role}.endpoint={shown} must not carry user info")
    assert "\n" not in message
    assert "s3cr3t-pass" not in message and "alice" not in message and "AKIDUSER" not in message


def test_endpoint_with_at_sign_in_its_path_is_still_accepted():
    validate_store(StoreConfig(type=StoreType.s3, bucket="bkt1", endpoint="https://host:8443/a@b"), "source")


def test_sdk_loggers_stay_at_warning_in_a_debug_run():
    root = logging.getLogger()
    before = list(root.handlers), root.level
    handler = setup_logging(SyncConfig(log_level="DEBUG", log=LogConfig()), io.StringIO())
    try:
        for name in ("oss2", "oss2.api", "botocore", "urllib3", "aiohttp", "aiohttp.client", "odps"):
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
        assert logging.getLogger("dth_ray.runtime").getEffectiveLevel() == logging.DEBUG
    finally:
        root.removeHandler(handler)
        root.setLevel(before[1])


def test_actor_logging_leaves_a_process_that_is_no_ray_actor_alone():
    root = logging.getLogger()
    before = list(root.handlers), root.level
    assert setup_actor_logging("DEBUG", "json") is False
    assert (list(root.handlers), root.level) == before


@pytest.mark.parametrize("section", ["manifest", "events", "metrics", "alerts"])
def test_service_endpoints_with_user_info_are_refused_too(section):
    """Every endpoint a command calls, not only the stores'."""
    from dth_ray.compose import load_config

    with pytest.raises(ConfigError) as refused:
        load_config(["source.bucket=src1", "destination.bucket=dst1",
                     f"{section}.endpoint=https://alice:s3cr3t-pass@host.example.com"])
    message = str(refused.value)
    assert message.startswith(f"{section}.endpoint='https://***@host.example.com' must not carry user info")
    assert "s3cr3t-pass" not in message and "alice" not in message
