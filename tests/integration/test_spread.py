"""A large object's parts are shared among the transfer actors (each sends its share source → destination
itself) and the result is still verified byte for byte."""

from __future__ import annotations

import hashlib
import random

from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from tests.integration.helpers import md5_of, s3_overrides
from tests.servers.s3_servers import seed_objects

MiB = 1024 * 1024


def test_parts_of_a_large_object_are_spread_over_actors(e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    body = random.Random(3).randbytes(90 * MiB)  # 6 parts of 16 MiB
    seed_objects(pair.source.client(), pair.source.bucket, {unique_prefix + "huge.bin": body})
    overrides = s3_overrides(pair, unique_prefix, "spread/" + unique_prefix, str(tmp_path / "m.sqlite"))
    # Lowered so a test-sized object qualifies: in parts from 64 MiB, spread above 32 MiB, two parts in flight
    # per actor; 16 MiB parts as under the full budget (beside Ray a near source's auto parts are 8 MiB).
    cfg = load_settings([*overrides, "transfer.multipart_threshold=64MiB", "transfer.spread_threshold=32MiB",
                       "transfer.parts_in_flight=2", "transfer.actors=2", "transfer.part_size=16MiB"])
    report = run_sync(cfg).to_json()
    assert report["status"] == "succeeded", report
    assert report["objects"]["copied"] == 1
    assert 0 < report["spread_parts"] < 6, "a share of the parts went to the other actor; part 1 stays home"
    dst = pair.destination.client()
    assert md5_of(dst, pair.destination.bucket, "spread/" + unique_prefix + "huge.bin") == \
        hashlib.md5(body).hexdigest()
    uploads = dst.list_multipart_uploads(Bucket=pair.destination.bucket, Prefix="spread/").get("Uploads", [])
    assert uploads == []
