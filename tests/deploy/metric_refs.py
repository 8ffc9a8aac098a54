"""Which metric names the Grafana dashboard and the alert rules use, and which shared/metrics.py declares.

    referenced_metric_names() -> set[str]   # e.g. {"facestream_process_seconds_bucket", ...}
    declared_metric_names() -> set[str]     # every name a scrape of the services can show

Both are exposition names, as a scrape of /metrics shows them: a Histogram `x` appears as x_bucket,
x_sum, x_count (and x_created); a Counter as x_total (and x_created). The static test compares the two
sets; a live test can compare `referenced_metric_names()` with what running services really export.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "observability" / "grafana-dashboard.json"
ALERT_RULES = REPO / "deploy" / "observability" / "alert-rules.yaml"
METRICS_MODULE = REPO / "shared" / "metrics.py"

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier not glued to a digit or a dot (so 1e3 and 5m are not names).
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "start", "end", "atan2"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in one PromQL expression (Grafana variables allowed): the identifiers that are not
    functions, keywords, label names or durations."""
    s = _STRINGS.sub('""', expr)
    s = _GRAFANA_VARS.sub("", s)
    s = _MATCHERS.sub("", s)
    s = _RANGES.sub("", s)
    s = _LABEL_LISTS.sub("", s)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(0)
        if word.lower() in _KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue  # a keyword, or a function / aggregation call
        names.add(word)
    return names


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL expression of every panel (rows included) of the dashboard."""
    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))
    dash = json.loads(path.read_text())
    return [t["expr"] for p in panels(dash["panels"]) for t in p.get("targets", []) if t.get("expr")]


def dashboard_variable_queries(path: Path = DASHBOARD) -> list[str]:
    dash = json.loads(path.read_text())
    out = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            out.append(q.get("query", "") if isinstance(q, dict) else q)
    return out


def alert_rule_queries(path: Path = ALERT_RULES) -> list[str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [str(r["expr"]) for g in groups for r in g["rules"]]


def referenced_metric_names() -> set[str]:
    """Every metric name that the Grafana dashboard and the alert rules query."""
    names: set[str] = set()
    for expr in dashboard_queries() + alert_rule_queries():
        names |= promql_metric_names(expr)
    for q in dashboard_variable_queries():
        m = _LABEL_VALUES.search(q)
        names |= {m.group(1)} if m else promql_metric_names(q)
    return names


def declared_metric_names(path: Path = METRICS_MODULE) -> set[str]:
    """The exposition names of every Counter, Gauge, Histogram and Summary declared in shared/metrics.py,
    read from its source (no import, so no registry side effects)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            continue
        name, kind = node.args[0].value, node.func.id
        if kind == "Counter":
            base = name[: -len("_total")] if name.endswith("_total") else name
            names |= {base + "_total", base + "_created"}
        elif kind == "Gauge":
            names.add(name)
        elif kind == "Histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count", name + "_created"}
        elif kind == "Summary":
            names |= {name, name + "_sum", name + "_count", name + "_created"}
    return names
