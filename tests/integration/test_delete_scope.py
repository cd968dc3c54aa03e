"""sync.delete stays in its folder: prefix with/without '/', siblings, prefix lists, filters (no Ray)."""

from __future__ import annotations

from dth_ray.cli import main
from dth_ray.compose import load_config, load_settings
from dth_ray.runtime.driver import run_sync
from dth_ray.settings import resolve
from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects


class Bed:
    """Source keys under `<base>data/`, the destination under `<base>` (base: the test's unique prefix)."""

    def __init__(self, pair, base: str, tmp_path):
        self.pair, self.base, self.manifest = pair, base, str(tmp_path / "m.sqlite")
        self.src, self.dst = pair.source.client(), pair.destination.client()

    def seed(self, keys: list[str]) -> None:
        seed_objects(self.src, self.pair.source.bucket, {self.base + k: f"src {k}".encode() for k in keys})

    def put_dst(self, keys: list[str]) -> None:
        bucket = self.pair.destination.bucket
        seed_objects(self.dst, bucket, {self.base + k: f"dst {k}".encode() for k in keys})

    def drop_src(self, keys: list[str]) -> None:
        for key in keys:
            self.src.delete_object(Bucket=self.pair.source.bucket, Key=self.base + key)

    def dst_keys(self) -> set[str]:
        return {k[len(self.base):] for k in listing(self.dst, self.pair.destination.bucket, self.base)}

    def overrides(self, src: str, dst: str, *extra: str) -> list[str]:
        return [*s3_overrides(self.pair, self.base + src, self.base + dst, self.manifest), *extra]

    def sync(self, src: str, dst: str, *extra: str) -> dict:
        report = run_sync(load_settings(self.overrides(src, dst, *extra)), in_process=2).to_json()
        assert report["status"] == "succeeded", report["errors"]
        return report


# (No object named exactly 'backup': rclone serves a directory tree, where it could not sit beside 'backup/'.)
SIBLINGS = ["backup-2023/important.txt", "backupX/other.txt", "backup.txt", "backu", "other/backup/x"]


def test_folder_prefix_deletes_only_inside_the_folder(e2e_env, unique_prefix, tmp_path):
    bed = Bed(e2e_env, unique_prefix, tmp_path)
    bed.seed(["data/a/1", "data/a/2", "data/b/1"])
    bed.sync("data/", "backup/")
    bed.put_dst([*SIBLINGS, "backup/a/stray", "backup/zz/lost", "backup/zz/deeper/lost"])
    bed.drop_src(["data/a/2"])
    dry = bed.sync("data/", "backup/", "sync.delete=true", "dry_run=true")
    assert dry["objects"]["would_delete"] == 4
    done = bed.sync("data/", "backup/", "sync.delete=true")
    assert done["objects"]["deleted"] == 4
    assert bed.dst_keys() == {"backup/a/1", "backup/b/1", *SIBLINGS}
    sibling = unique_prefix + "backup-2023/important.txt"
    got = bed.dst.get_object(Bucket=e2e_env.destination.bucket, Key=sibling)
    assert got["Body"].read() == b"dst backup-2023/important.txt"


def test_prefix_without_slash_is_refused_before_anything_runs(e2e_env, unique_prefix, tmp_path, capsys):
    """A one-line error and exit 2 for sync and for watch; nothing copied or deleted."""
    bed = Bed(e2e_env, unique_prefix, tmp_path)
    bed.seed(["data/a/1"])
    bed.put_dst([*SIBLINGS, "backup/a/stray"])
    before = bed.dst_keys()
    assert main(["sync", *bed.overrides("data/", "backup", "sync.delete=true")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "destination.prefix=" in err and "does not end in '/'" in err
    assert "sync.delete_prefix_as_is=true" in err
    # watch with event deletes (the default) is refused the same way, before it contacts the queue.
    unused_queue = "http://127.0.0.1:9/000000000000/q"  # nothing listens there: never reached
    watch = bed.overrides("data/", "backup", "events=sqs", f"events.queue_url={unused_queue}",
                          "schedule.interval=none")
    assert main(["watch", *watch]) == 2
    assert "with events.deletes=true" in capsys.readouterr().err
    assert bed.dst_keys() == before, "nothing was copied or deleted"
    # Settings resolved without validation still never delete through such a prefix (the delete phase checks).
    raw = load_config(bed.overrides("data/", "backup", "sync.delete=true"), check=False)
    unchecked = resolve(raw, check=False)
    report = run_sync(unchecked, in_process=2).to_json()
    assert report["status"] == "failed" and any("does not end in '/'" in e for e in report["errors"])
    assert report["objects"]["deleted"] == 0
    assert bed.dst_keys() >= before and "backup/a/stray" in bed.dst_keys()
    # The whole bucket (empty prefix) and copies without deletes stay allowed.
    whole = resolve(load_config(bed.overrides("data/", "", "sync.delete=true")))
    assert whole.destination.prefix == unique_prefix and whole.delete.enabled
    assert main(["sync", *bed.overrides("data/", "backup")]) == 0


def test_acknowledged_prefix_is_a_plain_string(e2e_env, unique_prefix, tmp_path):
    """With sync.delete_prefix_as_is=true the prefix is a string, as for copies: 'backup' with source.prefix
    'data' maps 'data-2023/x' to 'backup-2023/x', so the whole 'backup*' range is in scope — and nothing
    outside it."""
    bed = Bed(e2e_env, unique_prefix, tmp_path)
    bed.seed(["data/a/1", "data-2023/live", "dataX/live"])
    bed.sync("data", "backup")
    assert bed.dst_keys() == {"backup/a/1", "backup-2023/live", "backupX/live"}
    outside = ["backu", "backuq/x", "other/backup/x", "abackup/x"]
    bed.put_dst([*outside, "backup-2023/important.txt", "backupY/stray"])
    refused = main(["sync", *bed.overrides("data", "backup", "sync.delete=true")])
    assert refused == 2
    done = bed.sync("data", "backup", "sync.delete=true", "sync.delete_prefix_as_is=true")
    assert done["objects"]["deleted"] == 2
    assert bed.dst_keys() == {"backup/a/1", "backup-2023/live", "backupX/live", *outside}


def test_prefix_list_bounds_deletes(e2e_env, unique_prefix, tmp_path):
    bed = Bed(e2e_env, unique_prefix, tmp_path)
    bed.seed(["data/p1/k", "data/p2/k", "data/p3/k", "data/p3/j"])
    bed.sync("data/", "backup/")  # everything, once
    plist = tmp_path / "prefixes.txt"
    plist.write_text(f"{unique_prefix}data/p1/\n{unique_prefix}data/p3/\n")
    bed.put_dst(["backup/p1/stray", "backup/p2/stray", "backup/p4/stray", "backup-p1/stray"])
    bed.drop_src(["data/p2/k", "data/p3/k", "data/p3/j"])  # p2 lost a key, p3 is gone entirely
    done = bed.sync("data/", "backup/", f"source.prefix_list={plist}", "sync.delete=true")
    assert done["objects"]["deleted"] == 3  # p1/stray, p3/k, p3/j
    assert bed.dst_keys() == {"backup/p1/k", "backup/p2/k", "backup/p2/stray", "backup/p4/stray",
                              "backup-p1/stray"}


def test_filters_bound_deletes(e2e_env, unique_prefix, tmp_path):
    bed = Bed(e2e_env, unique_prefix, tmp_path)
    bed.seed(["data/a/live.csv", "data/a/live.txt"])
    flt = ["filter.include=[*.csv]", "filter.exclude=[keep/**]"]
    bed.sync("data/", "backup/", *flt)
    strays = ["backup/a/gone.csv", "backup/a/gone.txt", "backup/keep/gone.csv", "backup/lost/gone.csv",
              "backup/lost/deep/gone.txt", "backup-x/gone.csv"]
    bed.put_dst(strays)
    dry = bed.sync("data/", "backup/", *flt, "sync.delete=true", "dry_run=true")
    assert dry["objects"]["would_delete"] == 2
    done = bed.sync("data/", "backup/", *flt, "sync.delete=true")
    assert done["objects"]["deleted"] == 2  # a/gone.csv and lost/gone.csv: in scope and gone at the source
    assert bed.dst_keys() == {"backup/a/live.csv", *strays} - {"backup/a/gone.csv", "backup/lost/gone.csv"}
