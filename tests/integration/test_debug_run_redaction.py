"""A DEBUG sync from OSS with session-token keys writes no secret to any file (its report, manifest, stderr,
Ray's session logs of its actors); an endpoint with user info is refused before anything is written."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.integration.helpers import listing
from tests.servers.oss_server import OssTestServer
from tests.servers.s3_servers import RcloneS3Server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1024 * 1024


def run_cli(args: list[str], cwd, env_extra: dict, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """`dth-ray` from this checkout in a fresh process, with none of the session's keys or Ray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E", "RAY_", "DBG"))}
    env.update(env_extra, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "dth_ray", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def files_under(*roots) -> list[str]:
    out = []
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            out += [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
    return out


@pytest.fixture
def servers(tmp_path):
    """An OSS endpoint accepting a session-token key trio, and an rclone S3 destination, with fresh secrets."""
    keys = {"oss_id": "STS.NUdebug" + secrets.token_hex(4), "oss_secret": "ossSts" + secrets.token_hex(14),
            "oss_token": "CAIS" + secrets.token_urlsafe(60), "dst_id": "DBGDSTKEY" + secrets.token_hex(4),
            "dst_secret": "dstSecret" + secrets.token_hex(14)}
    oss = OssTestServer("LTAIseedonly", "seed-secret-" + secrets.token_hex(8), region="cn-hangzhou")
    oss.start()
    oss.add_key(keys["oss_id"], keys["oss_secret"], keys["oss_token"])  # requests must carry the token
    oss.create_bucket("oss-src")
    dst = RcloneS3Server(str(tmp_path / "rclone"), keys["dst_id"], keys["dst_secret"], bucket="lake")
    try:
        yield oss, dst, keys
    finally:
        dst.stop()
        oss.stop()


def test_debug_run_with_oss_session_token_leaves_no_secret_in_any_file(servers, tmp_path):
    oss, dst, keys = servers
    rng = random.Random(16)
    items = {f"logs/dt=2026-12-0{d}/part-{i}.json": rng.randbytes(rng.randint(1, 20_000))
             for d in range(1, 9) for i in range(8)}
    items["logs/big/export.bin"] = rng.randbytes(12 * MiB)  # multipart: upload ids and parts in the manifest
    for key, body in items.items():
        oss.put_object("oss-src", key, body)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="dthrd-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {"HOME": str(home), "RAY_TMPDIR": ray_tmp,
           "DBGOSS_ACCESS_KEY_ID": keys["oss_id"], "DBGOSS_SECRET_ACCESS_KEY": keys["oss_secret"],
           "DBGOSS_SESSION_TOKEN": keys["oss_token"],
           "DBGDST_ACCESS_KEY_ID": keys["dst_id"], "DBGDST_SECRET_ACCESS_KEY": keys["dst_secret"]}
    try:
        result = run_cli([
            "sync", "source=oss", "source.bucket=oss-src", f"source.endpoint={oss.endpoint}",
            "source.region=cn-hangzhou", "source.prefix=logs/", "source.credentials=env:DBGOSS",
            "destination=s3", "destination.bucket=lake", f"destination.endpoint={dst.endpoint}",
            "destination.prefix=mirror/", "destination.credentials=env:DBGDST",
            "transfer.actors=2", "transfer.multipart_threshold=8MiB", "transfer.part_size=5MiB",
            "transfer.max_requests_per_s=4",  # paced, so work is left for the actors once Ray is up
            "runtime.ray=always",  # Ray (and the actors) from the start, however short the run
            "manifest.path=state/m.sqlite", "report=report.json", "log_level=DEBUG", "progress=off",
        ], cwd=work, env_extra=env)
        (tmp_path / "stdout.txt").write_text(result.stdout)
        (tmp_path / "stderr.txt").write_text(result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((work / "report.json").read_text())
        assert report["status"] == "succeeded"
        assert report["objects"]["copied"] == len(items)
        assert sum(n["objects"] for n in report["nodes"] if not n["node_id"].startswith("local")) > 0, \
            "actors read from OSS with the session token too"
        assert set(listing(dst.client(), "lake", "mirror/")) == {"mirror/" + k[len("logs/"):] for k in items}

        # The run logged at DEBUG, and its actors through the same formatter (Ray keeps their stderr in its
        # session's worker-*.err files and copies it to the driver's).
        assert re.search(r" DEBUG dth_ray\.", result.stderr)
        logs = os.path.join(ray_tmp, f"dth-ray-{os.geteuid()}", "ray", "session_latest", "logs")
        configured = [p for p in files_under(logs) if os.path.basename(p).startswith("worker-")
                      and re.search(rb" DEBUG dth_ray\.ops\.logs actor logging: level=DEBUG format=text",
                                    read(p))]
        assert len(configured) >= 2, "both transfer actors log through dth_ray's redacting formatter"
        # The embedded node runs no log monitor: the scheduler relayed each actor's lines, tagged with it.
        relayed = set(re.findall(r"^\((actor-[0-9a-f]{8})\) \S+ \S+ DEBUG dth_ray\.ops\.logs actor logging: "
                                 r"level=DEBUG format=text$", result.stderr, re.MULTILINE))
        assert len(relayed) >= 2, result.stderr[-3000:]
        assert re.search(r"^\(manifest\) \S+ \S+ DEBUG dth_ray\.ops\.logs actor logging: level=DEBUG format=text$",
                         result.stderr, re.MULTILINE), "the manifest actor logs (and relays) like the others"

        written = files_under(work, home, ray_tmp) + [str(tmp_path / "stdout.txt"), str(tmp_path / "stderr.txt")]
        assert any(p.endswith("m.sqlite") for p in written) and len(written) > 20
        for secret in (keys["oss_secret"], keys["oss_token"], keys["dst_secret"]):
            leaks = [p for p in written if secret.encode() in read(p)]
            assert leaks == [], f"a secret in {leaks}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("role", ["source", "destination"])
def test_endpoint_with_user_info_is_refused_before_anything_is_written(role, tmp_path):
    password = "p4ss-" + secrets.token_hex(8)
    endpoint = f"http://carol:{password}@127.0.0.1:9"
    stores = {"source": ["source=s3", "source.bucket=src1", "source.endpoint=http://127.0.0.1:9"],
              "destination": ["destination=s3", "destination.bucket=dst1",
                              "destination.endpoint=http://127.0.0.1:9"]}
    stores[role][2] = f"{role}.endpoint={endpoint}"
    result = run_cli(["sync", *stores["source"], *stores["destination"], "manifest.path=state/m.sqlite",
                      "report=report.json", "log_level=DEBUG"], cwd=tmp_path, env_extra={"HOME": str(tmp_path)},
                     timeout_s=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"dth-ray: error: {role}.endpoint='http://***@127.0.0.1:9' must not carry user info "
                     "(user:password@): keys go in a credentials spec (env:NAME, secret:ID, ...), never in the URL"]
    assert password not in result.stdout + result.stderr and "carol" not in result.stderr
    assert os.listdir(tmp_path) == [], "no report, manifest or state folder"
