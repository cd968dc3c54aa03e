"""A test bed for fault scenarios: a source and a destination rclone server of their own, a fault proxy in front
of each, a dataset under a unique prefix, a poller that reads every object the destination shows while a run
goes (no corrupt or torn object may ever be visible), and the checks every scenario ends with."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
import time
from collections.abc import Callable

from tests.integration.helpers import listing, s3_overrides
from tests.servers.fault_proxy import FaultProxy
from tests.servers.s3_servers import seed_objects

MiB = 1024 * 1024
# Objects of at least 8 MiB go up in 5 MiB parts: the dataset has small objects and two multipart ones.
TUNING = ["transfer.multipart_threshold=8MiB", "transfer.part_size=5MiB", "transfer.progress_interval_s=0.2"]


def dataset(prefix: str, small: int = 120, large: int = 2, seed: int = 11) -> dict[str, bytes]:
    rng = random.Random(seed)
    objects = {f"{prefix}d{i % 5}/o{i:04d}": rng.randbytes(rng.randint(1, 24_000)) for i in range(small)}
    objects.update({f"{prefix}big/{i}.bin": rng.randbytes(12 * MiB + rng.randint(1, 999)) for i in range(large)})
    return objects


class Poller:
    """Reads every destination object that appears (each new ETag once) while a run goes, and records any whose
    bytes are not one of the versions its source key had: a torn or corrupt object seen by a reader."""

    def __init__(self, client, bucket: str, dst_prefix: str, src_prefix: str, versions: dict[str, set[str]]):
        self.client, self.bucket, self.dst_prefix, self.src_prefix = client, bucket, dst_prefix, src_prefix
        self.versions = versions  # source key -> MD5s of every version it had
        self.bad: list[str] = []
        self.seen = 0
        self._checked: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self._poll()  # and once more at the end

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the destination may be down on purpose: try again
                self._poll()
            self._stop.wait(0.05)

    def _poll(self) -> None:
        for key, obj in listing(self.client, self.bucket, self.dst_prefix).items():
            if self._checked.get(key) == obj["ETag"]:
                continue
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            source_key = self.src_prefix + key[len(self.dst_prefix):]
            if hashlib.md5(body).hexdigest() not in self.versions.get(source_key, set()):
                self.bad.append(f"{key}: {len(body)} bytes matching no version of {source_key}")
            self._checked[key] = obj["ETag"]
            self.seen += 1


class FaultBed:
    """One scenario's stores, proxies and data. `settings(*extra)` are the run's overrides (through the
    proxies); `check(report)` asserts the end state every scenario must reach."""

    def __init__(self, pair, prefix: str, tmp_path, seed: int = 1234):
        self.pair = pair
        self.prefix = prefix
        self.dst_prefix = "f/" + prefix
        self.manifest = str(tmp_path / "manifest.sqlite")
        self.src_proxy = FaultProxy(pair.source.endpoint, seed=seed, counts_path=str(tmp_path / "src-faults.json"))
        self.dst_proxy = FaultProxy(pair.destination.endpoint, seed=seed + 1,
                                    counts_path=str(tmp_path / "dst-faults.json"))
        self.objects: dict[str, bytes] = {}
        self.versions: dict[str, set[str]] = {}

    def seed(self, objects: dict[str, bytes]) -> None:
        seed_objects(self.pair.source.client(), self.pair.source.bucket, objects)
        self.objects.update(objects)
        for key, body in objects.items():
            self.versions.setdefault(key, set()).add(hashlib.md5(body).hexdigest())

    def overwrite(self, key: str, body: bytes) -> None:
        """A new version of a source object (e.g. while a run copies it)."""
        self.seed({key: body})

    def overrides(self, *extra: str) -> list[str]:
        args = s3_overrides(self.pair, self.prefix, self.dst_prefix, self.manifest)
        swap = {f"source.endpoint={self.pair.source.endpoint}": f"source.endpoint={self.src_proxy.endpoint}",
                f"destination.endpoint={self.pair.destination.endpoint}":
                    f"destination.endpoint={self.dst_proxy.endpoint}"}
        return [swap.get(a, a) for a in args] + TUNING + list(extra)

    def poller(self) -> Poller:
        return Poller(self.pair.destination.client(), self.pair.destination.bucket, self.dst_prefix, self.prefix,
                      self.versions)

    def clear(self) -> None:
        self.src_proxy.clear()
        self.dst_proxy.clear()

    def destination(self) -> dict[str, bytes]:
        client = self.pair.destination.client()
        return {key[len(self.dst_prefix):]: client.get_object(Bucket=self.pair.destination.bucket, Key=key)["Body"].read()
                for key in listing(client, self.pair.destination.bucket, self.dst_prefix)}

    def open_uploads(self) -> list:
        client = self.pair.destination.client()
        try:
            return client.list_multipart_uploads(Bucket=self.pair.destination.bucket,
                                                 Prefix=self.dst_prefix).get("Uploads", [])
        except client.exceptions.NoSuchUpload:  # rclone's answer when there are none
            return []

    def check(self, report: dict, copied: int | None = None) -> None:
        """Succeeded, the destination equal to the source (bytes, size), counts exact, no upload left open."""
        objects, t = report["objects"], report
        context = {k: report.get(k) for k in ("status", "objects", "errors", "unfinished", "nodes", "recovered")}
        assert report["status"] == "succeeded", context
        assert objects["listed"] == len(self.objects) == objects["copied"] + objects["skipped"] + objects["failed"]
        assert objects["failed"] == 0, context
        if copied is not None:
            assert objects["copied"] == copied, context
        assert sum(n["objects"] for n in t["nodes"]) == objects["copied"], context
        assert sum(n["bytes"] for n in t["nodes"]) == report["bytes"]["copied"], context
        want = {key[len(self.prefix):]: body for key, body in self.objects.items()}
        got = self.destination()
        assert sorted(got) == sorted(want)
        assert [k for k in want if got[k] != want[k]] == []
        assert self.open_uploads() == []

    def stop(self) -> None:
        self.src_proxy.stop()
        self.dst_proxy.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def env_for(pair) -> dict[str, str]:
    """The credentials of `s3_overrides` (env:E2ESRC / env:E2EDST) for a dth-ray subprocess."""
    return dict(os.environ, E2ESRC_ACCESS_KEY_ID=pair.source.access_key,
                E2ESRC_SECRET_ACCESS_KEY=pair.source.secret_key, E2EDST_ACCESS_KEY_ID=pair.destination.access_key,
                E2EDST_SECRET_ACCESS_KEY=pair.destination.secret_key)
