"""Full-object CRC64NVME end to end, against an endpoint that checks it as S3 does (tests/servers/checksum_proxy.py
in front of rclone serve s3, which checks signatures, or moto, which gives real multipart ETags).

A byte flipped on the way to the destination (PUT body, UploadPart body) or on the way from the source is
refused by the server and the copy retries; a destination that does not check CRC64NVME keeps the MD5 path,
said once; `verify` compares the stored checksums instead of reading bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from dth_ray.checksums import crc64nvme
from dth_ray.compose import load_settings
from dth_ray.config import ChecksumMode, StoreConfig, StoreType
from dth_ray.engine import crcmode
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.verify import run_verify
from dth_ray.stores import open_store
from tests.integration.helpers import MiB, copier_for, copy_listed
from tests.servers.checksum_proxy import ChecksumProxy
from tests.servers.fault_proxy import FaultProxy, Rule, flip, flip_request
from tests.servers.s3_servers import s3_client


@pytest.fixture
def checked(rclone_pair, monkeypatch):
    """Both rclone servers behind a CRC64NVME-checking endpoint, and a fault proxy in front of each."""
    pair = rclone_pair
    for name, server in (("CRCSRC", pair.source), ("CRCDST", pair.destination)):
        monkeypatch.setenv(f"{name}_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv(f"{name}_SECRET_ACCESS_KEY", server.secret_key)
    src_check, dst_check = ChecksumProxy(pair.source.endpoint), ChecksumProxy(pair.destination.endpoint)
    src_fault, dst_fault = FaultProxy(src_check.endpoint, seed=11), FaultProxy(dst_check.endpoint, seed=12)
    yield pair, src_check, dst_check, src_fault, dst_fault
    for proxy in (src_fault, dst_fault, src_check, dst_check):
        proxy.stop()


def _stores(pair, src_endpoint: str, dst_endpoint: str, dst_mode: ChecksumMode = ChecksumMode.auto):
    src = open_store(StoreConfig(type=StoreType.s3, bucket=pair.source.bucket, endpoint=src_endpoint,
                                 credentials="env:CRCSRC", checksum=ChecksumMode.crc64nvme))
    dst = open_store(StoreConfig(type=StoreType.s3, bucket=pair.destination.bucket, endpoint=dst_endpoint,
                                 credentials="env:CRCDST", checksum=dst_mode))
    return src, dst


def _seed(pair, endpoint: str, key: str, body: bytes) -> None:
    s3_client(endpoint, pair.source.access_key, pair.source.secret_key).put_object(
        Bucket=pair.source.bucket, Key=key, Body=body)


def _read(pair, key: str) -> bytes:
    client = pair.destination.client()
    return client.get_object(Bucket=pair.destination.bucket, Key=key)["Body"].read()


def test_the_endpoint_checks_crc64nvme_and_signatures(checked, unique_prefix):
    pair, src_check, *_ = checked
    client = s3_client(src_check.endpoint, pair.source.access_key, pair.source.secret_key)
    body = os.urandom(1000)
    with pytest.raises(Exception, match="BadDigest"):
        client.put_object(Bucket=pair.source.bucket, Key=unique_prefix + "x", Body=body,
                          ChecksumCRC64NVME="AAAAAAAAAAA=")
    wrong = s3_client(src_check.endpoint, pair.source.access_key, "not-the-secret")
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        wrong.put_object(Bucket=pair.source.bucket, Key=unique_prefix + "y", Body=body)
    client.put_object(Bucket=pair.source.bucket, Key=unique_prefix + "z", Body=body)
    head = client.head_object(Bucket=pair.source.bucket, Key=unique_prefix + "z", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] and src_check.stored_crc(pair.source.bucket, unique_prefix + "z") == \
        crc64nvme(body)


def test_bytes_flipped_on_the_way_to_the_destination_are_refused_by_its_crc_check(checked, unique_prefix):
    """After the first write showed the destination checks CRC64NVME (its echo), a PUT whose body is flipped
    on the wire is refused (BadDigest) and sent again; an UploadPart, which then carries only CRC64NVME (no
    Content-MD5), too: the CRC is what refused it. Each object lands with the source's own CRC64NVME."""
    pair, src_check, dst_check, _, dst_fault = checked
    small, big = os.urandom(300_000), os.urandom(12 * MiB + 5)
    for name, body in (("warm.bin", b"warm-up"), ("small.bin", small), ("big.bin", big)):
        _seed(pair, src_check.endpoint, unique_prefix + name, body)
    src, dst = _stores(pair, src_check.endpoint, dst_fault.endpoint)
    copier = copier_for(src, dst, parts_in_flight=2)

    asyncio.run(copy_listed(copier, src, dst, unique_prefix + "warm.bin", "crc/" + unique_prefix + "warm.bin"))
    assert copier._ctx.crc.checked, "the destination's echo showed it checks CRC64NVME"

    dst_fault.add(Rule(flip_request(), op="PutObject", times=1))
    outcome, _ = asyncio.run(copy_listed(copier, src, dst, unique_prefix + "small.bin",
                                         "crc/" + unique_prefix + "small.bin"))
    assert copier.retries == 1 and outcome.verified_source
    assert [(r["op"], r["code"]) for r in dst_check.refused] == [("PutObject", "BadDigest")]
    assert _read(pair, "crc/" + unique_prefix + "small.bin") == small
    assert dst_check.stored_crc(pair.destination.bucket, "crc/" + unique_prefix + "small.bin") == crc64nvme(small)

    dst_fault.add(Rule(flip_request(), op="UploadPart", times=1))
    outcome, uploads = asyncio.run(copy_listed(copier, src, dst, unique_prefix + "big.bin",
                                               "crc/" + unique_prefix + "big.bin"))
    assert copier.retries == 2 and outcome.verified_source and outcome.part_size_bytes == 5 * MiB
    assert dst_check.refused[1] == {"op": "UploadPart", "key": "crc/" + unique_prefix + "big.bin",
                                    "code": "BadDigest", "content_md5": False}, "no MD5: the CRC refused it"
    assert len(dst_check.refused) == 2 and uploads == []
    assert _read(pair, "crc/" + unique_prefix + "big.bin") == big
    assert dst_check.stored_crc(pair.destination.bucket, "crc/" + unique_prefix + "big.bin") == crc64nvme(big)


def test_bytes_flipped_on_the_way_from_the_source_are_refused_against_the_sources_crc(checked, unique_prefix):
    """The source's own CRC64NVME goes out on the PUT and on the Complete: a byte flipped between the source and
    this process (so our own part CRCs match what we send) is still refused by the destination, end to end."""
    pair, src_check, dst_check, src_fault, _ = checked
    small, big = os.urandom(200_000), os.urandom(11 * MiB)
    for name, body in (("small.bin", small), ("big.bin", big)):
        _seed(pair, src_check.endpoint, unique_prefix + name, body)
    src, dst = _stores(pair, src_fault.endpoint, dst_check.endpoint, ChecksumMode.crc64nvme)
    copier = copier_for(src, dst, parts_in_flight=1)

    src_fault.add(Rule(flip(), op="GetObject", ranged=False, times=1))
    outcome, _ = asyncio.run(copy_listed(copier, src, dst, unique_prefix + "small.bin",
                                         "from/" + unique_prefix + "small.bin"))
    assert copier.retries == 1 and outcome.verified_source
    assert _read(pair, "from/" + unique_prefix + "small.bin") == small

    src_fault.add(Rule(flip(), op="GetObject", ranged=True, times=1))
    outcome, uploads = asyncio.run(copy_listed(copier, src, dst, unique_prefix + "big.bin",
                                               "from/" + unique_prefix + "big.bin"))
    assert copier.retries == 2 and outcome.verified_source and uploads == []
    assert [(r["op"], r["code"]) for r in dst_check.refused] == [
        ("PutObject", "BadDigest"), ("CompleteMultipartUpload", "BadDigest")]
    assert _read(pair, "from/" + unique_prefix + "big.bin") == big


@pytest.mark.parametrize("server", ["rclone", "moto"])
def test_a_destination_that_does_not_check_crc64nvme_keeps_the_md5_path_said_once(
        server, rclone_pair, moto_server, monkeypatch, caplog, unique_prefix):
    """rclone serve s3 and moto keep an x-amz-checksum-crc64nvme without checking it and do not echo it: the
    first write shows it, the rest go out with Content-MD5 only, and the log says so once."""
    monkeypatch.setattr(crcmode, "_said", set())
    if server == "rclone":
        target, bucket = rclone_pair.destination, rclone_pair.destination.bucket
        monkeypatch.setenv("CRCFB_ACCESS_KEY_ID", target.access_key)
        monkeypatch.setenv("CRCFB_SECRET_ACCESS_KEY", target.secret_key)
    else:
        target, bucket = moto_server, "crc-fallback"
        moto_server.client().create_bucket(Bucket=bucket)
        monkeypatch.setenv("CRCFB_ACCESS_KEY_ID", "testing-key")
        monkeypatch.setenv("CRCFB_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("CRCSRC_ACCESS_KEY_ID", rclone_pair.source.access_key)
    monkeypatch.setenv("CRCSRC_SECRET_ACCESS_KEY", rclone_pair.source.secret_key)
    bodies = {"a.bin": os.urandom(1000), "b.bin": os.urandom(2000), "big.bin": os.urandom(6 * MiB)}
    for name, body in bodies.items():
        _seed(rclone_pair, rclone_pair.source.endpoint, unique_prefix + name, body)

    def stores():
        src = open_store(StoreConfig(type=StoreType.s3, bucket=rclone_pair.source.bucket,
                                     endpoint=rclone_pair.source.endpoint, credentials="env:CRCSRC"))
        dst = open_store(StoreConfig(type=StoreType.s3, bucket=bucket, endpoint=target.endpoint,
                                     credentials="env:CRCFB"))
        return src, dst

    with caplog.at_level(logging.WARNING, logger="dth_ray.engine.crcmode"):
        for name in bodies:  # a copier per object, as actors in one process: the fallback is said once
            src, dst = stores()
            copier = copier_for(src, dst)
            asyncio.run(copy_listed(copier, src, dst, unique_prefix + name, "fb/" + unique_prefix + name))
            assert not copier._ctx.crc.send, "MD5 only from the first answer on"
    said = [r.getMessage() for r in caplog.records if "does not check CRC64NVME" in r.getMessage()]
    assert len(said) == 1, said
    client = target.client()
    for name, body in bodies.items():
        assert client.get_object(Bucket=bucket, Key="fb/" + unique_prefix + name)["Body"].read() == body


def test_verify_compares_stored_checksums_and_reads_no_object_bytes(moto_server, monkeypatch, tmp_path,
                                                                    unique_prefix):
    """Source and destination both keep checked CRC64NVMEs (moto behind the checking endpoint: real multipart
    ETags, which say nothing across part sizes): `verify` HEADs both sides instead of reading, finds a planted
    same-size corruption, and no object body is read at either server."""
    for name in ("CRCV",):
        monkeypatch.setenv(f"{name}_ACCESS_KEY_ID", "testing-key")
        monkeypatch.setenv(f"{name}_SECRET_ACCESS_KEY", "testing-secret")
    client = moto_server.client()
    for bucket in ("crcv-src", "crcv-dst"):
        client.create_bucket(Bucket=bucket)
    src_check, dst_check = ChecksumProxy(moto_server.endpoint), ChecksumProxy(moto_server.endpoint)
    try:
        seed = s3_client(src_check.endpoint, "testing-key", "testing-secret")
        small = {f"{unique_prefix}s{i}": os.urandom(1000 + i) for i in range(3)}
        for key, body in small.items():
            seed.put_object(Bucket="crcv-src", Key=key, Body=body)
        bigs = {f"{unique_prefix}big{i}": os.urandom(11 * MiB) for i in range(2)}
        for key, body in bigs.items():  # two parts (6 MiB + 5 MiB): the copy's 5 MiB parts make three
            upload = seed.create_multipart_upload(Bucket="crcv-src", Key=key)["UploadId"]
            parts = [{"PartNumber": n + 1, "ETag": seed.upload_part(
                Bucket="crcv-src", Key=key, UploadId=upload, PartNumber=n + 1, Body=chunk)["ETag"]}
                for n, chunk in enumerate((body[:6 * MiB], body[6 * MiB:]))]
            seed.complete_multipart_upload(Bucket="crcv-src", Key=key, UploadId=upload,
                                           MultipartUpload={"Parts": parts})

        def overrides(manifest: str, mode: str = "crc64nvme") -> list[str]:
            return ["source=s3", "source.bucket=crcv-src", f"source.endpoint={src_check.endpoint}",
                    f"source.prefix={unique_prefix}", "source.credentials=env:CRCV", f"source.checksum={mode}",
                    "destination=s3", "destination.bucket=crcv-dst", f"destination.endpoint={dst_check.endpoint}",
                    "destination.prefix=v/", "destination.credentials=env:CRCV", f"destination.checksum={mode}",
                    f"manifest.path={tmp_path / manifest}", "progress=off", "transfer.multipart_threshold=5MiB",
                    "transfer.part_size=5MiB"]

        assert run_sync(load_settings(overrides("m.sqlite"))).to_json()["status"] == "succeeded"
        big = next(iter(bigs))
        planted = bytes(b ^ 0x5A for b in bigs[big])  # same size, other bytes, other checksum
        s3_client(dst_check.endpoint, "testing-key", "testing-secret").put_object(
            Bucket="crcv-dst", Key="v/" + big[len(unique_prefix):], Body=planted)
        src_check.object_gets = dst_check.object_gets = 0

        found = run_verify(load_settings(overrides("m.sqlite")))
        assert found["differ"] == [big] and found["counts"]["compared_by_stored_checksum"] == 1, found
        assert found["counts"]["read_objects"] == 0
        fresh = run_verify(load_settings(overrides("fresh.sqlite")))  # no copy-time records to lean on
        assert fresh["differ"] == [big] and fresh["counts"]["compared_by_stored_checksum"] == 2, fresh
        assert fresh["counts"]["read_objects"] == 0 and fresh["counts"]["matched"] == len(small) + 1
        assert src_check.object_gets == dst_check.object_gets == 0, "no object body was read"
        assert src_check.heads >= 2 and dst_check.heads >= 2

        md5_only = run_verify(load_settings(overrides("md5.sqlite", "md5")))
        assert md5_only["differ"] == [big] and md5_only["counts"]["read_objects"] == 2
        assert dst_check.object_gets > 0, "without stored checksums the bytes are read"
    finally:
        src_check.stop()
        dst_check.stop()


def test_a_cos_source_is_checked_against_its_crc64ecma_in_the_same_pass(checked, unique_prefix):
    """A COS source publishes its objects' CRC-64/ECMA (x-cos-hash-crc64ecma): a whole read is checked against it
    on arrival, an object read in parts as the parts go out (before Complete), both while the destination
    gets CRC64NVME; a byte flipped on the way from the source is caught either way and the copy retried."""
    pair, _, dst_check, _, _ = checked
    cos_check = ChecksumProxy(pair.source.endpoint, cos_crc64=True)
    cos_fault = FaultProxy(cos_check.endpoint, seed=13)
    try:
        small, big = os.urandom(100_000), os.urandom(12 * MiB)
        for name, body in (("small.bin", small), ("big.bin", big)):
            _seed(pair, cos_check.endpoint, unique_prefix + name, body)
        src = open_store(StoreConfig(type=StoreType.cos, bucket=pair.source.bucket, endpoint=cos_fault.endpoint,
                                     credentials="env:CRCSRC"))
        dst = open_store(StoreConfig(type=StoreType.s3, bucket=pair.destination.bucket,
                                     endpoint=dst_check.endpoint, credentials="env:CRCDST",
                                     checksum=ChecksumMode.crc64nvme))
        copier = copier_for(src, dst)
        for name, body, ranged in (("small.bin", small, False), ("big.bin", big, True)):
            cos_fault.add(Rule(flip(), op="GetObject", ranged=ranged, times=1, name=name))
            before = copier.retries
            outcome, uploads = asyncio.run(copy_listed(copier, src, dst, unique_prefix + name,
                                                       "cos/" + unique_prefix + name))
            assert copier.retries == before + 1 and outcome.verified_source and uploads == []
            assert _read(pair, "cos/" + unique_prefix + name) == body
        assert dst_check.refused == [], "caught here, against the source's CRC-64, before anything was sent"
    finally:
        cos_fault.stop()
        cos_check.stop()
