"""Latency percentiles from the log-scale histogram: within ALPHA of numpy's (percentile_cont's)
exact interpolated percentiles. The buckets are computed here with the formula the SQL uses."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from lifecycle.core.store import histogram

QS = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)


def _bins(latencies: np.ndarray) -> list[tuple[int, int]]:
    clamped = np.clip(latencies, histogram.LOWEST_MS, histogram.HIGHEST_MS)
    keys = np.ceil(np.log(clamped) / histogram.LN_GAMMA).astype(int)
    return list(Counter(keys.tolist()).items())


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_within_alpha_of_the_exact_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # A long tail, as latencies have: most around 2 ms, some at hundreds.
    latencies = np.concatenate(
        [rng.lognormal(0.7, 0.6, 5000), rng.uniform(50, 400, 60), rng.uniform(0.01, 0.1, 10)]
    )
    n, values = histogram.percentiles(_bins(latencies), QS)

    assert n == len(latencies)
    exact = np.quantile(latencies, QS)
    for value, truth in zip(values, exact, strict=True):
        assert abs(value - truth) <= histogram.ALPHA * truth


def test_the_bound_is_tight_at_the_edges_of_a_bucket() -> None:
    k = 40
    top, bottom = histogram.GAMMA**k, histogram.GAMMA ** (k - 1) * 1.000001
    for x in (top, bottom):
        [(key, _)] = _bins(np.array([x]))
        assert key == k
        assert histogram.bucket_value(key) == pytest.approx(x, rel=histogram.ALPHA)


def test_one_value_and_no_value() -> None:
    assert histogram.percentiles([(10, 3)], [0.5, 0.99]) == (
        3,
        [histogram.bucket_value(10)] * 2,
    )
    n, values = histogram.percentiles([], [0.5])
    assert n == 0 and math.isnan(values[0])


def test_interpolates_between_ranks_like_percentile_cont() -> None:
    # Two values: the median is halfway between their buckets' values.
    low, high = histogram.bucket_value(5), histogram.bucket_value(50)
    n, [median] = histogram.percentiles([(50, 1), (5, 1)], [0.5])
    assert n == 2
    assert median == pytest.approx((low + high) / 2)
