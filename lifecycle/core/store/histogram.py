"""Latency percentiles from a log-scale histogram counted in the database.

A latency x (ms) falls in bucket k = ceil(ln(x) / ln(GAMMA)), that is (GAMMA^(k-1), GAMMA^k],
and the bucket stands for 2 GAMMA^k / (GAMMA + 1): every latency of the bucket is within
ALPHA (relative) of that value. A percentile is read at its ranks from the cumulative counts
and interpolated between the two ranks as `percentile_cont` does, so it is within ALPHA of the
exact percentile (a convex combination of two values each within ALPHA of theirs). GROUP BY
version and bucket replaces a sort of every latency: a few hundred groups, whatever the rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
# Latencies are clamped into this range (ms) before bucketing: the logarithm needs x > 0, and
# a NaN or infinite latency lands in the top bucket instead of failing the query.
LOWEST_MS = 1e-3
HIGHEST_MS = 1e7


def bucket_value(k: int) -> float:
    """The value bucket k stands for."""
    return 2 * GAMMA**k / (GAMMA + 1)


def percentiles(bins: Sequence[tuple[int, int]], qs: Sequence[float]) -> tuple[int, list[float]]:
    """(n, one value per q) from (bucket, count) pairs of one version, in any order."""
    ordered = sorted(bins)
    keys = np.array([k for k, _ in ordered], dtype="int64")
    cumulative = np.cumsum([n for _, n in ordered], dtype="int64")
    n = int(cumulative[-1]) if len(cumulative) else 0
    if n == 0:
        return 0, [math.nan] * len(qs)

    def at(rank: int) -> float:
        # The bucket holding the 0-based rank: the first whose cumulative count exceeds it.
        return bucket_value(int(keys[np.searchsorted(cumulative, rank, side="right")]))

    values = []
    for q in qs:
        h = q * (n - 1)
        lo, hi = math.floor(h), math.ceil(h)
        low = at(lo)
        values.append(low + (h - lo) * (at(hi) - low))
    return n, values
