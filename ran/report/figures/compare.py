"""Figures of notebook 04: the mechanism comparison and the scaling points, with controls."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ran.report.figures.axes import log_axis


def _yerr(stats: list[dict]) -> np.ndarray:
    acc = np.array([s["acc"] for s in stats])
    err = np.vstack([acc - [s["ci_low"] for s in stats], [s["ci_high"] for s in stats] - acc])
    return np.clip(err, 0, None)  # Wilson bounds can miss acc = 0 or 1 by a rounding error


def _ci_err(values: list[float], cis: list) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    lo = np.array([c[0] if c else x for c, x in zip(cis, v, strict=True)])
    hi = np.array([c[1] if c else x for c, x in zip(cis, v, strict=True)])
    return np.clip(np.vstack([v - lo, hi - v]), 0, None)


def comparison_figure(results: dict[str, dict], ks: tuple[int, ...]):
    """Recall per mechanism at every K (reset control as open markers), elapsed, ΔPPL, overhead.

    Bars: the mechanism with its state; open squares: the same mechanism with
    the state reset before the question; dashed: the stateless base model;
    dotted: chance. Error bars are 95% CIs (Wilson for accuracies, bootstrap
    for ΔPPL and the overhead ratio).
    """
    labels = list(results)
    x = np.arange(len(labels))
    probes = [(f"recall K={k}", lambda r, k=k: r["recall"][k], 1 / k) for k in ks]
    el = next((results[lab]["elapsed"] for lab in labels if results[lab]["elapsed"]), None)
    if el is not None:
        probes.append(("elapsed passes", lambda r: r["elapsed"], el["chance"]))
    fig, axes = plt.subplots(1, len(probes) + 2, figsize=(3.2 * (len(probes) + 2), 3.8))
    for ax, (title, get, chance) in zip(axes, probes, strict=False):
        have = [lab for lab in labels if get(results[lab])]  # mechanisms run on this probe
        xi = np.array([labels.index(lab) for lab in have])
        st = [get(results[lab])["reservoir"] for lab in have]
        rs = [get(results[lab])["reset"] for lab in have]
        ref = next(get(results[lab]) for lab in have if "stateless" in get(results[lab]))
        ax.bar(
            xi, [s["acc"] for s in st], yerr=_yerr(st), color="C0", capsize=3, label="with state"
        )
        ax.errorbar(xi, [s["acc"] for s in rs], yerr=_yerr(rs), fmt="s", mfc="none", color="C1",
                    capsize=2, label="state reset")  # fmt: skip
        ax.axhline(ref["stateless"]["acc"], color="C3", ls="--", lw=1, label="stateless")
        ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
        ax.set(title=title, ylim=(0, 1.05), ylabel="accuracy")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    axes[0].legend(fontsize=7)
    d = [results[lab]["dppl_trained"] for lab in labels]
    axes[-2].bar(x, [v["dppl_pct"] for v in d], color="C2",
                 yerr=_ci_err([v["dppl_pct"] for v in d], [v["ci95"] for v in d]), capsize=3)  # fmt: skip
    axes[-2].axhline(0, color="k", lw=0.8)
    axes[-2].set(title="ΔPPL trained / feedback on", ylabel="ΔPPL vs base (%)")
    o = [results[lab]["overhead"] for lab in labels]
    axes[-1].bar(x, [v["median_ratio"] for v in o], color="C4",
                 yerr=_ci_err([v["median_ratio"] for v in o], [v["ci95"] for v in o]), capsize=3)  # fmt: skip
    axes[-1].axhline(1, color="k", lw=0.8)
    axes[-1].set(title="forward-time ratio", ylabel="injected / base (median)")
    for ax in axes[-2:]:
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    return fig


def scaling_figure(points: list[dict], x_key: str, group_key: str | None = None):
    """Recall (with reset, stateless and chance), ΔPPL and overhead against ``x_key``.

    Parameters
    ----------
    points : list of dict
        :func:`ran.study.scaling.scaling_point` results.
    x_key : {"units", "input_scaling", "model_params"}
        The x axis (log scale).
    group_key : str, optional
        One line per value of this key (e.g. ``input_scaling`` when x is ``units``).
    """
    groups: dict = {}
    for p in points:
        groups.setdefault(p[group_key] if group_key else "", []).append(p)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (g, pts) in enumerate(groups.items()):
        pts = sorted(pts, key=lambda p: p[x_key])
        xs = [p[x_key] for p in pts]
        lab = f"{group_key} = {g}: " if group_key else ""
        col = f"C{i}"
        for ctrl, ls, mk in (
            ("reservoir", "-", "o"),
            ("reset", "--", "s"),
            ("stateless", ":", "v"),
        ):
            st = [p["recall"][ctrl] for p in pts]
            axes[0].errorbar(xs, [s["acc"] for s in st], yerr=_yerr(st), color=col, ls=ls,
                             marker=mk, capsize=3, mfc="none" if ctrl != "reservoir" else col,
                             label=f"{lab}{ctrl}")  # fmt: skip
        if x_key == "model_params":
            for p in pts:
                axes[0].annotate(p["model_name"], (p[x_key], p["recall"]["reservoir"]["acc"]),
                                 fontsize=6, xytext=(3, 3), textcoords="offset points")  # fmt: skip
        d = [p["dppl_trained"] for p in pts]
        axes[1].errorbar(xs, [v["dppl_pct"] for v in d], color=col, marker="o", capsize=3,
                         yerr=_ci_err([v["dppl_pct"] for v in d], [v["ci95"] for v in d]),
                         label=lab.rstrip(": "))  # fmt: skip
        o = [p["overhead"] for p in pts]
        axes[2].errorbar(xs, [v["median_ratio"] for v in o], color=col, marker="o", capsize=3,
                         yerr=_ci_err([v["median_ratio"] for v in o], [v["ci95"] for v in o]),
                         label=lab.rstrip(": "))  # fmt: skip
    chance = sorted({p["recall"]["chance"] for p in points})
    for c in chance:
        axes[0].axhline(c, color="k", ls=":", lw=1, label="chance" if c == chance[0] else None)
    xl = {"units": "reservoir units N", "input_scaling": "input scaling",
          "model_params": "model parameters"}.get(x_key, x_key)  # fmt: skip
    axes[0].set(ylim=(-0.02, 1.05), ylabel="recall accuracy", title="Secret-word recall")
    axes[1].set(ylabel="ΔPPL vs base (%)", title="ΔPPL after training (state carried)")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[2].set(ylabel="injected / base (median)", title="Forward-time ratio")
    axes[2].axhline(1, color="k", lw=0.8)
    ticks = sorted({p[x_key] for p in points})
    names = [f"{t / 1e6:.3g}M" if x_key == "model_params" else f"{t:g}" for t in ticks]
    for ax in axes:
        log_axis(ax, "x", ticks, names)
        ax.set_xlabel(xl)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(fontsize=6)
    if group_key:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
