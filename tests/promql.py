"""The Grafana dashboard's PromQL as data, and Prometheus's matching and labelling rules to check it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dth-ray-dashboard.json"

_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_SELECTOR = re.compile(rf"(?<![\w:.])({_NAME})(?![\w:])\s*(\{{[^}}]*\}})?(\s*\()?")
_LABEL_VALUES = re.compile(rf"^label_values\(\s*({_NAME})\s*,\s*({_NAME})\s*\)$")


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(dashboard: dict) -> list[tuple[str, dict]]:
    """(`panel title/refId`, target) for every query of every panel."""
    return [(f"{p['title']}/{t['refId']}", t) for p in dashboard["panels"] for t in p["targets"]]


def variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def fill(expr: str, values: dict[str, str]) -> str:
    """`expr` with Grafana's `$name` and `${name}` replaced (longest first: a name may prefix another)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


def used_variables(expr: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z_]\w*)", expr))


def grouping(expr: str) -> set[str]:
    """Labels named in `by (...)` / `without (...)` clauses."""
    return {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def selectors(expr: str) -> list[Selector]:
    """Every series selector of `expr` (metric name and label matchers); function names are skipped."""
    bare = re.sub(r"\[[^\]]*\]", "", _GROUPING.sub("", expr))  # range windows and grouping clauses out
    out = []
    for name, body, call in _SELECTOR.findall(bare):
        if call and not body:
            continue  # rate(, sum(, histogram_quantile(...
        out.append(Selector(name, tuple(_MATCHER.findall(body or ""))))
    return out


def legend_labels(legend_format: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend_format))


def label_values_query(query: str) -> tuple[str, str]:
    """(metric, label) of a Grafana `label_values(metric, label)` variable query."""
    match = _LABEL_VALUES.match(query.strip())
    assert match, query
    return match[1], match[2]


def matches(labels: dict[str, str], matchers: tuple[tuple[str, str, str], ...]) -> bool:
    """Prometheus's matcher semantics: a missing label is the empty string; regexes are fully anchored."""
    for label, op, value in matchers:
        have = labels.get(label, "")
        if op == "=" and have != value or op == "!=" and have == value:
            return False
        if op in ("=~", "!~") and (re.fullmatch(value, have) is not None) != (op == "=~"):
            return False
    return True


def scrape_labels(scraped: dict[str, str], target: dict[str, str],
                  honor_labels: bool = False) -> dict[str, str]:
    """The labels Prometheus stores for a scraped series: the target's labels (job, instance, file-SD labels)
    win, and with honor_labels off a scraped label of the same name is kept as `exported_<name>`; labels with
    an empty value are dropped."""
    out = dict(scraped)
    for name, value in target.items():
        if name in out and not honor_labels:
            out["exported_" + name] = out.pop(name)
        if name not in out or not honor_labels:
            out[name] = value
    return {k: v for k, v in out.items() if v != ""}


def parse_exposition(text: str) -> list[tuple[str, dict[str, str]]]:
    """(series name, labels) for every sample of a Prometheus text exposition, read by prometheus_client's
    parser (counter samples end in _total, histogram samples in _bucket/_sum/_count)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(text)
    return [(sample.name, dict(sample.labels)) for family in families for sample in family.samples]
