"""Write prometheusrule.yaml: alert-rules.yaml wrapped in a PrometheusRule for the Prometheus operator.

    python deploy/observability/sync_prometheusrule.py

alert-rules.yaml stays the one source (promtool checks and tests it, plain Prometheus loads it);
tests/deploy fails when the generated file is out of date.
"""
from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "alert-rules.yaml"
TARGET = HERE / "prometheusrule.yaml"
HEADER = ("# Generated from alert-rules.yaml by sync_prometheusrule.py: edit that file, then run the script.\n"
          "# A Prometheus installed by kube-prometheus-stack selects rules by its release label: add it with a\n"
          "# patch if yours does (see deploy/README.md).\n")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, so the output reads like the source."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                             style="|" if "\n" in s else None))


def render(source: Path = SOURCE) -> str:
    """The PrometheusRule manifest holding the groups of `source`, as YAML text."""
    groups = yaml.safe_load(source.read_text())["groups"]
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "facestream"}, "spec": {"groups": groups}}
    return HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=120)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")
