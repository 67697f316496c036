"""Reservoir-seed studies: configs, best-on-validation selection, tests across seeds.

Notebook 05 trains the same readout on the same probe once per reservoir seed
(only ``ReservoirConfig.seed`` varies) and asks how much the seed matters,
what picking the best seed on validation costs in optimism, and whether
untrained reservoir metrics predict the trained accuracy. The statistics live
here: a one-way ANOVA and a chi-square test of homogeneity of proportions on
per-episode correctness grouped by seed, the Spearman rank correlation with a
bootstrap CI over seeds, and the untrained metrics of each reservoir; and the
notebook's findings (:func:`findings`, tests at the level :data:`ALPHA`).

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

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ran.reservoir.config import ReservoirConfig
from ran.reservoir.esn import Reservoir
from ran.training.config import TrainConfig
from ran.util.configio import updated
from ran.util.stats import (  # noqa: F401  (the tests of notebook 05, named here too)
    anova_oneway,
    chi2_homogeneity,
    cochran_q,
    spearman_bootstrap,
)

ALPHA = 0.05  # significance level of every test across seeds
UNTRAINED_METRICS = {"pr_noise": "PR (scalar noise)", "mc_noise": "MC (scalar noise)",
                     "pr_real": "PR of r1 (real drives)", "sep_real": "word share of r1 variance"}  # fmt: skip
CONSTANT_SPAN = 1e-6  # a metric whose range over seeds is below this cannot rank them
SEED_COLUMNS = ["seed", "val acc", "test acc", "test CI low", "test CI high", "PR noise", "MC noise",
                "PR r1 real", "word share r1", "train s"]  # fmt: skip


# ----------------------------------------------------------------------------- configs
def seed_configs(base: TrainConfig, seeds: Sequence[int]) -> list[TrainConfig]:
    """``base`` with only ``injection.reservoir.seed`` changed, one config per seed.

    The readout init and the data order follow ``base.seed`` and stay fixed,
    so two configs differ only in the reservoir weights (``W``, ``W_in``).
    """
    return [updated(base, injection={"reservoir": {"seed": int(s)}}) for s in seeds]


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


def ranked_metrics(df: pd.DataFrame) -> dict[str, str]:
    """The :data:`UNTRAINED_METRICS` (column -> label) to correlate with accuracy: the word
    share of r1 left out when it is constant over seeds up to rounding (a rank correlation
    would only rank float noise)."""
    metrics = dict(UNTRAINED_METRICS)
    if float(df.sep_real.max() - df.sep_real.min()) < CONSTANT_SPAN:
        metrics.pop("sep_real")
    return metrics


def rho_critical(n: int, alpha: float = ALPHA) -> float:
    """|Spearman rho| needed for a two-sided p < ``alpha`` with ``n`` seeds (t approximation)."""
    from scipy import stats

    t_crit = stats.t.ppf(1 - alpha / 2, n - 2)
    return float(t_crit / np.sqrt(n - 2 + t_crit**2))


# ----------------------------------------------------------------------------- findings
def equal_accuracy_verdict(chi2: dict, alpha: float = ALPHA) -> str:
    """Whether the chi-square test separates the seeds' test accuracies at level ``alpha``."""
    if not np.isfinite(chi2["p"]):
        return (
            "The test of equal accuracy is undefined: every seed got every episode right (or wrong)"
        )
    if chi2["p"] < alpha:
        return (f"The reservoir seed changes test accuracy by more than sampling noise at the "
                f"{100 * alpha:g}% level")  # fmt: skip
    return (f"At the {100 * alpha:g}% level the seeds' test accuracies are compatible with one "
            "common accuracy: the chi-square test does not separate the seeds")  # fmt: skip


def correlation_verdict(corr: dict[str, dict], alpha: float = ALPHA) -> str:
    """Whether any untrained metric predicts accuracy: p < ``alpha`` and a CI excluding 0."""
    n_def = sum(np.isfinite(c["rho"]) and np.isfinite(c["ci_low"]) for c in corr.values())
    n_zero = sum(c["ci_low"] <= 0 <= c["ci_high"] for c in corr.values())  # NaN compares False
    n_sig = sum(c["p"] < alpha and not c["ci_low"] <= 0 <= c["ci_high"] for c in corr.values())
    if n_def < len(corr):
        return (f"Spearman rho is undefined for {len(corr) - n_def} of {len(corr)} metrics "
                "(test accuracy or the metric is constant across seeds). ")  # fmt: skip
    if n_sig == 0:
        return ("Untrained metrics do not predict trained accuracy here: none has "
                f"p < {alpha:g} and a CI excluding 0 ({len(corr) - n_zero} of {len(corr)} "
                "percentile CIs exclude 0 on their own; over so few seeds the percentile "
                "bootstrap undercovers). ")  # fmt: skip
    return (f"{n_sig} of {len(corr)} untrained metrics have p < {alpha:g} and a CI excluding "
            "0 (no correction for the multiple comparisons). ")  # fmt: skip


def findings(
    df: pd.DataFrame,
    best_seed: int,
    ctrl: dict,
    var: dict,
    anova: dict,
    chi2: dict,
    cochran: dict,
    corr: dict,
    corr_val: dict,
    metrics: dict[str, str],
    base: TrainConfig,
    chance: float,
    n_boot: int,
    rho_crit: float,
    figures: dict,
    outputs,
) -> list[dict]:
    """Notebook 05's findings blocks: the setup, the per-seed table, the pick on validation
    with its controls, the spread and tests across seeds with their verdicts at :data:`ALPHA`,
    the correlations of the untrained metrics, and the figures (``figures``: ``accuracy``
    and ``correlation`` paths).

    ``df`` has one row per seed (columns of the notebook's per-seed table), ``ctrl`` the
    controls of the picked seed, ``var`` :func:`seed_variance`, ``anova``, ``chi2`` and
    ``cochran`` the tests, ``corr`` / ``corr_val`` :func:`spearman_bootstrap` per metric
    against test / validation accuracy, ``metrics`` the metrics correlated
    (:func:`ranked_metrics`), ``base`` the seeds' common TrainConfig.
    """
    from ran.util.results import figure, table, text

    n_seeds, seeds, res = len(df), [int(s) for s in df.seed], base.injection.reservoir
    b = df[df.seed == best_seed].iloc[0]
    rs, sh, st, orc = (ctrl[c] for c in ("reset", "shuffled", "stateless", "oracle"))
    rows = [[int(r.seed), r.val_acc, r.test_acc, r.test_lo, r.test_hi, r.pr_noise, r.mc_noise,
             r.pr_real, r.sep_real, r.train_wall_s] for r in df.itertuples()]  # fmt: skip
    return [
        text(
            f"Seed study: {base.model_name}, secret-word recall with K = {round(1 / chance)} "
            f"(chance {chance:.3f}), {n_seeds} reservoir seeds ({seeds[0]}-{seeds[-1]}; N = "
            f"{res.units}, sr = {res.sr}, input_scaling = {res.input_scaling}), each trained "
            f"{base.steps} steps at batch {base.batch_size} (lr {base.learning_rate:g}, "
            f"{base.warmup_steps} warm-up steps, gate_init {base.injection.gate_init:g}) with "
            f"the same readout init and data order; {int(b.n_val)} validation and {int(b.n_test)} test "
            "episodes."),
        table(
            "Per reservoir seed: validation and test accuracy (Wilson 95% CI), "
            "untrained metrics, training wall time", SEED_COLUMNS, rows,
            timing_columns=["train s"]),
        text(
            f"Picked on validation, seed {best_seed} (val {b.val_acc:.3f}, {int(b.val_correct)}/"
            f"{int(b.n_val)}) scores {b.test_acc:.3f} on test (95% CI {b.test_lo:.3f}-{b.test_hi:.3f}, "
            f"{int(b.test_correct)}/{int(b.n_test)}); on the same episodes reset gives "
            f"{rs['acc']:.3f} (CI {rs['ci_low']:.3f}-{rs['ci_high']:.3f}), shuffled {sh['acc']:.3f} "
            f"(CI {sh['ci_low']:.3f}-{sh['ci_high']:.3f}), the stateless base model "
            f"{st['acc']:.3f}, the oracle (text in context) {orc['acc']:.3f}, chance {chance:.3f}."),
        text(
            f"Across the {n_seeds} seeds test accuracy has mean {var['mean']:.3f}, sd {var['sd']:.3f} "
            f"and range {var['min']:.3f}-{var['max']:.3f}. Picking the best on validation gives "
            f"{var['best_on_val_test']:.3f} on test, {var['optimism']:+.3f} against the mean over "
            f"seeds (rank {var['rank_of_pick_on_test']} of {n_seeds} on test); its validation "
            f"accuracy minus its test accuracy is {var['winners_curse']:+.3f}."),
        text(
            f"One-way ANOVA of per-episode test correctness grouped by seed (H0: every seed has the "
            f"same accuracy): F({anova['df_between']}, {anova['df_within']}) = {anova['F']:.2f}, "
            f"p = {anova['p']:.3g}, eta^2 = {anova['eta2']:.4f}. The chi-square test of homogeneity "
            f"of proportions ({n_seeds} x 2 table, the test made for binary outcomes): chi2("
            f"{chi2['dof']}) = {chi2['chi2']:.2f}, p = {chi2['p']:.3g}, Cramér's V = "
            f"{chi2['cramers_v']:.3f} (smallest expected count {chi2['min_expected']:.1f}). Both "
            f"treat seeds as independent samples, but every seed answers the same test episodes; "
            f"Cochran's Q for matched binary outcomes: Q({cochran['dof']}) = {cochran['Q']:.2f}, "
            f"p = {cochran['p']:.3g}."),
        text(
            f"{equal_accuracy_verdict(chi2)} (chi-square p = {chi2['p']:.3g}, Cochran's Q p = "
            f"{cochran['p']:.3g})."),
        text(
            "Untrained metrics vs test accuracy (Spearman rho, 95% percentile bootstrap CI over "
            f"seeds, {n_boot} resamples): "
            + "; ".join(f"{metrics[m]}: rho = {c['rho']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}], "
                        f"p = {c['p']:.2g}" for m, c in corr.items())
            + ". Against validation accuracy: "
            + "; ".join(f"{metrics[m]}: rho = {c['rho']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"
                        for m, c in corr_val.items()) + "."),
        text(
            correlation_verdict(corr)
            + f"With n = {n_seeds} seeds the CIs are wide: |rho| must exceed {rho_crit:.2f} for "
            f"p < {ALPHA:g}, so only a strong monotone relation could have been detected."),
        *([text(
            f"The word share of r1 variance is {df.sep_real.min():.4f}-{df.sep_real.max():.4f} for "
            "every seed: with one write template and no context the write pass, hence r1, is a "
            "function of the secret word alone, so this metric cannot rank seeds and is left out "
            "of the correlations.")] if "sep_real" not in metrics else []),
        text(
            "In a two-pass episode the question reads r1 = tanh(W_in u) of the write pass: the "
            "recurrent matrix W, which sets the noise-driven PR and MC, never acts, so those metrics "
            "can only track accuracy through W_in, which the seed also draws."),
        figure(figures["accuracy"], f"Validation and test accuracy per reservoir seed (Wilson 95% "
               f"CIs); star: the seed picked on validation (seed {best_seed}); lines: reset and "
               f"shuffled controls and the stateless base model on that seed's test episodes, chance.",
               outputs),
        figure(figures["correlation"], f"Untrained reservoir metrics vs test accuracy, one point per "
               f"seed; titles: Spearman rho [95% bootstrap CI], n = {n_seeds}.", outputs),
    ]  # fmt: skip


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
