"""The alert rules pass promtool and their unit tests, the PrometheusRule carries exactly them, and the
dashboard and the rules query only metrics that shared/metrics.py declares, covering what operators watch."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess

import pytest
import yaml

from deploy_k8s import REPO, tool
from metric_refs import (DASHBOARD, alert_rule_queries, dashboard_queries, declared_metric_names,
                         promql_metric_names, referenced_metric_names)

OBSERVABILITY = REPO / "deploy" / "observability"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_alert_rules():
    out = _promtool("check", "rules", str(OBSERVABILITY / "alert-rules.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_of_the_alerts_pass():
    out = _promtool("test", "rules", str(OBSERVABILITY / "alert-rules.test.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_prometheusrule_is_generated_from_the_alert_rules():
    spec = importlib.util.spec_from_file_location("sync_prometheusrule", OBSERVABILITY / "sync_prometheusrule.py")
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert (OBSERVABILITY / "prometheusrule.yaml").read_text() == sync.render(), \
        "stale: run python deploy/observability/sync_prometheusrule.py"
    groups = yaml.safe_load((OBSERVABILITY / "prometheusrule.yaml").read_text())["spec"]["groups"]
    assert groups == yaml.safe_load((OBSERVABILITY / "alert-rules.yaml").read_text())["groups"]


def test_the_issue_asks_for_these_alerts():
    alerts = {r["alert"] for g in yaml.safe_load((OBSERVABILITY / "alert-rules.yaml").read_text())["groups"]
              for r in g["rules"]}
    assert {"FacestreamConsumerLagGrowing", "FacestreamDeadLetterRate", "FacestreamEndToEndLatencyOverBudget",
            "FacestreamCameraSilent", "FacestreamStageWithoutConsumer"} <= alerts


def test_dashboard_and_alerts_use_only_declared_metrics():
    referenced = referenced_metric_names()
    assert referenced, "found no metric names at all: the parser is broken"
    unknown = referenced - declared_metric_names()
    assert unknown == set(), f"not declared in shared/metrics.py: {sorted(unknown)}"


def test_the_metric_name_parser_skips_functions_labels_and_durations():
    expr = ('histogram_quantile(0.99, sum by (le, stage) (rate(facestream_process_seconds_bucket'
            '{stage=~"$stage", le!="+Inf"}[$__rate_interval] offset 5m))) > 1e3 and on(stage) '
            'time() - max without (pod) (facestream_loop_heartbeat_timestamp_seconds) > bool 60')
    assert promql_metric_names(expr) == {"facestream_process_seconds_bucket",
                                         "facestream_loop_heartbeat_timestamp_seconds"}


def test_declared_names_follow_the_exposition_format():
    declared = declared_metric_names()
    assert {"facestream_messages_in_total", "facestream_process_seconds_bucket",
            "facestream_consumer_lag"} <= declared
    assert "facestream_messages_in_total_total" not in declared


def test_the_dashboard_shows_what_the_issue_asks_for():
    queries = dashboard_queries()
    used = {name for q in queries for name in promql_metric_names(q)}
    assert {
        "facestream_messages_in_total",                 # per-stage throughput
        "facestream_process_seconds_bucket",            # processing latency
        "facestream_batch_size_sum", "facestream_batch_size_count",  # batch sizes
        "facestream_stale_dropped_total",               # stale drops
        "facestream_dead_lettered_total",               # dead letters
        "facestream_consumer_lag",                      # consumer lag
        "facestream_gallery_identities",                # gallery size
        "facestream_identity_events_total",             # events per camera
        "facestream_camera_state",                      # camera state
    } <= used
    e2e = [q for q in queries if "facestream_end_to_end_latency_seconds_bucket" in q]
    assert {m for q in e2e for m in re.findall(r"histogram_quantile\((0\.\d+)", q)} >= {"0.5", "0.95", "0.99"}
    assert any("camera_id" in q for q in queries if "facestream_identity_events_total" in q)


def test_dashboard_panels_are_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool parses rule expressions: wrap each query (Grafana variables filled in) as a recording rule.
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$camera": ".*"}
    rules = []
    for i, q in enumerate(dashboard_queries()):
        for var, value in fill.items():
            q = q.replace(var, value)
        assert "$" not in q, f"unknown Grafana variable in {q}"
        rules.append({"record": f"dashboard:query_{i}", "expr": q})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = _promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_expressions_are_parsed_too():
    # The alert rules feed referenced_metric_names(): make sure the parser saw every expression.
    assert len(alert_rule_queries()) >= 5
    assert all(promql_metric_names(q) for q in alert_rule_queries())
