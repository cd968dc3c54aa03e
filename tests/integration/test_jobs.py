"""`dth-ray jobs` over real manifests (a SQLite file, DynamoDB on moto) holding a finished job and one whose
driver was cut off mid-run; readable derived job names; and a job created under the name earlier releases
derived (`job-<12 hex>`) found again: its interrupted run resumes under that name and it keeps it."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

from dth_ray.cli import main
from dth_ray.compose import load_settings
from dth_ray.model import Tally
from dth_ray.naming import describe
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.jobs import adopt_legacy_job
from dth_ray.runtime.manifest import DONE, Checkpoint
from dth_ray.runtime.manifest_sqlite import SqliteManifest
from dth_ray.runtime.manifests import open_manifest
from dth_ray.runtime.planning import plan_shards

PREFIXES, PER_PREFIX = 3, 4


def seed(root: Path) -> dict[str, bytes]:
    """Files under p0/ p1/ p2/ (so the planner makes several shards), of distinct sizes."""
    files = {}
    for p in range(PREFIXES):
        for i in range(PER_PREFIX):
            key = f"p{p}/f{i}.bin"
            body = bytes([65 + p]) * (1000 + 100 * p + i)
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(body)
            files[key] = body
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def local(src: Path, dst: Path, *manifest: str) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    return ["source=local", f"source.path={src}", "destination=local", f"destination.path={dst}",
            "progress=off", *manifest]


def cut_off_run(settings, files: dict[str, bytes]) -> tuple[int, list[str]]:
    """A run of `settings`' job as a driver leaves it when it dies after its first shard: the real planner's
    shards, the first one checkpointed done with its tally, the others pending, the run still `running`.
    Returns (shard count, the first shard's keys)."""
    shards = asyncio.run(plan_shards(settings.source, 1))
    first = sorted(k for k in files if shards[0].contains(k))
    assert len(shards) > 1 and first
    tally = Tally(listed=len(first), copied=len(first), bytes_listed=sum(len(files[k]) for k in first),
                  bytes_copied=sum(len(files[k]) for k in first))
    manifest = open_manifest(settings.manifest, settings.job)
    try:
        run = manifest.start_run(shards, describe(settings.source), describe(settings.destination))
        manifest.record([], [Checkpoint(shards[0], DONE, first[-1], tally, run)])
        manifest.flush()
    finally:
        manifest.close()
    return len(shards), first


def check_listing(capsys, tmp_path, args: list[str], finished, running, files: dict[str, bytes],
                  cut_off: tuple[int, list[str]]) -> None:
    shards, first = cut_off
    report = tmp_path / "jobs.json"
    assert main(["jobs", *args, f"report={report}"]) == 0
    out = capsys.readouterr()
    assert "2 job(s) in " in out.err
    rows = {row["job"]: row for row in json.loads(report.read_text())["jobs"]}
    assert list(rows) == [running.job, finished.job], "the most recently active first"
    total_bytes = sum(len(b) for b in files.values())
    done = rows[finished.job]
    assert done["state"] == "succeeded" and done["executions"] == 1
    assert done["objects"] == {"done": len(files), "total": len(files), "copied": len(files), "skipped": 0,
                               "failed": 0}
    assert done["bytes"] == {"done": total_bytes, "total": total_bytes, "copied": total_bytes}
    assert done["source"] == describe(finished.source)
    assert done["destination"] == describe(finished.destination)
    assert "shards" not in done and done["finished"] >= done["started"]
    going = rows[running.job]
    assert going["state"] == "running" and going["finished"] is None
    assert going["shards"] == {"done": 1, "total": shards}
    first_bytes = sum(len(files[k]) for k in first)
    assert going["objects"] == {"done": len(first), "total": None, "copied": len(first), "skipped": 0,
                                "failed": 0}
    assert going["bytes"] == {"done": first_bytes, "total": None, "copied": first_bytes}
    assert going["source"] == describe(running.source)
    assert going["destination"] == describe(running.destination)
    lines = out.out.splitlines()
    assert lines[0].split()[:6] == ["JOB", "RUN", "STATE", "OBJECTS", "BYTES", "WHEN"]
    line = {ln.split()[0]: ln for ln in lines[1:]}
    size = f"{total_bytes / 1e3:.1f} kB"
    assert re.search(rf"succeeded\s+{len(files)}/{len(files)}\s+{size}/{size}", line[finished.job])
    assert f"{describe(finished.source)} → {describe(finished.destination)}" in line[finished.job]
    assert re.search(rf"running, 1/{shards} shards\s+{len(first)}/\?\s+{first_bytes / 1e3:.1f} kB/\?",
                     line[running.job])


def test_jobs_lists_a_finished_and_a_running_job_from_sqlite(tmp_path, capsys):
    files = seed(tmp_path / "src")
    manifest = f"manifest.path={tmp_path / 'state' / 'manifest.sqlite'}"
    finished = load_settings(local(tmp_path / "src", tmp_path / "lake-a", manifest))
    report = run_sync(finished, in_process=1)
    assert report.status == "succeeded" and report.job == finished.job
    running = load_settings(local(tmp_path / "src", tmp_path / "lake-b", manifest))
    check_listing(capsys, tmp_path, [manifest], finished, running, files, cut_off_run(running, files))


def test_jobs_lists_a_finished_and_a_running_job_from_dynamodb(tmp_path, capsys, moto_server, monkeypatch):
    monkeypatch.setenv("MOTO_ACCESS_KEY_ID", "AKIAJOBSLISTING00001")
    monkeypatch.setenv("MOTO_SECRET_ACCESS_KEY", "jobs-listing-secret")
    files = seed(tmp_path / "src")
    manifest = ["manifest=dynamodb", f"manifest.table=jobs-{uuid.uuid4().hex[:12]}",
                "manifest.region=us-east-1", f"manifest.endpoint={moto_server.endpoint}",
                "manifest.credentials=env:MOTO"]
    finished = load_settings(local(tmp_path / "src", tmp_path / "lake-a", *manifest))
    assert run_sync(finished, in_process=1).status == "succeeded"
    running = load_settings(local(tmp_path / "src", tmp_path / "lake-b", *manifest))
    check_listing(capsys, tmp_path, manifest, finished, running, files, cut_off_run(running, files))


def test_derived_job_names_are_readable_and_tell_pairings_apart(tmp_path):
    stores = ["source.bucket=logs", "destination.bucket=lake"]
    plain = load_settings(stores)
    assert re.fullmatch(r"logs-lake-[0-9a-f]{6}", plain.job)
    assert re.fullmatch(r"job-[0-9a-f]{12}", plain.legacy_job)
    other = load_settings([*stores, "source.prefix=2024/"])
    assert other.job != plain.job and other.job.startswith("logs-lake-")
    (tmp_path / "my data").mkdir()
    folders = load_settings(local(tmp_path / "my data", tmp_path / "out"))
    assert re.fullmatch(r"my-data-out-[0-9a-f]{6}", folders.job)
    named = load_settings([*stores, "job=nightly"])
    assert (named.job, named.legacy_job) == ("nightly", "")


def test_a_run_interrupted_under_the_old_derived_name_resumes_under_it(tmp_path, capsys):
    files = seed(tmp_path / "src")
    path = tmp_path / "manifest.sqlite"
    settings = load_settings(local(tmp_path / "src", tmp_path / "dst", f"manifest.path={path}"))
    legacy = settings.legacy_job
    assert re.fullmatch(r"job-[0-9a-f]{12}", legacy) and settings.job != legacy
    # What an earlier release left: its run planned and cut off before a shard finished, with no record of
    # the stores (it did not keep them).
    old = SqliteManifest(str(path), legacy)
    old_run = old.start_run(asyncio.run(plan_shards(settings.source, 1)))
    old.close()

    report = run_sync(settings, in_process=1)
    assert (report.job, report.run_id, report.resumed, report.executions) == (legacy, old_run, True, 2)
    assert report.status == "succeeded" and report.tally.copied == len(files)
    assert tree(tmp_path / "dst") == files
    fresh = SqliteManifest(str(path), settings.job)
    assert fresh.latest_run() is None, "nothing was started under the readable name"
    fresh.close()

    # The job keeps its name: the next run finds what the resumed one recorded and copies nothing.
    again = run_sync(settings, in_process=1)
    assert (again.job, again.resumed, again.status) == (legacy, False, "succeeded")
    assert again.run_id != old_run and again.tally.skipped == len(files) and again.tally.copied == 0
    report_path = tmp_path / "jobs.json"
    assert main(["jobs", f"manifest.path={path}", f"report={report_path}"]) == 0
    (row,) = json.loads(report_path.read_text())["jobs"]
    assert (row["job"], row["state"], row["source"]) == (legacy, "succeeded", describe(settings.source))
    assert legacy in capsys.readouterr().out
    assert main(["status", *local(tmp_path / "src", tmp_path / "dst", f"manifest.path={path}")]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["job"], status["state"], status["run_id"]) == (legacy, "succeeded", again.run_id)


def test_the_readable_name_wins_once_it_has_runs(tmp_path):
    seed(tmp_path / "src")
    path = tmp_path / "manifest.sqlite"
    settings = load_settings(local(tmp_path / "src", tmp_path / "dst", f"manifest.path={path}"))
    assert adopt_legacy_job(settings).job == settings.job, "no manifest yet: the readable name"
    assert not path.exists(), "looking for the old name creates no manifest"
    assert run_sync(settings, in_process=1).job == settings.job
    old = SqliteManifest(str(path), settings.legacy_job)  # a stray old run appears later: not taken over
    old.start_run([])
    old.close()
    adopted = adopt_legacy_job(settings)
    assert (adopted.job, adopted.legacy_job) == (settings.job, "")
    assert adopt_legacy_job(adopted) is adopted

