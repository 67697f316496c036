"""Figures of notebook 06 (seaborn on matplotlib): retention curves, regime heat maps, CI bars."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ran.report.figures.axes import log_axis


def _frame(curves: dict[str, list[dict]], axis: str, controls) -> pd.DataFrame:
    rows = []
    for label, pts in curves.items():
        for p in pts:
            for c in controls:
                if c in p:
                    rows.append(
                        {
                            "configuration": label,
                            "control": c,
                            axis: p[axis],
                            "acc": p[c]["acc"],
                            "lo": p[c]["ci_low"],
                            "hi": p[c]["ci_high"],
                        }
                    )
    return pd.DataFrame(rows)


def retention_curves(ax, curves, axis, xlabel, chance, controls=("reservoir", "reset")):
    """Recall (95% CI bands) vs distractor passes or idle ticks, one colour per configuration;
    the reset control dashed, chance dotted. The x axis is categorical (0, 1, 2, 4, ...)."""
    df = _frame(curves, axis, controls)
    xs = sorted(df[axis].unique())
    pos = {x: i for i, x in enumerate(xs)}
    palette = dict(zip(curves, sns.color_palette("colorblind", len(curves)), strict=True))
    for (label, control), g in df.groupby(["configuration", "control"], sort=False):
        g = g.sort_values(axis)
        x = [pos[v] for v in g[axis]]
        style = "-" if control == "reservoir" else "--"
        ax.plot(x, g.acc, style, marker="o" if control == "reservoir" else None,
                color=palette[label], label=label if control == "reservoir" else None,
                alpha=1.0 if control == "reservoir" else 0.6)  # fmt: skip
        if control == "reservoir":
            ax.fill_between(x, g.lo, g.hi, color=palette[label], alpha=0.15)
    ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.plot([], [], "k--", alpha=0.6, label="reset control")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out recall")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="best")


def regime_heatmap(ax, grid: pd.DataFrame, value: str, title: str, chance: float):
    """Heat map of ``value`` over leak rate (rows) x spectral radius (columns), annotated."""
    pivot = grid.pivot(index="lr", columns="sr", values=value).sort_index(ascending=False)
    sns.heatmap(pivot, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax,
                cbar_kws={"label": "held-out recall"})  # fmt: skip
    ax.set_title(f"{title} (chance {chance:.3f})", fontsize=9)
    ax.set_xlabel("spectral radius sr")
    ax.set_ylabel("leak rate lr")


def ci_bars(ax, rows: pd.DataFrame, chance: float):
    """Recall with 95% CIs per configuration and condition (grouped bars)."""
    conds = list(dict.fromkeys(rows.condition))
    labels = list(dict.fromkeys(rows.configuration))
    width = 0.8 / len(conds)
    colours = sns.color_palette("colorblind", len(conds))
    for j, cond in enumerate(conds):
        g = rows[rows.condition == cond].set_index("configuration").reindex(labels)
        x = np.arange(len(labels)) + (j - (len(conds) - 1) / 2) * width
        err = np.vstack([g.acc - g.lo, g.hi - g.acc])
        ax.bar(x, g.acc, width, yerr=err, capsize=2, color=colours[j], label=cond)
    ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out recall")
    ax.legend(fontsize=7, ncol=2)


def tradeoff(ax, rows: pd.DataFrame, chance: float, target_pct: float = 1.0):
    """Held-out recall (95% CI bars) against the H1 cost |dPPL| (log scale), one point per
    KL weight and condition, the weights written once beside the first condition's points;
    the H1 target (|dPPL| <= ``target_pct``) as a shaded band."""
    conds = list(dict.fromkeys(rows.condition))
    colours = dict(zip(conds, sns.color_palette("colorblind", len(conds)), strict=True))
    x_all = rows.dppl_pct.abs().clip(lower=1e-3)
    left = min(target_pct / 4, x_all.min() / 2)
    for cond, g in rows.groupby("condition", sort=False):
        x = g.dppl_pct.abs().clip(lower=1e-3)
        ax.errorbar(x, g.acc, yerr=np.vstack([g.acc - g.lo, g.hi - g.acc]), fmt="o-",
                    color=colours[cond], capsize=3, label=cond)  # fmt: skip
        if cond == conds[0]:
            for xi, yi, w in zip(x, g.acc, g.kl_weight, strict=True):
                ax.annotate(f"KL {w:g}", (xi, yi), textcoords="offset points", xytext=(6, -10),
                            fontsize=7)  # fmt: skip
    log_axis(ax, "x")
    ax.set_xlim(left, x_all.max() * 2)
    ax.axvspan(left, target_pct, color="green", alpha=0.1, label=f"H1: |dPPL| <= {target_pct:g}%")
    ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set_xlabel("|dPPL| after a fact pass (%, log scale)")
    ax.set_ylabel("held-out recall")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left")


def figure(curves_d, curves_i, bars, chance, grid=None):
    """The notebook-06 figure: distractor and idle curves, CI bars, and the regime heat maps."""
    n = 3 + (2 if grid is not None else 0)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6))
    retention_curves(axes[0], curves_d, "distractors", "distractor passes d", chance)
    retention_curves(axes[1], curves_i, "idle_steps", "idle ticks", chance)
    ci_bars(axes[2], bars, chance)
    if grid is not None:
        g0 = grid.iloc[0]
        regime_heatmap(axes[3], grid, "d", f"after {int(g0.distractors)} distractors", chance)
        regime_heatmap(axes[4], grid, "idle", f"after {int(g0.idle_steps)} idle ticks", chance)
    fig.tight_layout()
    return fig
