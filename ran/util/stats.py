"""The statistics of every result: one place for the intervals and tests.

* :func:`wilson_interval`, :func:`accuracy_summary`, :func:`above`: accuracies of
  forced-choice episodes with 95% Wilson intervals, and "above every control".
* :func:`mean_ci`: a mean with its Student-t 95% CI (generation statistics).
* :func:`median_ci`: a percentile-bootstrap 95% CI of a median (timing ratios).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as scipy_stats


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``k / n``."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_summary(correct: torch.Tensor, chance: float) -> dict:
    """Accuracy, its Wilson 95% CI and chance for a boolean vector of outcomes."""
    k, n = int(correct.sum()), int(correct.numel())
    lo, hi = wilson_interval(k, n)
    return {"acc": k / n, "ci_low": lo, "ci_high": hi, "correct": k, "n": n, "chance": chance}


def above(acc: dict, *controls: dict) -> bool:
    """Is the accuracy summary ``acc`` above every control, with non-overlapping 95% CIs
    (its lower bound above each control's upper bound)?"""
    if not controls:
        raise ValueError("above() needs at least one control to compare with")
    return acc["ci_low"] > max(c["ci_high"] for c in controls)


def mean_ci(values: list[float]) -> dict:
    """Mean and Student-t 95% CI (None with fewer than two values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return {"mean": float(x.mean()), "ci95": None, "n": len(x)}
    half = scipy_stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return {"mean": float(x.mean()), "ci95": [x.mean() - half, x.mean() + half], "n": len(x)}


def median_ci(x, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the median of ``x``."""
    meds = np.median(np.random.default_rng(seed).choice(x, (n_boot, len(x))), axis=1)
    return float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))
