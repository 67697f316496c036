"""The statistics of every result: one place for the intervals and tests.

* :func:`wilson_interval`, :func:`accuracy_summary`, :func:`above`: accuracies of
  forced-choice episodes with 95% Wilson intervals, and "above every control".
* :func:`mean_ci`: a mean with its Student-t 95% CI (generation statistics).
* :func:`median_ci`, :func:`bootstrap_median_ci`: percentile-bootstrap CIs of a median
  (timing ratios, benchmarks).
* notebook 05's tests: :func:`anova_oneway` (accuracy across seeds), :func:`chi2_homogeneity`,
  :func:`cochran_q` (paired outcomes), :func:`spearman_bootstrap` (rank correlation with a
  bootstrap CI over pairs).
* :func:`fit_logistic`: an L2-regularised logistic regression on standardised features
  (the agent's output gate, the decoded readout's fitted read gate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats


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
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return {"mean": float(x.mean()), "ci95": [x.mean() - half, x.mean() + half], "n": len(x)}


def median_ci(x, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the median of ``x``."""
    meds = np.median(np.random.default_rng(seed).choice(x, (n_boot, len(x))), axis=1)
    return float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))


def bootstrap_median_ci(x, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap CI of the median of ``x``.

    Parameters
    ----------
    x : array_like
        One-dimensional sample (at least one value).
    n_boot, seed, level
        Resamples, their seed, and the coverage of the interval.

    Returns
    -------
    (float, float)
        Lower and upper bounds.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap_median_ci needs a non-empty 1-D sample, got shape {x.shape}.")
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(x, size=(n_boot, x.size), replace=True), axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def anova_oneway(groups: Sequence[Sequence[float]]) -> dict:
    """One-way ANOVA (between / within sums of squares) of observations grouped by seed.

    Tests H0: every group has the same mean. With 0/1 observations the
    normality assumption fails; with groups of a few hundred it is a fair
    approximation, but :func:`chi2_homogeneity` is the test made for binary data.
    Returns ``F``, ``p``, ``df_between``, ``df_within`` and ``eta2`` (SS_between / SS_total);
    ``F`` and ``p`` are NaN when there is no variance within groups.
    """
    gs = [np.asarray(g, dtype=float) for g in groups]
    if len(gs) < 2 or any(len(g) == 0 for g in gs):
        raise ValueError("ANOVA needs at least two non-empty groups")
    allx = np.concatenate(gs)
    grand = allx.mean()
    ssb = sum(len(g) * (g.mean() - grand) ** 2 for g in gs)
    ssw = sum(((g - g.mean()) ** 2).sum() for g in gs)
    dfb, dfw = len(gs) - 1, len(allx) - len(gs)
    sst = ssb + ssw
    if ssw <= 0 or dfw <= 0:
        f = p = float("nan")
    else:
        f = (ssb / dfb) / (ssw / dfw)
        p = float(stats.f.sf(f, dfb, dfw))
    eta2 = ssb / sst if sst > 0 else float("nan")
    return {"F": float(f), "p": p, "df_between": dfb, "df_within": dfw, "eta2": float(eta2)}


def chi2_homogeneity(correct: Sequence[int], n: Sequence[int]) -> dict:
    """Pearson chi-square test that every seed has the same success proportion.

    ``correct[i]`` of ``n[i]`` episodes right for seed i: the k x 2 table
    (right, wrong), no continuity correction, ``k - 1`` degrees of freedom.
    Returns ``chi2``, ``p``, ``dof``, ``cramers_v`` and ``min_expected`` (the
    approximation wants it >= 5); NaN when every episode is right (or wrong).
    """
    c, m = np.asarray(correct, float), np.asarray(n, float)
    if len(c) < 2 or np.any(m <= 0) or np.any(c < 0) or np.any(c > m):
        raise ValueError("need >= 2 groups with 0 <= correct <= n and n > 0")
    obs = np.stack([c, m - c], 1)
    exp = m[:, None] * obs.sum(0)[None, :] / m.sum()
    dof = len(c) - 1
    if np.any(exp.sum(0) == 0):
        return {"chi2": float("nan"), "p": float("nan"), "dof": dof, "cramers_v": float("nan"),
                "min_expected": 0.0}  # fmt: skip
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    return {"chi2": chi2, "p": float(stats.chi2.sf(chi2, dof)), "dof": dof,
            "cramers_v": float(np.sqrt(chi2 / m.sum())), "min_expected": float(exp.min())}  # fmt: skip


def cochran_q(correct: np.ndarray) -> dict:
    """Cochran's Q test of equal success rates across k matched binary conditions.

    ``correct`` is ``(n_episodes, k)``: episode i answered by seed j (every seed
    sees the same episodes, so the groups are matched, not independent). H0:
    every seed has the same accuracy. ``Q = (k-1) (k sum C_j^2 - T^2) / (k T - sum R_i^2)``
    with column totals C, row totals R and grand total T, chi-square with k-1
    dof (Cochran 1950); for k = 2 it is McNemar's statistic without correction.
    """
    x = np.asarray(correct, float)
    if x.ndim != 2 or x.shape[1] < 2 or not np.isin(x, (0, 1)).all():
        raise ValueError("need a (n, k >= 2) array of 0/1 outcomes")
    k = x.shape[1]
    col, row, tot = x.sum(0), x.sum(1), x.sum()
    den = k * tot - (row**2).sum()
    if den <= 0:
        return {"Q": float("nan"), "p": float("nan"), "dof": k - 1}
    q = (k - 1) * (k * (col**2).sum() - tot**2) / den
    return {"Q": float(q), "p": float(stats.chi2.sf(q, k - 1)), "dof": k - 1}


def spearman_bootstrap(x, y, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Spearman rho of paired ``x, y`` with a percentile bootstrap CI over pairs.

    Pairs (seeds) are resampled with replacement; resamples in which x or y is
    constant (rho undefined) are dropped and counted in ``n_valid``. ``p`` is
    scipy's (t approximation). Deterministic given ``seed``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or len(x) < 3:
        raise ValueError("need paired x, y with at least 3 points")
    rho = _spearman(x, y)
    p = float(stats.spearmanr(x, y).pvalue) if np.isfinite(rho) else float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = np.array([_spearman(x[i], y[i]) for i in idx])
    boots = boots[np.isfinite(boots)]
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a]) if len(boots) else (np.nan, np.nan)
    return {"rho": rho, "ci_low": float(lo), "ci_high": float(hi), "p": p, "n": len(x),
            "n_boot": n_boot, "n_valid": int(len(boots)), "level": level}  # fmt: skip


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of average ranks (NaN if either side is constant)."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


# ----------------------------------------------------------------------------- untrained metrics


def fit_logistic(X, y, weight_decay: float, steps: int = 200, pos_weight=None, std_floor=1e-4):
    """L2-regularised logistic regression on standardised ``X`` (T, D), labels ``y`` (T,);
    returns ``(weight, bias, mean, std)`` in ``X``'s dtype (the logit of x is
    ``((x - mean) / std) @ weight + bias``). Full-batch L-BFGS from zero, deterministic.
    ``pos_weight`` (a float) weights the positive class in the loss (e.g. n_neg / n_pos)."""
    mean = X.mean(0)
    std = X.std(0, unbiased=False).clamp_min(std_floor)
    Z = (X - mean) / std
    w = torch.zeros(X.shape[1], dtype=X.dtype, requires_grad=True)
    b = torch.zeros((), dtype=X.dtype, requires_grad=True)
    y = y.to(X.dtype)
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), dtype=X.dtype)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, y, pos_weight=pw)
        loss = loss + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), float(b.detach()), mean, std
