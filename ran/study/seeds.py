"""Reservoir-seed studies: configs, best-on-validation selection, tests across seeds.

Notebook 05 trains the same readout on the same probe once per reservoir seed
(only ``ReservoirConfig.seed`` varies) and asks how much the seed matters,
what picking the best seed on validation costs in optimism, and whether
untrained reservoir metrics predict the trained accuracy. The statistics live
here: a one-way ANOVA and a chi-square test of homogeneity of proportions on
per-episode correctness grouped by seed, the Spearman rank correlation with a
bootstrap CI over seeds, and the untrained metrics of each reservoir.

References
----------
R. A. Fisher (1925). Statistical Methods for Research Workers. (one-way ANOVA)
K. Pearson (1900). On the criterion that a given system of deviations ...
Philosophical Magazine 50, 157-175. (chi-square test)
W. G. Cochran (1950). The comparison of percentages in matched samples.
Biometrika 37, 256-266. (Cochran's Q)
B. Efron, R. Tibshirani (1993). An Introduction to the Bootstrap. (percentile CI)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats

from ran.reservoir.esn import Reservoir, ReservoirConfig
from ran.training.config import TrainConfig


# ----------------------------------------------------------------------------- configs
def seed_configs(base: TrainConfig, seeds: Sequence[int]) -> list[TrainConfig]:
    """``base`` with only ``reservoir.seed`` changed, one config per seed.

    The readout init and the data order follow ``base.seed`` and stay fixed,
    so two configs differ only in the reservoir weights (``W``, ``W_in``).
    """
    return [replace(base, reservoir=replace(base.reservoir, seed=int(s))) for s in seeds]


# ----------------------------------------------------------------------------- selection
def select_best(df: pd.DataFrame, by: str = "val_acc", key: str = "seed") -> pd.Series:
    """The row with the highest ``by`` (ties: the smallest ``key``); never looks at test."""
    order = df.sort_values([by, key], ascending=[False, True], kind="mergesort")
    return order.iloc[0]


def seed_variance(df: pd.DataFrame, best: pd.Series, col: str = "test_acc") -> dict:
    """Mean, sd (ddof=1), range of ``col`` over seeds and the optimism of the pick.

    ``optimism`` is the best-on-val seed's test accuracy minus the mean test
    accuracy over seeds (what selecting on val buys, or seems to buy, on test);
    ``winners_curse`` is its val accuracy minus its test accuracy.
    """
    x = df[col].to_numpy(float)
    return {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
        "min": float(x.min()),
        "max": float(x.max()),
        "range": float(x.max() - x.min()),
        "best_on_val_test": float(best[col]),
        "optimism": float(best[col] - x.mean()),
        "winners_curse": float(best["val_acc"] - best[col]),
        "best_on_test": float(x.max()),
        "rank_of_pick_on_test": int((x > float(best[col])).sum() + 1),
    }


# ----------------------------------------------------------------------------- tests across seeds
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
def one_step_metrics(cfg: ReservoirConfig, drives: torch.Tensor, labels: Sequence) -> dict:
    """The reservoir's first state ``r1 = step(0, u)`` on real write-pass drives.

    In a two-pass episode the question reads ``r1 = tanh(W_in u + b)``: ``W``
    never acts. Returns ``pr_real`` (participation ratio of r1 across
    episodes), ``sep_real`` (fraction of the variance of r1 explained by the
    label: between-label over total sum of squares, pooled over units) and
    ``sat_real`` (fraction of |r1| > 0.95).
    """
    from ran.reservoir.dynamics import SATURATION_LEVEL, participation_ratio

    res = Reservoir(cfg, drives.shape[1], dtype=torch.float64)
    r1 = res.step(res.zero_state(drives.shape[0]), drives.double())  # (E, N)
    lab = np.asarray(labels)
    centred = r1 - r1.mean(0)
    sst = float((centred**2).sum())
    ssb = sum(float((lab == v).sum()) * float(((r1[lab == v].mean(0) - r1.mean(0)) ** 2).sum())
              for v in np.unique(lab))  # fmt: skip
    return {"pr_real": float(participation_ratio(r1[:, None, :])[0]),
            "sep_real": ssb / sst if sst > 0 else float("nan"),
            "sat_real": float((r1.abs() > SATURATION_LEVEL).double().mean())}  # fmt: skip


# ----------------------------------------------------------------------------- figures
def plot_seed_accuracy(
    df: pd.DataFrame, best_seed: int, chance: float, controls: dict
) -> plt.Figure:
    """Val and test accuracy per seed (Wilson 95% CIs), best-on-val marked, control lines."""
    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    x = np.arange(len(df))
    for dx, split, color in ((-0.12, "val", "tab:blue"), (0.12, "test", "tab:orange")):
        acc = df[f"{split}_acc"].to_numpy()
        err = np.clip(
            [acc - df[f"{split}_lo"].to_numpy(), df[f"{split}_hi"].to_numpy() - acc], 0, None
        )
        ax.errorbar(x + dx, acc, yerr=err, fmt="o", color=color, capsize=3, label=split)
    b = int(np.flatnonzero(df.seed.to_numpy() == best_seed)[0])
    ax.plot(b + 0.12, df.test_acc.iloc[b], "*", ms=16, color="tab:red", label="best on val (test)")
    styles = ("--", ":", "-.", (0, (1, 3)))
    for (name, val), ls in zip(controls.items(), styles, strict=False):
        ax.axhline(val, color="gray", ls=ls, lw=1, label=name)
    ax.axhline(chance, color="k", lw=1, label=f"chance 1/{round(1 / chance)}")
    ax.set_xticks(x, [str(s) for s in df.seed])
    ax.set_xlabel("reservoir seed")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    return fig


def plot_untrained_vs_trained(df: pd.DataFrame, metrics: dict, corr: dict, y: str) -> plt.Figure:
    """One scatter per untrained metric against ``y``, titled with Spearman rho and its CI."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.4),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    for ax, (col, label) in zip(axes[0], metrics.items(), strict=True):
        c = corr[col]
        ax.scatter(df[col], df[y], color="tab:purple")
        for s, xv, yv in zip(df.seed, df[col], df[y], strict=True):
            ax.annotate(str(s), (xv, yv), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_title(f"rho = {c['rho']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]", fontsize=9)
    axes[0, 0].set_ylabel(y.replace("_", " "))
    return fig
