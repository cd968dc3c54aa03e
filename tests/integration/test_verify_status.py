"""`verify` finds planted corruption, missing and extra objects; `status prefix=` and `status key=` answer
before and after a sync; status of a job reads the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

from dth_ray.compose import load_settings
from dth_ray.runtime import status
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.verify import run_verify
from tests.integration.helpers import s3_overrides
from tests.servers.s3_servers import seed_objects

MiB = 1024 * 1024


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dth_ray", *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=240)


def test_verify_and_status_before_and_after_sync_and_after_corruption(e2e_env, ray_local, unique_prefix,
                                                                        tmp_path):
    pair = e2e_env
    rng = random.Random(5)
    items = {f"{unique_prefix}g{i % 3}/o{i:03d}": rng.randbytes(rng.randint(1, 9000)) for i in range(60)}
    items[f"{unique_prefix}g0/big.bin"] = rng.randbytes(70 * MiB)  # multipart: its ETag is not an MD5
    items[f"{unique_prefix}g1/sp ace+%?&.txt"] = b"odd key"
    seed_objects(pair.source.client(), pair.source.bucket, items)
    dst_prefix = "vs/" + unique_prefix
    overrides = s3_overrides(pair, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite"))
    cfg = load_settings(overrides)

    before = _cli(["status", *overrides, f"prefix={unique_prefix}g1/"])
    assert before.returncode == 1, before.stderr
    answer = json.loads(before.stdout)
    assert answer["complete"] is False and answer["counts"]["missing"] == 21

    assert run_sync(cfg).to_json()["status"] == "succeeded"
    after = _cli(["status", *overrides, f"prefix={unique_prefix}g1/"])
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["counts"] == {"objects": 21, "present": 21, "missing": 0, "differ": 0,
                                                 "unchecked": 0}
    job = _cli(["status", *overrides])
    assert job.returncode == 0 and json.loads(job.stdout)["objects"]["copied"] == len(items)

    clean = run_verify(cfg)
    assert clean["status"] == "ok", clean
    assert clean["counts"]["checked"] == len(items) and clean["counts"]["matched"] == len(items)
    assert clean["counts"]["read_objects"] == 0, "fast mode proves these from listings and records"

    dst = pair.destination.client()
    bucket = pair.destination.bucket
    small = f"g2/o{2:03d}"
    body = items[unique_prefix + small]
    dst.put_object(Bucket=bucket, Key=dst_prefix + small, Body=bytes(b ^ 0xFF for b in body))  # same size
    dst.put_object(Bucket=bucket, Key=dst_prefix + "g0/big.bin", Body=b"\0" * (70 * MiB))  # same size
    dst.delete_object(Bucket=bucket, Key=dst_prefix + "g1/o001")
    dst.put_object(Bucket=bucket, Key=dst_prefix + "zz-only-here/extra", Body=b"x")

    found = run_verify(cfg)
    assert found["status"] == "differ"
    assert sorted(found["differ"]) == sorted([unique_prefix + small, unique_prefix + "g0/big.bin"])
    assert found["missing_on_destination"] == [unique_prefix + "g1/o001"]
    assert found["extra_on_destination"] == [dst_prefix + "zz-only-here/extra"]
    assert found["counts"]["differ"] == 2 and found["counts"]["missing_on_destination"] == 1

    full = run_verify(load_settings([*overrides, "verify.mode=full"]))
    assert sorted(full["differ"]) == sorted(found["differ"])
    assert full["counts"]["read_objects"] == len(items) - 1  # all present objects, both sides read
    assert full["counts"]["read_bytes"] == 2 * (sum(len(b) for b in items.values()) - len(items[
        unique_prefix + "g1/o001"]))

    assert status.prefix_status(cfg, unique_prefix + "g2/")["counts"]["differ"] == 1
    key = status.key_status(cfg, unique_prefix + small)
    assert key["in_sync"] is False and key["source"]["etag"] == hashlib.md5(body).hexdigest()

    cli_verify = _cli(["verify", *overrides, f"report={tmp_path / 'verify.json'}"])
    assert cli_verify.returncode == 1
    assert json.loads((tmp_path / "verify.json").read_text())["counts"]["differ"] == 2

    # Resync repairs what verify found; extras only fail a strict verify.
    assert run_sync(cfg).to_json()["objects"]["copied"] == 3
    assert run_verify(cfg)["status"] == "ok"
    assert run_verify(load_settings([*overrides, "verify.strict=true"]))["status"] == "differ"
