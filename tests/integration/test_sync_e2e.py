"""End-to-end syncs on a local Ray between two `rclone serve s3` endpoints with real SigV4 auth."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3

from dth_ray.compose import load_settings
from dth_ray.engine.context import auto_part_bytes
from dth_ray.runtime.driver import run_sync
from tests.integration.helpers import listing, md5_of, s3_overrides
from tests.servers.s3_servers import seed_objects

MiB = 1024 * 1024
ODD = ["sp ace.txt", "plus+sign", "pct%41lit", "q?a&b=c", "日本語/ファイル.csv", "zero"]


def _seed_mixed(pair, prefix: str, rng: random.Random) -> dict[str, bytes]:
    items = {f"{prefix}d{i % 5}/sub{i % 3}/obj-{i:04d}": rng.randbytes(rng.randint(1, 40_000)) for i in range(300)}
    items.update({prefix + k: (b"" if k == "zero" else rng.randbytes(777)) for k in ODD})
    items[prefix + "big/multipart.bin"] = rng.randbytes(70 * MiB)  # above the tests' 64 MiB threshold: in parts
    seed_objects(pair.source.client(), pair.source.bucket, items)
    client = pair.source.client()
    client.put_object(Bucket=pair.source.bucket, Key=prefix + "meta/with-headers.html", Body=b"<p>hi</p>",
                      ContentType="text/html", CacheControl="max-age=60", ContentDisposition="inline",
                      ContentLanguage="de", Metadata={"owner": "team-a"})
    items[prefix + "meta/with-headers.html"] = b"<p>hi</p>"
    return items


def test_sync_copies_every_byte_then_nothing(e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    items = _seed_mixed(pair, unique_prefix, random.Random(1))
    cfg = load_settings([*s3_overrides(pair, unique_prefix, "mirror/" + unique_prefix, str(tmp_path / "m.sqlite")),
                       "transfer.multipart_threshold=64MiB"])
    report = run_sync(cfg).to_json()

    assert report["status"] == "succeeded", report["failures"]
    assert report["objects"] == {"listed": len(items), "copied": len(items), "skipped": 0, "failed": 0}
    assert report["bytes"]["copied"] == sum(len(b) for b in items.values())
    # Ray runs beside the workers and the source is near: the near budget's auto parts (three in flight).
    assert report["part_size_bytes"] == auto_part_bytes(24 * MiB) == 8 * MiB
    dst = pair.destination.client()
    got = listing(dst, pair.destination.bucket, "mirror/" + unique_prefix)
    assert set(got) == {"mirror/" + k for k in items}
    for key, body in items.items():
        assert got["mirror/" + key]["Size"] == len(body)
    for key in [k for k in items if "obj-00" in k or not k.split("/")[-1].startswith("obj")]:
        assert md5_of(dst, pair.destination.bucket, "mirror/" + key) == hashlib.md5(items[key]).hexdigest(), key
    head = dst.head_object(Bucket=pair.destination.bucket, Key="mirror/" + unique_prefix + "meta/with-headers.html")
    assert head["ContentType"] == "text/html"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == "inline"
    assert head["ContentLanguage"] == "de"
    assert {k.lower(): v for k, v in head["Metadata"].items()} == {"owner": "team-a"}

    again = run_sync(cfg).to_json()
    assert again["objects"]["copied"] == 0
    assert again["objects"]["skipped"] == len(items)
    assert sum(again["skipped_reasons"].values()) == len(items)
    # Single-part MD5 ETags are compared directly; only the multipart copy needed a per-object record (rclone
    # may list it with its full-content MD5, which then matches directly too).
    assert set(again["skipped_reasons"]) <= {"unchanged", "same_etag"}
    with sqlite3.connect(tmp_path / "m.sqlite") as db:
        recorded = [k for (k,) in db.execute("SELECT key FROM objects")]
        checkpoints = db.execute("SELECT count(*) FROM shards WHERE status='done'").fetchone()[0]
    assert recorded == [unique_prefix + "big/multipart.bin"], "small objects cost no per-object write"
    assert checkpoints >= 2, "each run settled its shards in checkpoints"


def test_same_size_overwrite_at_source_is_recopied(e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    src = pair.source.client()
    seed_objects(src, pair.source.bucket, {unique_prefix + f"k{i}": b"a" * 100 for i in range(20)})
    cfg = load_settings(s3_overrides(pair, unique_prefix, "ow/" + unique_prefix, str(tmp_path / "m.sqlite")))
    assert run_sync(cfg).to_json()["objects"]["copied"] == 20
    src.put_object(Bucket=pair.source.bucket, Key=unique_prefix + "k7", Body=b"b" * 100)  # same size

    report = run_sync(cfg).to_json()

    assert report["objects"] == {"listed": 20, "copied": 1, "skipped": 19, "failed": 0}
    dst = pair.destination.client()
    assert md5_of(dst, pair.destination.bucket, "ow/" + unique_prefix + "k7") == hashlib.md5(b"b" * 100).hexdigest()


def test_dry_run_writes_nothing_and_counts_would_copy(e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    seed_objects(pair.source.client(), pair.source.bucket,
                 {unique_prefix + f"x/{i}": b"z" * i for i in range(1, 31)})
    cfg = load_settings(s3_overrides(pair, unique_prefix, "dry/" + unique_prefix, str(tmp_path / "m.sqlite"))
                      + ["dry_run=true"])

    report = run_sync(cfg).to_json()

    assert report["objects"]["would_copy"] == 30
    assert report["bytes"]["would_copy"] == sum(range(1, 31))
    assert report["objects"]["copied"] == 0
    assert listing(pair.destination.client(), pair.destination.bucket, "dry/" + unique_prefix) == {}


def test_filters_and_prefix_list_narrow_the_listing(e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    keys = ["a/1.csv", "a/2.json", "b/3.csv", "b/c/4.csv", "d/5.csv", "d/6.tmp"]
    seed_objects(pair.source.client(), pair.source.bucket, {unique_prefix + k: b"x" for k in keys})
    plist = tmp_path / "prefixes.txt"
    plist.write_text(f"{unique_prefix}b/\n{unique_prefix}d/\n")
    cfg = load_settings(s3_overrides(pair, unique_prefix, "flt/" + unique_prefix, str(tmp_path / "m.sqlite"))
                      + [f"source.prefix_list={plist}", "filter.include=[*.csv]", "filter.exclude=[/b/c/**]"])

    report = run_sync(cfg).to_json()

    got = listing(pair.destination.client(), pair.destination.bucket, "flt/" + unique_prefix)
    assert sorted(k[len("flt/" + unique_prefix):] for k in got) == ["b/3.csv", "d/5.csv"]
    assert report["objects"]["copied"] == 2


def test_local_directory_to_s3_and_back(e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    root = tmp_path / "disk"
    rng = random.Random(3)
    files = {f"dir{i % 3}/file {i}.bin": rng.randbytes(rng.randint(0, 5000)) for i in range(40)}
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    up = load_settings([
        "source=local", f"source.path={root}", "destination=s3", f"destination.bucket={pair.destination.bucket}",
        f"destination.endpoint={pair.destination.endpoint}", f"destination.prefix={unique_prefix}",
        "destination.credentials=env:E2EDST", f"manifest.path={tmp_path / 'm1.sqlite'}", "progress=off"])
    assert run_sync(up).to_json()["objects"]["copied"] == len(files)
    assert run_sync(up).to_json()["objects"]["copied"] == 0

    back = tmp_path / "back"
    down = load_settings([
        "source=s3", f"source.bucket={pair.destination.bucket}", f"source.endpoint={pair.destination.endpoint}",
        f"source.prefix={unique_prefix}", "source.credentials=env:E2EDST", "destination=local",
        f"destination.path={back}", f"manifest.path={tmp_path / 'm2.sqlite'}", "progress=off"])
    report = run_sync(down).to_json()

    assert report["objects"]["copied"] == len(files), report
    for rel, body in files.items():
        assert (back / rel).read_bytes() == body
    assert not [p for p in os.listdir(back) if p.startswith(".dth")], "no staging files left behind"
