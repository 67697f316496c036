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

from ran.reservoir.config import ReservoirConfig
from ran.reservoir.esn import Reservoir
from ran.training.config import TrainConfig
from ran.util.stats import (  # noqa: F401  (the tests of notebook 05, named here too)
    anova_oneway,
    chi2_homogeneity,
    cochran_q,
    spearman_bootstrap,
)


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
