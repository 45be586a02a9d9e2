"""Figures the Overview page reads from Prometheus text: the served model, request and error
rates, latency percentiles. Pure functions over `prometheus_client.parser`'s samples.

Rates need two reads: a `Snapshot` is kept between page runs and the rate is the counter's
growth over the time between them. Percentiles are estimated from the latency histogram's
cumulative buckets by linear interpolation inside the bucket (as PromQL's
histogram_quantile), so they are only as fine as the buckets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

MODEL_INFO = "lifecycle_model_info"
REQUESTS = "lifecycle_requests_total"
LATENCY_BUCKET = "lifecycle_request_duration_seconds_bucket"
# The endpoints that score. The UI's own reads (/model, /ready, /metrics...) are requests too,
# and would make an idle API look busy.
SCORING_ENDPOINTS = frozenset({"/predict", "/invocations", "/predict/async", "/batch"})


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def served_models(samples: Iterable[Sample]) -> list[dict[str, str]]:
    """The labels of every model-info series at 1: the version(s) served now."""
    return [dict(s.labels) for s in samples if s.name == MODEL_INFO and s.value == 1]


@dataclass(frozen=True)
class Snapshot:
    """The counters one read of /metrics gives: requests by status class, latency buckets."""

    at: float
    requests: Mapping[str, float] = field(default_factory=dict)  # "2xx" / "4xx" / "5xx"
    buckets: Mapping[float, float] = field(default_factory=dict)  # le -> cumulative count

    @property
    def total(self) -> float:
        return sum(self.requests.values())


def snapshot(samples: Iterable[Sample], at: float) -> Snapshot:
    """Scoring requests and latency buckets, summed over endpoints and methods."""
    requests: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for s in samples:
        if s.labels.get("endpoint") not in SCORING_ENDPOINTS:
            continue
        if s.name == REQUESTS:
            status = s.labels.get("status", "")
            kind = f"{status[:1]}xx" if status[:1].isdigit() else "other"
            requests[kind] = requests.get(kind, 0.0) + s.value
        elif s.name == LATENCY_BUCKET:
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
    return Snapshot(at, requests, buckets)


@dataclass(frozen=True)
class Rates:
    seconds: float
    requests_per_second: float
    error_share: float | None  # 5xx among the requests in the interval
    refused_share: float | None  # 4xx among them


def rates(before: Snapshot, after: Snapshot) -> Rates | None:
    """Growth between two reads; None when they cannot be compared (same instant, or a
    counter went down: the API restarted in between)."""
    seconds = after.at - before.at
    if seconds <= 0:
        return None
    delta = {k: after.requests.get(k, 0.0) - before.requests.get(k, 0.0) for k in after.requests}
    if any(v < 0 for v in delta.values()) or after.total < before.total:
        return None
    n = sum(delta.values())
    return Rates(
        seconds=seconds,
        requests_per_second=n / seconds,
        error_share=delta.get("5xx", 0.0) / n if n else None,
        refused_share=delta.get("4xx", 0.0) / n if n else None,
    )


def bucket_delta(before: Snapshot, after: Snapshot) -> dict[float, float] | None:
    """The histogram of the requests between two reads; None after a restart."""
    delta = {le: count - before.buckets.get(le, 0.0) for le, count in after.buckets.items()}
    return None if any(v < 0 for v in delta.values()) else delta


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile (0..1) of a cumulative histogram {upper bound: count}, interpolated
    linearly inside its bucket; None for an empty histogram. A quantile in the +Inf bucket
    is reported as the largest finite bound (the histogram knows nothing above it)."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    bounds: Sequence[float] = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower
