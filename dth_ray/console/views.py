"""The console's HTML, rendered on the server from data.py's values: the jobs page and a job's page, each a
shell around one live part that console.js swaps in again every few seconds (the same functions render it).
Every value is escaped; no inline script or style (the page's Content-Security-Policy forbids them)."""

from __future__ import annotations

import time
from html import escape
from urllib.parse import urlencode

from dth_ray.console.chart import SHARD_STATES, rate_text, shards_bar_svg, shards_grid_svg, throughput_svg

REFRESH_MS = 3000


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _count(n: int) -> str:
    return f"{n:,}"


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} B"


def _seconds(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _when(epoch: float) -> str:
    if not epoch:
        return "—"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    return f'<time datetime="{iso}">{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))} UTC</time>'


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def _state(run: dict, now: float) -> str:
    state = run["state"]
    note = ""
    if run["stale"]:
        age = now - (run["heartbeat"] or run["started"])
        note = f"no heartbeat for {_seconds(age)}: its driver stopped"
    elif state in ("running", "planning") and run["heartbeat"]:
        note = f"updated {_seconds(now - run['heartbeat'])} ago"
    title = f' title="{_e(note)}"' if note else ""
    extra = f' <span class="note">{_e(note)}</span>' if note else ""
    return f'<span class="state {_e(state)}"{title}>{_e(state)}</span>{extra}'


def _progress(run: dict) -> str:
    pct = run["percent"]
    bar = f'<progress max="100" value="{pct:.1f}"></progress> ' if pct is not None else ""
    approx = "~" if run["state"] in ("running", "planning") else ""  # the planned total is an estimate until listed
    total = f" of {approx}{_count(run['objects_total'])}" if run["objects_total"] > run["objects_done"] else ""
    return f'{bar}<span class="pct">{_percent(pct)}</span> <span class="objects">{_count(run["objects_done"])}</span>{total}'


def _bytes_done(run: dict) -> str:
    total = f" of {_size(run['bytes_total'])}" if run["bytes_total"] > run["bytes_done"] else ""
    return f"{_size(run['bytes_done'])}{total}"


def page(title: str, part_url: str, part: str, below: str = "") -> str:
    """A whole page: the header, the live part (refreshed from `part_url`) and what stays put below it."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)} · dth-ray console</title>'
        '<link rel="stylesheet" href="/static/console.css"><script src="/static/console.js" defer></script>'
        '</head><body><header><a class="home" href="/">dth-ray console</a> <span class="readonly">read-only'
        '</span> <span id="freshness" class="freshness">loaded just now</span></header>'
        f'<main id="live" data-src="{_e(part_url)}" data-interval-ms="{REFRESH_MS}">{part}</main>'
        f"{below}</body></html>")


def jobs_part(jobs: list[dict], now: float) -> str:
    """The jobs table (the live part of the jobs page)."""
    if not jobs:
        return '<p class="empty">No job has run with this manifest yet.</p>'
    rows = []
    for job in jobs:
        run = job["latest"]
        link = "/job?" + urlencode({"job": job["job"]})
        rows.append(
            f'<tr class="job" data-job="{_e(job["job"])}">'
            f'<td><a href="{_e(link)}">{_e(job["job"])}</a></td>'
            f'<td class="stores">{_e(job["source"] or "—")} → {_e(job["destination"] or "—")}</td>'
            f'<td class="run">{run["run_id"]}</td><td>{_state(run, now)}</td>'
            f'<td class="progress">{_progress(run)}</td><td class="bytes">{_bytes_done(run)}</td>'
            f'<td class="rate">{_e(rate_text(run["bytes_per_s"]))}</td><td class="eta">{_seconds(run["eta_s"])}</td>'
            f'<td class="failed">{_count(run["failed"])}</td><td>{_when(run["started"])}</td>'
            f'<td>{_when(run["finished"])}</td></tr>')
    return ('<table id="jobs"><thead><tr><th>job</th><th>source → destination</th><th>run</th><th>state</th>'
            '<th>objects done</th><th>bytes done</th><th>rate</th><th>ETA</th><th>failed</th><th>started</th>'
            f'<th>ended</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="asof" data-now="{now:.3f}">{len(jobs)} jobs, as of {_when(now)}</p>')


def jobs_page(jobs: list[dict], now: float) -> str:
    return page("jobs", "/part/jobs", "<h1>Jobs</h1>" + jobs_part(jobs, now))


def _summary(d: dict) -> str:
    run, now = d["run"], d["now"]
    age = d["heartbeat_age_s"]
    age_text = f"{_seconds(age)} ago" if age is not None else "never (no live record)"
    items = [
        ("state", _state(run, now)), ("run", _e(run["run_id"])),
        ("objects done", _progress(run)), ("bytes done", _bytes_done(run)),
        ("copied · skipped · failed", f'{_count(run["copied"])} · {_count(run["skipped"])} · '
                                     f'<span class="failed">{_count(run["failed"])}</span>'),
        ("rate", f'{_e(rate_text(run["bytes_per_s"]))} · {run["objects_per_s"]:,.0f} objects/s'),
        ("ETA", _seconds(run["eta_s"])), ("shards done", f'{_count(run["shards_done"])} of {_count(run["shards_total"])}'),
        ("started", _when(run["started"])), ("ended", _when(run["finished"])),
        ("duration", _seconds(run["duration_s"])),
        ("executions", f'{run["executions"]}{" (resumed)" if run["resumed"] else ""}'),
        ("numbers from the driver", _e(age_text)),
    ]
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<section id="summary"><h2>Run {run["run_id"]}</h2><dl class="summary">{cells}</dl></section>'


def _shards(d: dict) -> str:
    counts = {state: sum(s["state"] == state for s in d["shards"]) for state in SHARD_STATES}
    legend = " ".join(f'<span class="legend {state}">{_count(counts[state])} {state}</span>' for state in SHARD_STATES)
    return (f'<section id="shards"><h2>Shards</h2><p class="legend-row">{legend}</p>{shards_bar_svg(counts)}'
            f'{shards_grid_svg(d["shards"])}</section>')


def _chart(d: dict) -> str:
    return (f'<section id="throughput"><h2>Throughput</h2>{throughput_svg(d["throughput"], d["run"]["started"])}'
            "</section>")


def _failures(d: dict) -> str:
    job, run = d["job"], d["run"]["run_id"]
    rows = "".join(
        f'<tr class="failure"><td class="key"><code>{_e(f["key"])}</code></td><td>{_e(f["error_class"])}</td>'
        f'<td>{_e(f["code"] or "—")}</td><td class="attempts">{f["attempts"]}</td>'
        f'<td class="message">{_e(f["message"])}</td></tr>' for f in d["failures"])
    pager = []
    if d["failures_after"]:
        pager.append(f'<a href="{_e("/job?" + urlencode({"job": job, "run": run}))}">first page</a>')
    if d["failures_next"]:
        nxt = "/job?" + urlencode({"job": job, "run": run, "after": d["failures_next"]})
        pager.append(f'<a class="next" href="{_e(nxt)}">next {len(d["failures"])} →</a>')
    body = (f'<table id="failures"><thead><tr><th>key</th><th>error</th><th>code</th><th>attempts</th>'
            f'<th>message</th></tr></thead><tbody>{rows}</tbody></table>' if rows
            else '<p class="empty">No failed key' + (" after this one" if d["failures_after"] else "") + ".</p>")
    where = f' after <code>{_e(d["failures_after"])}</code>' if d["failures_after"] else ""
    return (f'<section id="failure-list"><h2>Failed keys{where}</h2><p>{_count(d["run"]["failed"])} failed in '
            f'run {run}; key order, {len(d["failures"])} shown.</p>{body}<p class="pager">{" · ".join(pager)}</p>'
            "</section>")


def _runs(d: dict) -> str:
    rows = []
    for run in d["runs"]:
        link = "/job?" + urlencode({"job": d["job"], "run": run["run_id"]})
        mark = ' class="chosen"' if run["run_id"] == d["run"]["run_id"] else ""
        rows.append(
            f'<tr{mark}><td><a href="{_e(link)}">{run["run_id"]}</a></td><td>{_state(run, d["now"])}</td>'
            f'<td>{_when(run["started"])}</td><td>{_seconds(run["duration_s"])}</td>'
            f'<td>{_count(run["objects_done"])}</td><td>{_count(run["copied"])}</td><td>{_count(run["skipped"])}</td>'
            f'<td>{_count(run["failed"])}</td><td>{_size(run["bytes_done"])}</td>'
            f'<td>{_e(rate_text(run["bytes_per_s"]))}</td>'
            f'<td>{"yes, " + str(run["executions"]) + " executions" if run["resumed"] else "no"}</td></tr>')
    return ('<section id="run-history"><h2>Runs</h2><table id="runs"><thead><tr><th>run</th><th>state</th>'
            '<th>started</th><th>duration</th><th>objects</th><th>copied</th><th>skipped</th><th>failed</th>'
            '<th>bytes</th><th>rate</th><th>resumed</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def job_part(d: dict) -> str:
    """A job's live part: the chosen run's summary, shards, throughput and failures, and the runs history."""
    stores = f'{_e(d["source"] or "—")} → {_e(d["destination"] or "—")}'
    return (f'<h1>{_e(d["job"])}</h1><p class="stores">{stores}</p>{_summary(d)}{_shards(d)}{_chart(d)}'
            f'{_failures(d)}{_runs(d)}<p class="asof" data-now="{d["now"]:.3f}">as of {_when(d["now"])}</p>')


def _commands(d: dict) -> str:
    blocks = []
    for name, label in (("status", "Status"), ("verify", "Verify"), ("resume", "Resume (the same sync again)")):
        line = d["commands"][name]
        if not line:
            blocks.append(f'<h3>{_e(label)}</h3><p class="note">This job\'s stores were recorded by an earlier '
                          "release: use the command it was started with.</p>")
            continue
        blocks.append(f'<h3>{_e(label)}</h3><div class="command"><pre id="cmd-{name}">{_e(line)}</pre>'
                      f'<button type="button" class="copy" data-copy="cmd-{name}">copy</button></div>')
    return f'<section id="commands"><h2>Commands</h2>{"".join(blocks)}</section>'


def job_page(d: dict, part_url: str) -> str:
    return page(d["job"], part_url, job_part(d), _commands(d))


def message_page(title: str, text: str) -> str:
    """A page with one line (not found, refused, a manifest error)."""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{_e(title)} · dth-ray console</title><link rel="stylesheet" href="/static/console.css">'
            f'</head><body><header><a class="home" href="/">dth-ray console</a></header><main><h1>{_e(title)}</h1>'
            f'<p>{_e(text)}</p></main></body></html>')
