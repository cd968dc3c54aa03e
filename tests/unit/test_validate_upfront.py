"""Configuration refused before a byte is read: destination write options against the provider's lists, a
destination overlapping its source, the report path, a default credential chain that finds nothing; and the
AWS SDK conventions for S3 endpoints and regions, and telling a wrong-region answer apart."""

from __future__ import annotations

import os

import pytest

from dth_ray.awsenv import default_region, profile_region, s3_endpoint_from_env
from dth_ray.config import StoreConfig, StoreType, SyncConfig, SyncDeleteConfig
from dth_ray.credentials import resolve as resolve_credentials
from dth_ray.errors import ConfigError
from dth_ray.reportfile import check_report_path, write_report
from dth_ray.settings import resolve
from dth_ray.stores.s3 import FEATURES, S3Store
from dth_ray.stores.s3region import bucket_region, credentials_region
from dth_ray.stores.writeoptions import S3_CANNED_ACLS, S3_SSE, S3_STORAGE_CLASSES

NO_ENV: dict[str, str] = {}


def sync_config(source: dict | None = None, destination: dict | None = None, **top) -> SyncConfig:
    return SyncConfig(source=StoreConfig(**{"bucket": "src-bucket", **(source or {})}),
                      destination=StoreConfig(**{"bucket": "dst-bucket", **(destination or {})}), **top)


@pytest.fixture
def clean_aws_env(monkeypatch, tmp_path):
    """No AWS variable, no shared config or credentials file, no instance metadata lookups."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


# -- destination write options --------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "hint", "allowed"), [
    ("storage_class", "GLACIERR", "did you mean GLACIER?", S3_STORAGE_CLASSES),
    ("storage_class", "standard_ia", "did you mean STANDARD_IA?", S3_STORAGE_CLASSES),
    ("acl", "bucket-owner-full", "did you mean bucket-owner-full-control?", S3_CANNED_ACLS),
    ("sse", "aes256", "did you mean AES256?", S3_SSE),
    ("sse", "KMS", "", S3_SSE),
])
def test_a_bad_write_option_names_the_key_and_every_allowed_value(key, value, hint, allowed):
    with pytest.raises(ConfigError) as err:
        resolve(sync_config(destination={key: value}))
    message = str(err.value)
    assert message.startswith(f"destination.{key}={value!r} is not accepted by destination=s3")
    assert "\n" not in message
    assert hint in message
    assert message.endswith("allowed: " + ", ".join(allowed))


def test_every_listed_write_option_is_accepted_and_the_lists_are_the_s3_features():
    for storage_class in S3_STORAGE_CLASSES:
        assert resolve(sync_config(destination={"storage_class": storage_class})).destination.storage_class == \
            storage_class
    for acl in S3_CANNED_ACLS:
        resolve(sync_config(destination={"acl": acl}))
    resolve(sync_config(destination={"sse": "aws:kms:dsse", "sse_kms_key_id": "arn:aws:kms:us-east-1:1:key/k"}))
    assert (FEATURES.storage_classes, FEATURES.canned_acls, FEATURES.sse_modes) == \
        (S3_STORAGE_CLASSES, S3_CANNED_ACLS, S3_SSE)
    dsse = S3Store(StoreConfig(bucket="b", sse="aws:kms:dsse"))
    assert not dsse.features.single_put_etag_is_md5  # a DSSE-KMS ETag is no MD5 either


def test_write_options_a_destination_cannot_take_are_refused():
    with pytest.raises(ConfigError, match=r"^destination.sse_kms_key_id is set but destination.sse='AES256'"):
        resolve(sync_config(destination={"sse": "AES256", "sse_kms_key_id": "key-1"}))
    with pytest.raises(ConfigError, match=r"^destination.storage_class='STANDARD' has no meaning for destination=local"):
        resolve(sync_config(destination={"type": StoreType.local, "path": "/tmp/x", "storage_class": "STANDARD"}))
    # Only the destination writes: a source's value is not its business.
    resolve(sync_config(source={"storage_class": "whatever"}))


# -- source and destination overlap ---------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "destination", "deletes", "refused"), [
    ({"prefix": "data/"}, {"bucket": "src-bucket", "prefix": "data/"}, False, "are the same location"),
    ({"prefix": "data/"}, {"bucket": "src-bucket", "prefix": "data/copy/"}, False, "is inside"),
    ({"prefix": ""}, {"bucket": "src-bucket", "prefix": "backup/"}, False, "is inside"),
    ({"prefix": "data"}, {"bucket": "src-bucket", "prefix": "data-copy/"}, False, "is inside"),  # plain prefixes
    # AWS bucket names are global: another region is the same bucket.
    ({"region": "us-east-1"}, {"bucket": "src-bucket", "region": "eu-west-1"}, False, "are the same location"),
    ({"endpoint": "http://127.0.0.1:9000", "prefix": "a/"},
     {"bucket": "src-bucket", "endpoint": "http://127.0.0.1:9000/", "prefix": "a/b/"}, False, "is inside"),
    ({"prefix": "a/b/"}, {"bucket": "src-bucket", "prefix": "a/"}, True, "would delete the source's own objects"),
    ({"type": StoreType.local, "path": "/srv/data"}, {"type": StoreType.local, "path": "/srv/data/mirror"}, False,
     "destination.path='/srv/data/mirror' is inside source.path='/srv/data'"),
    ({"type": StoreType.local, "path": "/srv/data", "prefix": "x/"},
     {"type": StoreType.local, "path": "/srv/data/", "prefix": "x/y/"}, False, "destination.prefix='x/y/' is inside"),
])
def test_a_destination_overlapping_its_source_is_refused(source, destination, deletes, refused):
    cfg = sync_config(source, destination, sync=SyncDeleteConfig(delete=deletes))
    with pytest.raises(ConfigError, match=refused) as err:
        resolve(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("source", "destination"), [
    ({"prefix": "a/b/"}, {"bucket": "src-bucket", "prefix": "a/"}),  # around it, without sync.delete: harmless
    ({"prefix": "data/"}, {"bucket": "src-bucket", "prefix": "copy/data/"}),
    ({"endpoint": "http://127.0.0.1:9000"}, {"bucket": "src-bucket", "endpoint": "http://127.0.0.1:9001"}),
    ({}, {"bucket": "src-bucket", "endpoint": "http://127.0.0.1:9000"}),  # AWS and a local server
    ({"type": StoreType.local, "path": "/srv/data"}, {"type": StoreType.local, "path": "/srv/data-mirror"}),
])
def test_separate_locations_pass(source, destination):
    resolve(sync_config(source, destination))


# -- the report path ------------------------------------------------------------------------------------------


def test_report_path_problems_are_found_before_the_run(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory; give a file path"):
        check_report_path(str(tmp_path))
    with pytest.raises(ConfigError, match=r"folder '.*/missing' does not exist"):
        check_report_path(str(tmp_path / "missing" / "r.json"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"does not exist"):
        check_report_path(str(tmp_path / "file" / "r.json"))  # a file where a folder should be
    check_report_path(str(tmp_path / "r.json"))
    assert sorted(os.listdir(tmp_path)) == ["file"], "the check leaves nothing behind"


def test_a_report_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    (tmp_path / "r.json").mkdir()  # appeared after the check: os.replace onto a directory fails
    with pytest.raises(Exception, match=r"report=.* could not be written"):
        write_report(str(tmp_path / "r.json"), {"status": "succeeded"})
    assert os.listdir(tmp_path) == ["r.json"]
    write_report(str(tmp_path / "ok.json"), {"status": "succeeded"})
    assert (tmp_path / "ok.json").read_text() == '{\n  "status": "succeeded"\n}\n'


# -- credentials ----------------------------------------------------------------------------------------------


def test_a_default_chain_that_finds_nothing_says_so(clean_aws_env):
    with pytest.raises(ConfigError) as err:
        resolve_credentials("default", "source")
    assert str(err.value).startswith("no credentials found for source: tried environment, profile, instance role")
    assert "source.credentials=anonymous" in str(err.value)
    assert resolve_credentials("anonymous", "source") is None  # asked for explicitly, it stays possible
    assert resolve_credentials("default", "source", provider="aliyun") is None  # OSS's default may be anonymous


def test_a_store_names_its_side_in_credential_errors(clean_aws_env):
    from dth_ray.stores import open_store

    for role in ("source", "destination"):
        store = open_store(StoreConfig(bucket="b", endpoint="http://127.0.0.1:1", credentials="env:DTH_UNSET_X"),
                           role)
        with pytest.raises(ConfigError, match=rf"^{role}.credentials=env:DTH_UNSET_X needs DTH_UNSET_X_ACCESS_KEY_ID"):
            store._get_signer()


def test_secrets_are_looked_up_in_an_aws_stores_own_region():
    assert credentials_region(StoreConfig(bucket="b", region="eu-west-1")) == "eu-west-1"
    assert credentials_region(StoreConfig(bucket="b", region="eu-west-1",
                                          endpoint="https://s3.eu-west-1.amazonaws.com")) == "eu-west-1"
    # Not an AWS region: the environment's (or profile's) region is used instead.
    assert credentials_region(StoreConfig(bucket="b", region="garage", endpoint="https://minio.example.com")) == ""
    assert credentials_region(StoreConfig(type=StoreType.cos, bucket="b-125", region="ap-guangzhou")) == ""


# -- AWS conventions: endpoint and region ---------------------------------------------------------------------


def test_endpoint_variables_in_the_sdks_order():
    assert s3_endpoint_from_env(NO_ENV) == ("", "")
    assert s3_endpoint_from_env({"AWS_ENDPOINT_URL": "http://a:1"}) == ("http://a:1", "AWS_ENDPOINT_URL")
    both = {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://s3:2"}
    assert s3_endpoint_from_env(both) == ("http://s3:2", "AWS_ENDPOINT_URL_S3")
    assert s3_endpoint_from_env({**both, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}) == ("", "")


def test_region_from_key_then_environment_then_profile_then_us_east_1(tmp_path):
    config = tmp_path / "config"
    config.write_text("[default]\nregion = ap-south-1\n[profile work]\nregion = eu-central-1\n[profile bare]\n")
    files = {"AWS_CONFIG_FILE": str(config)}
    assert default_region("eu-west-3", environ={**files, "AWS_REGION": "us-west-2"}) == "eu-west-3"
    assert default_region(environ={**files, "AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "us-west-1"}) == \
        "us-west-2"
    assert default_region(environ={**files, "AWS_DEFAULT_REGION": "us-west-1"}) == "us-west-1"
    assert default_region(environ=files) == "ap-south-1"
    assert default_region(environ={**files, "AWS_PROFILE": "work"}) == "eu-central-1"
    assert default_region(credentials="profile:work", environ={**files, "AWS_PROFILE": "bare"}) == "eu-central-1"
    assert default_region(environ={**files, "AWS_PROFILE": "bare"}) == "us-east-1"
    assert default_region(environ={"AWS_CONFIG_FILE": str(tmp_path / "none")}) == "us-east-1"
    config.write_text("[profile default]\nregion = sa-east-1\n")
    assert profile_region("default", files) == "sa-east-1"


def test_s3_stores_take_the_environments_endpoint_and_region_once_at_resolve(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    s = resolve(sync_config({}, {"endpoint": "https://s3.example.com", "region": "garage"}))
    assert (s.source.endpoint, s.source.region) == ("http://127.0.0.1:4566", "eu-north-1")
    assert (s.destination.endpoint, s.destination.region) == ("https://s3.example.com", "garage")  # as set
    cos = resolve(sync_config({"type": StoreType.cos, "bucket": "p-1250000000", "region": "ap-guangzhou"}))
    assert (cos.source.endpoint, cos.source.region) == ("", "ap-guangzhou")  # not an AWS convention
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3.internal.example:9000")
    with pytest.raises(ConfigError, match=r"^AWS_ENDPOINT_URL_S3='http://s3.internal.example:9000' \(the source "
                                          r"endpoint\) is plain http; use https or set source.insecure_http=true"):
        resolve(sync_config())


# -- a bucket in another region --------------------------------------------------------------------------------


def test_wrong_region_answers_name_the_buckets_region():
    assert bucket_region(301, {"x-amz-bucket-region": "eu-west-1"}, b"") == "eu-west-1"  # a HEAD: no body
    malformed = (b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; "
                 b"expecting 'ap-southeast-2'</Message><Region>ap-southeast-2</Region></Error>")
    assert bucket_region(400, {}, malformed) == "ap-southeast-2"
    moved = b"<Error><Code>PermanentRedirect</Code><Endpoint>b.s3.eu-central-1.amazonaws.com</Endpoint></Error>"
    assert bucket_region(301, {}, moved) == "eu-central-1"
    assert bucket_region(403, {"x-amz-bucket-region": "us-west-2"}, b"") == "us-west-2"
    assert bucket_region(200, {"x-amz-bucket-region": "us-west-2"}, b"") == ""  # a success needs no following
    assert bucket_region(400, {}, b"<Error><Code>InvalidArgument</Code></Error>") == ""
    assert bucket_region(301, {"x-amz-bucket-region": "<script>"}, b"") == ""


def test_following_a_region_moves_a_derived_endpoint_and_keeps_a_set_one():
    derived = S3Store(StoreConfig(bucket="logs", region="us-east-1"), "source")
    derived._follow_region("eu-west-1")
    assert derived.region == "eu-west-1"
    assert derived._target("k")[0] == "logs.s3.eu-west-1.amazonaws.com"
    china = S3Store(StoreConfig(bucket="logs", region="cn-north-1"), "source")
    china._follow_region("cn-northwest-1")
    assert china._target("k")[0] == "logs.s3.cn-northwest-1.amazonaws.com.cn"
    explicit = S3Store(StoreConfig(bucket="logs", endpoint="https://storage.example.com", region="us-east-1"))
    explicit._follow_region("eu-west-1")
    assert (explicit.region, explicit._target("k")[0]) == ("eu-west-1", "storage.example.com")
