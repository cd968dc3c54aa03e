"""The benchmark fixtures measure what they claim: the synthetic endpoint lists like S3 (checked against a brute
force listing and through the product's own S3 store), and the process sampler groups Ray's processes."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import procstats  # noqa: E402
import synth_s3  # noqa: E402

from dth_ray.config import StoreConfig  # noqa: E402
from dth_ray.stores.s3 import S3Store  # noqa: E402

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def brute(space: synth_s3.KeySpace, prefix: str, after: str, delimiter: str, max_keys: int):
    keys, prefixes = [], []
    for k in range(space.count):
        key = space.key(k)
        if not key.startswith(prefix) or key <= after:
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            rolled = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if prefixes and prefixes[-1] == rolled:
                continue
            if len(keys) + len(prefixes) >= max_keys:
                return keys, prefixes, True
            prefixes.append(rolled)
            continue
        if len(keys) + len(prefixes) >= max_keys:
            return keys, prefixes, True
        keys.append(key)
    return keys, prefixes, False


def parse(xml: str):
    root = ET.fromstring(xml)
    keys = [c.find(NS + "Key").text for c in root.findall(NS + "Contents")]
    prefixes = [c.find(NS + "Prefix").text for c in root.findall(NS + "CommonPrefixes")]
    return keys, prefixes, root.find(NS + "IsTruncated").text == "true"


@pytest.mark.parametrize("layout", ["deep", "flat"])
@pytest.mark.parametrize("skip", [0, 10])
def test_pages_match_a_brute_force_listing(layout, skip):
    space = synth_s3.KeySpace(120_000, skip, layout)  # two folders of the deep layout
    cases = [("", "", "/", 1000), ("", "", "/", 2), ("d001/", "", "/", 1000), ("d001/", "d001/k00100500", "/", 5),
             ("", "d000/k00099999", "/", 3), ("", "d000/\U0010ffff", "", 1), ("d", "", "k", 4),
             ("obj-0000", "obj-000010", "", 7), ("", "", "", 1000), ("d002/k0020", "", "/", 1000)]
    for prefix, after, delimiter, max_keys in cases:
        got = parse(synth_s3.list_xml(space, "b", prefix, after, delimiter, max_keys, ""))
        assert got == brute(space, prefix, after, delimiter, max_keys), (prefix, after, delimiter, max_keys)


def test_continuation_tokens_walk_every_key_once():
    space = synth_s3.KeySpace(25_000, 10)
    seen, after = [], ""
    while True:
        xml = synth_s3.list_xml(space, "b", "", after, "", 1000, "")
        keys, _, truncated = parse(xml)
        seen += keys
        if not truncated:
            break
        token = ET.fromstring(xml).find(NS + "NextContinuationToken").text
        after = base64.urlsafe_b64decode(token).decode()
    assert seen == [space.key(k) for k in range(space.count)]
    assert len(seen) == 25_000 - 2_500


def test_the_s3_store_lists_it_with_sizes_and_etags():
    async def main():
        endpoint = synth_s3.Endpoint({"src": synth_s3.KeySpace(3_000), "dst": synth_s3.KeySpace(3_000, 10)})
        runner = web.AppRunner(endpoint.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS chose
        store = S3Store(StoreConfig(bucket="dst", endpoint=f"http://127.0.0.1:{port}", credentials="anonymous"))
        try:
            listed, token = [], ""
            while True:
                page = await store.list_page("d000/", token=token, delimiter="/")
                listed += page.objects
                if not page.next_token:
                    break
                token = page.next_token
            top = await store.list_page("", delimiter="/")
        finally:
            await store.aclose()
            await runner.cleanup()
        return listed, top, endpoint.counts

    listed, top, counts = asyncio.run(main())
    assert len(listed) == 2_700 and listed[0].key == "d000/k00000001"
    assert all(o.size == synth_s3.size_of(int(o.key[-8:])) and o.etag == synth_s3.etag_of(int(o.key[-8:]))
               for o in listed)
    assert top.prefixes == ["d000/"] and not top.objects
    assert set(counts) == {"list_objects_v2"}


def test_processes_are_grouped_by_what_ray_calls_them():
    root = os.getpid()
    site = "/venv/lib/python3.11/site-packages/ray"
    assert procstats.classify(root, root, ["python", "dth-ray", "sync"]) == "driver"
    assert procstats.classify(2, root, ["ray::TransferWorker.run_shard"]) == "transfer_actors"
    assert procstats.classify(2, root, ["ray::SqliteManifest"]) == "manifest_actor"
    assert procstats.classify(2, root, ["ray::IDLE"]) == "ray_workers"
    assert procstats.classify(2, root, ["ray::DashboardAgent"]) == "ray_daemons"
    assert procstats.classify(2, root, [f"{site}/core/src/ray/raylet/raylet", "--x"]) == "raylet"
    assert procstats.classify(2, root, [f"{site}/core/src/ray/gcs/gcs_server"]) == "gcs_server"
    assert procstats.classify(2, root, ["python", "-u", f"{site}/_private/log_monitor.py"]) == "ray_daemons"
    assert procstats.classify(2, root, ["python", f"{site}/_private/workers/default_worker.py"]) == "ray_workers"
    assert procstats.classify(2, root, ["rclone", "serve"]) == "other"


def test_the_sampler_finds_a_tagged_child_and_sums_its_memory():
    tag = uuid.uuid4().hex
    env = dict(os.environ, **{procstats.TAG_VAR: tag})
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(30_000_000); time.sleep(30)"],
                             env=env)
    try:
        sampler = procstats.ProcessSampler(tag, os.getpid(), 0.05)
        for _ in range(100):  # until the child has its 30 MB
            sampler.sample()
            if sampler.peak_by_group.get("other", 0) > 25e6:
                break
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert child.pid in sampler.group and sampler.group[child.pid] == "other"
    assert sampler.breakdown()["other"]["peak_pss_mb"] > 25
    assert sampler.peak_pss >= sampler.peak_by_group["other"]
