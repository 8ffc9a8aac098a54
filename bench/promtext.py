"""Read a service's /metrics once and answer from the samples: sums by label and histogram quantiles.

Histogram quantiles interpolate linearly inside the bucket that holds the rank, as Prometheus's
histogram_quantile() does; the answer is only as fine as the buckets (shared/metrics.py declares them).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            out.append(Sample(m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def buckets(samples: list[Sample], name: str, label: str | None = None,
            values: set[str] | None = None) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of histogram `name`, summed over the series whose `label` is in
    `values` (every series when no label is given)."""
    out: dict[float, float] = {}
    for s in samples:
        if s.name != name + "_bucket":
            continue
        if label is not None and s.labels.get(label) not in (values or set()):
            continue
        le = float(s.labels["le"])
        out[le] = out.get(le, 0.0) + s.value
    return out


def subtract(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    """The observations made between two scrapes of the same histogram."""
    return {le: after[le] - before.get(le, 0.0) for le in after}


def quantile(cumulative: dict[float, float], q: float) -> float | None:
    """The q-quantile (0-1) of a cumulative histogram; None when it holds no observation. A rank in the
    +Inf bucket answers with the largest finite bound (Prometheus does the same)."""
    les = sorted(cumulative)
    if not les or cumulative[les[-1]] <= 0:
        return None
    rank = q * cumulative[les[-1]]
    prev_le, prev_count = 0.0, 0.0
    for le in les:
        count = cumulative[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le
