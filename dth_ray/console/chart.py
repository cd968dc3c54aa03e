"""Server-side SVG for the console: a run's throughput over time and its shards (a grid of cells, and a bar of
done / failures / running / pending). Geometry in attributes, colours in console.css (the page's CSP admits no
inline style); every text escaped."""

from __future__ import annotations

from html import escape

CHART_W, CHART_H = 720, 220
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 16, 16, 36
GRID_MAX_CELLS = 4000  # beyond this a run's shards show as the bar only
_CELL, _GAP, _COLUMNS = 10, 2, 60
SHARD_STATES = ("done", "failures", "running", "pending")


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n at or above `value` (an axis maximum)."""
    if value <= 0:
        return 1.0
    scale = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    while value < scale:
        scale /= 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * scale:
            return step * scale
    return 10 * scale


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate_text(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e6:,.1f} MB/s"


def throughput_svg(points: list[tuple[float, float, float]], started: float) -> str:
    """A line chart of copied MB/s over the run's time (`points`: epoch s, bytes/s, objects/s)."""
    head = (f'<svg class="chart" id="throughput-chart" role="img" viewBox="0 0 {CHART_W} {CHART_H}" '
            f'width="{CHART_W}" height="{CHART_H}" aria-label="copy throughput over time">')
    if not points:
        return (head + f'<text class="axis-label" x="{CHART_W // 2}" y="{CHART_H // 2}" text-anchor="middle">'
                "no throughput samples yet</text></svg>")
    t0 = min(started or points[0][0], points[0][0])
    span = max(points[-1][0] - t0, 1.0)
    top = _nice_ceiling(max(p[1] for p in points) / 1e6)
    inner_w, inner_h = CHART_W - _PAD_L - _PAD_R, CHART_H - _PAD_T - _PAD_B

    def xy(t: float, rate: float) -> tuple[float, float]:
        return (_PAD_L + inner_w * (t - t0) / span, _PAD_T + inner_h * (1 - min(rate / 1e6 / top, 1.0)))

    parts = [head, f'<rect class="plot" x="{_PAD_L}" y="{_PAD_T}" width="{inner_w}" height="{inner_h}"/>']
    for i in range(5):
        value = top * i / 4
        y = _PAD_T + inner_h * (1 - i / 4)
        parts.append(f'<line class="grid" x1="{_PAD_L}" y1="{y:.1f}" x2="{CHART_W - _PAD_R}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis-label" x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{value:g}</text>')
    for i in range(5):
        t = t0 + span * i / 4
        x = _PAD_L + inner_w * i / 4
        parts.append(f'<text class="axis-label" x="{x:.1f}" y="{CHART_H - _PAD_B + 16}" text-anchor="middle">'
                     f'{escape(_duration(t - t0))}</text>')
    parts.append(f'<text class="axis-label" x="12" y="{_PAD_T + inner_h / 2:.1f}" '
                 f'transform="rotate(-90 12 {_PAD_T + inner_h / 2:.1f})" text-anchor="middle">MB/s</text>')
    parts.append(f'<text class="axis-label" x="{_PAD_L + inner_w / 2:.1f}" y="{CHART_H - 4}" '
                 'text-anchor="middle">time since the run started</text>')
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(t, rate) for t, rate, _ in points))
    parts.append(f'<polyline class="line" points="{coords}"><title>copied MB/s</title></polyline>')
    for t, rate, objects in points[-1:]:
        x, y = xy(t, rate)
        parts.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>'
                     f'{escape(rate_text(rate))}, {objects:,.0f} objects/s</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def shards_bar_svg(counts: dict[str, int]) -> str:
    """One bar: the run's shards by state, in proportion."""
    total = sum(counts.get(s, 0) for s in SHARD_STATES)
    parts = [f'<svg class="shard-bar" id="shard-bar" role="img" viewBox="0 0 {CHART_W} 18" width="{CHART_W}" '
             f'height="18" aria-label="shards by state">']
    x = 0.0
    for state in SHARD_STATES:
        count = counts.get(state, 0)
        if not count or not total:
            continue
        width = CHART_W * count / total
        parts.append(f'<rect class="shard {state}" x="{x:.2f}" y="0" width="{width:.2f}" height="18">'
                     f'<title>{count:,} {state}</title></rect>')
        x += width
    parts.append("</svg>")
    return "".join(parts)


def shards_grid_svg(shards: list[dict]) -> str:
    """One cell per shard (in shard order), coloured by state, with its prefix as a tooltip; '' when there are
    more than GRID_MAX_CELLS."""
    if not shards or len(shards) > GRID_MAX_CELLS:
        return ""
    rows = -(-len(shards) // _COLUMNS)
    step = _CELL + _GAP
    width, height = min(len(shards), _COLUMNS) * step, rows * step
    parts = [f'<svg class="shard-grid" id="shard-grid" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" aria-label="{len(shards)} shards">']
    for i, shard in enumerate(shards):
        x, y = (i % _COLUMNS) * step, (i // _COLUMNS) * step
        state = shard["state"] if shard["state"] in SHARD_STATES else "pending"
        parts.append(f'<rect class="shard {state}" x="{x}" y="{y}" width="{_CELL}" height="{_CELL}">'
                     f'<title>{escape(shard["prefix"] or shard["shard"])}: {state}, {shard["listed"]:,} listed'
                     f'</title></rect>')
    parts.append("</svg>")
    return "".join(parts)
