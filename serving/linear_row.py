"""One row through an impute → scale → LogisticRegression pipeline, in plain Python floats.

A single-row request through the numpy `linear` path spends more time in numpy than in
arithmetic, and every indexing or reduction it makes releases the GIL and takes it back: on a
server whose prediction-log writer thread is busy, each of those hand-backs can wait out the
writer's switch interval. Four features and three classes are a dozen multiplications, which
Python does faster than numpy can set up one of its calls, without ever letting go of the GIL.

The steps are scikit-learn's own, in its order, unfolded (`(x - mean) / scale`, then
`x · coef + intercept`, then softmax or, for two classes, the logistic function), so the
answer matches `predict_proba` to the last bits of the dot product. Anything this does not
compute exactly as scikit-learn would (a non-finite intermediate, an overflowing exponent)
answers None, and the caller scores the row with numpy instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul
from typing import Any

Floats = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Scaling:
    """One fitted StandardScaler: `mean` subtracted, then divided by `scale` (either None when
    the scaler was fitted without it)."""

    mean: Floats | None
    scale: Floats | None


@dataclass(frozen=True, slots=True)
class LinearRow:
    """A fitted linear classifier on a subset of a row's columns.

    `positions` picks the model's columns from the row, `fill` replaces NaN cells (the fitted
    median imputer's statistics), `scalings` apply in order, `coef` holds one weight vector per
    class (one vector alone for a binary model) and `intercept` its bias.
    """

    positions: tuple[int, ...]
    fill: Floats | None
    scalings: tuple[Scaling, ...]
    coef: tuple[Floats, ...]
    intercept: Floats

    def __call__(self, row: Sequence[Any]) -> tuple[int, list[float]] | None:
        """The index of the most probable class and every class's probability, or None when
        the row has to go through numpy to be answered exactly as scikit-learn would."""
        x = [row[i] for i in self.positions]
        if self.fill is not None:
            x = [v if v == v else f for v, f in zip(x, self.fill, strict=True)]
        for step in self.scalings:
            if step.mean is not None:
                x = [v - m for v, m in zip(x, step.mean, strict=True)]
            if step.scale is not None:
                x = [v / s for v, s in zip(x, step.scale, strict=True)]
        z = [sum(map(mul, x, w)) + b for w, b in zip(self.coef, self.intercept, strict=True)]
        # inf - inf and nan - nan are nan: numpy propagates them into a refused answer.
        if not all(v - v == 0.0 for v in z):
            return None
        if len(z) == 1:
            try:
                p = 1.0 / (1.0 + math.exp(-z[0]))
            except OverflowError:  # where numpy's exp would give inf: let numpy answer
                return None
            probs = [1.0 - p, p]
        else:
            top = max(z)
            e = [math.exp(v - top) for v in z]
            total = sum(e)
            probs = [v / total for v in e]
        return probs.index(max(probs)), probs
