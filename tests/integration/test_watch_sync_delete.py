"""sync.delete on a batch run: destination-only keys under destination.prefix are deleted (whole prefixes the
source lost included), never anything outside it; sync.max_delete (count or percent) blocks every delete
when exceeded; dry_run only counts."""

from __future__ import annotations

import subprocess
import sys

from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects


def test_sync_delete_with_max_delete_and_dry_run(e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    src, dst = pair.source.client(), pair.destination.client()
    items = {f"{unique_prefix}a/{i}": b"a" * i for i in range(1, 6)}
    items.update({f"{unique_prefix}b/{i}": b"b" * i for i in range(1, 4)})
    items[f"{unique_prefix}x.txt"] = b"root"
    seed_objects(src, pair.source.bucket, items)
    dst_prefix = "mirror/" + unique_prefix
    base = s3_overrides(pair, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite"))
    assert run_sync(load_settings(base)).to_json()["status"] == "succeeded"

    # The source loses two keys of a/ and all of b/; the destination gains a prefix the source never had,
    # and there is an object just outside destination.prefix that must survive everything.
    for key in [f"{unique_prefix}a/1", f"{unique_prefix}a/2", *(f"{unique_prefix}b/{i}" for i in range(1, 4))]:
        src.delete_object(Bucket=pair.source.bucket, Key=key)
    dst.put_object(Bucket=pair.destination.bucket, Key=dst_prefix + "c/zz", Body=b"stray")
    outside = "mirror/" + unique_prefix.rstrip("/") + "-sibling/keep"
    dst.put_object(Bucket=pair.destination.bucket, Key=outside, Body=b"keep")
    gone = {dst_prefix + k for k in ["a/1", "a/2", "b/1", "b/2", "b/3", "c/zz"]}

    # The CLI in a fresh process (its start-up worker copies shards while Ray starts: its notes count too).
    cli = subprocess.run([sys.executable, "-m", "dth_ray", "sync", *base, "sync.delete=true", "sync.max_delete=5"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "error: sync.max_delete=5 exceeded: 6 destination objects are not at the source (of 10 seen" in cli.stdout

    blocked = run_sync(load_settings([*base, "sync.delete=true", "sync.max_delete=2"])).to_json()
    assert blocked["status"] == "failed"
    assert any("sync.max_delete=2 exceeded: 6 destination objects" in e for e in blocked["errors"]), blocked["errors"]
    assert blocked["objects"]["deleted"] == 0
    assert gone <= set(listing(dst, pair.destination.bucket, dst_prefix))

    dry = run_sync(load_settings([*base, "sync.delete=true", "dry_run=true"])).to_json()
    assert dry["status"] == "succeeded" and dry["objects"]["would_delete"] == 6
    assert dry["deletes"]["destination_objects"] == 10
    assert gone <= set(listing(dst, pair.destination.bucket, dst_prefix))

    done = run_sync(load_settings([*base, "sync.delete=true", "sync.max_delete=60%"])).to_json()  # 6 of 10 = the limit
    assert done["status"] == "succeeded", done["errors"]
    assert done["objects"]["deleted"] == 6 and done["deletes"]["kept"] == 0
    left = set(listing(dst, pair.destination.bucket, dst_prefix))
    assert left == {dst_prefix + k[len(unique_prefix):] for k in items} - gone
    assert dst.get_object(Bucket=pair.destination.bucket, Key=outside)["Body"].read() == b"keep"
    # Without sync.delete nothing is ever deleted.
    dst.put_object(Bucket=pair.destination.bucket, Key=dst_prefix + "c/zz", Body=b"stray")
    again = run_sync(load_settings(base)).to_json()
    assert "deleted" not in again["objects"]
    assert dst_prefix + "c/zz" in listing(dst, pair.destination.bucket, dst_prefix)
