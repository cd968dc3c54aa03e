"""The console in a real browser: Debian's Chromium, headless, driven by Playwright (no browser download). A
real `dth-ray sync` subprocess copies a local folder to an S3 endpoint (rclone serve s3) through a fault proxy
that refuses some keys (403) and throttles others (503 SlowDown until the tries run out), slowly enough to
watch; `dth-ray console` serves the same manifest. The jobs page shows the job running and its numbers change
without a reload; the job page shows the run, the throughput chart and the failed keys; once the sync ends
both pages show the final counts. A screenshot of each page is saved in tests/output/console/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.integration.console_helpers import REPO, SCREENSHOTS, Console, wait_for
from tests.servers.fault_proxy import FaultProxy, Rule, slowdown, stall, status

CHROMIUM = "/usr/bin/chromium"
OK, DENIED, THROTTLED = 180, 6, 3


def _chromium() -> str:
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else "")
    if not found:
        print("\nconsole browser tests skipped: no Chromium (make test installs Debian's with apt where it can)")
        pytest.skip("Chromium is not installed (make test installs Debian's chromium with apt where it can)")
    return found


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("\nconsole browser tests skipped: playwright is not installed (make install)")
        pytest.skip("playwright is not installed (it is in the test extras: make install)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def _seed(root) -> dict[str, bytes]:
    files = {f"ok/{i:03d}.bin": bytes([i % 251]) * (2000 + 37 * i) for i in range(OK)}
    files.update({f"deny/{i:02d}.bin": b"d" * 500 for i in range(DENIED)})
    files.update({f"throttle/{i:02d}.bin": b"t" * 300 for i in range(THROTTLED)})
    for key, body in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return files


def _shot(page, name: str) -> str:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name)
    page.screenshot(path=path, full_page=True)
    return path


def _row_text(page, job: str, cell: str) -> str:
    return page.locator(f'tr[data-job="{job}"] td.{cell}').inner_text()


@pytest.mark.timeout(420)
def test_a_live_sync_in_the_browser(browser, e2e_env, tmp_path, unique_prefix, capsys):
    started = time.monotonic()
    _seed(tmp_path / "src")
    dst = e2e_env.destination
    job = "browser-" + unique_prefix.strip("/")
    manifest = tmp_path / "manifest.sqlite"
    with FaultProxy(dst.endpoint, seed=3) as proxy:
        proxy.add(Rule(status(403), op="PutObject", path=r"/deny/"))
        proxy.add(Rule(slowdown(), op="PutObject", path=r"/throttle/"))
        proxy.add(Rule(stall(0.12), op="PutObject"))  # ~16 objects/s at concurrency 2: a run of ~12 s
        sync = subprocess.Popen(
            [sys.executable, "-m", "dth_ray", "sync", "source=local", f"source.path={tmp_path / 'src'}",
             "destination=s3", f"destination.bucket={dst.bucket}", f"destination.endpoint={proxy.endpoint}",
             f"destination.prefix={unique_prefix}", "destination.credentials=env:E2EDST",
             f"manifest.path={manifest}", f"job={job}", "transfer.concurrency=2", "transfer.max_attempts=3",
             "runtime.ray_pays_after_s=3600", "progress=off"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
        console = None
        try:
            wait_for(lambda: manifest.exists() or sync.poll() is not None, 60, "the sync's manifest")
            console = Console(f"manifest.path={manifest}")
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(console.url)
            page.wait_for_selector(f'tr[data-job="{job}"] .state.running', timeout=60_000)
            first = _row_text(page, job, "progress")
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads
            page.wait_for_function(
                """([job, first]) => {
                    const cell = document.querySelector(`tr[data-job="${job}"] td.progress`);
                    return cell && cell.innerText !== first;
                }""", arg=[job, first], timeout=60_000)
            assert page.evaluate("window.__sameDocument") is True, "numbers changed without a reload"
            assert sync.poll() is None, "the numbers changed while the sync ran"
            shots = [_shot(page, "jobs-running.png")]

            page.goto(f"{console.base}/job?job={job}")
            page.wait_for_selector("#throughput-chart polyline", timeout=60_000)
            assert page.locator("#shard-bar rect").count() >= 1
            shots.append(_shot(page, "job-running.png"))

            out, err = sync.communicate(timeout=300)
            assert sync.returncode == 1, (out, err)  # failed: the refused and throttled keys
            page.wait_for_selector(".summary .state.failed", timeout=30_000)
            page.wait_for_selector("#failures tr.failure", timeout=30_000)
            rows = page.locator("#failures tr.failure").all_inner_texts()
            keys = sorted(re.split(r"\s+", row.strip())[0] for row in rows)
            assert keys == sorted([f"deny/{i:02d}.bin" for i in range(DENIED)]
                                  + [f"throttle/{i:02d}.bin" for i in range(THROTTLED)])
            throttled = next(r for r in rows if r.startswith("throttle/"))
            assert "Throttled" in throttled and re.search(r"\s3\s", throttled), throttled
            assert "PermissionDenied" in next(r for r in rows if r.startswith("deny/"))
            assert page.locator("#runs tbody tr").count() == 1
            assert page.locator("#throughput-chart polyline").count() == 1
            assert e2e_env.destination.secret_key not in page.content()
            shots.append(_shot(page, "job-finished.png"))

            page.goto(console.url)
            page.wait_for_selector(f'tr[data-job="{job}"] .state.failed', timeout=30_000)
            total = OK + DENIED + THROTTLED
            assert _row_text(page, job, "progress").split()[-1] == str(total)
            assert _row_text(page, job, "failed") == str(DENIED + THROTTLED)
            shots.append(_shot(page, "jobs-finished.png"))
            page.close()
        finally:
            if sync.poll() is None:
                sync.kill()
                sync.wait(30)
            if console is not None:
                console.stop()
    with capsys.disabled():
        print(f"\nconsole browser test: {time.monotonic() - started:.1f} s; screenshots: {', '.join(shots)}")
    assert all(os.path.getsize(shot) > 10_000 for shot in shots)
