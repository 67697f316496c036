"""Figures of notebook 03: probe accuracies with every control, and H1 perplexities."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ran.report.figures.axes import log_axis

STYLE = {
    "reservoir": ("C0", "o", "-"),
    "reset": ("C1", "s", "--"),
    "shuffled": ("C2", "^", "--"),
    "stateless": ("C3", "v", ":"),
    "oracle": ("C4", "D", "-."),
}


def _err(stats: list[dict]) -> np.ndarray:
    acc = np.array([s["acc"] for s in stats])
    err = np.vstack([acc - [s["ci_low"] for s in stats], [s["ci_high"] for s in stats] - acc])
    return np.clip(err, 0, None)  # Wilson bounds can miss acc = 0 or 1 by a rounding error


def capacity_curve(ks: list[int], evals: dict[int, dict], controls: tuple[str, ...]):
    """Accuracy vs K (log x) for every control with 95% Wilson CIs, and chance 1/K."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in controls:
        color, marker, ls = STYLE.get(c, ("k", "x", "-"))
        st = [evals[k][c] for k in ks]
        ax.errorbar(ks, [s["acc"] for s in st], yerr=_err(st), label=c, color=color,
                    marker=marker, ls=ls, capsize=3)  # fmt: skip
    ax.plot(ks, [1 / k for k in ks], "k:", lw=1, label="chance 1/K")
    log_axis(ax, "x", ks)
    ax.set(ylim=(-0.02, 1.05), xlabel="K (keys = candidates)", ylabel="recall accuracy",
           title="Secret-word recall across passes")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion(answers: list[int], preds: dict[str, list[int]], n_classes: int):
    """Row-normalised confusion matrices (true k vs predicted k), one panel per control."""
    fig, axes = plt.subplots(1, len(preds), figsize=(3.2 * len(preds), 3.2), squeeze=False)
    a = np.asarray(answers)
    for ax, (name, p) in zip(axes[0], preds.items(), strict=True):
        m = np.zeros((n_classes, n_classes))
        np.add.at(m, (a, np.asarray(p)), 1)
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        for i in range(n_classes):
            for j in range(n_classes):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if m[i, j] > 0.5 else "k")  # fmt: skip
        ax.set(title=name, xlabel="predicted k", ylabel="true k",
               xticks=range(n_classes), yticks=range(n_classes))  # fmt: skip
    fig.tight_layout()
    return fig


def idle_curves(idle_ks: list[int], curves: dict[str, list[dict]], chance: float):
    """Recall accuracy vs idle passes, one curve per spectral radius, with CIs."""
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.array(idle_ks, dtype=float)
    for i, (label, st) in enumerate(curves.items()):
        ax.errorbar(x + 1, [s["acc"] for s in st], yerr=_err(st), label=label, marker="o",
                    capsize=3, color=f"C{i}")  # fmt: skip
    ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
    log_axis(ax, "x", x + 1, [str(k) for k in idle_ks])
    ax.set(ylim=(-0.02, 1.05), xlabel="idle passes k (u = 0) before the question (log scale)",
           ylabel="recall accuracy", title="Idle retention")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dppl_bars(labels: list[str], dppl_pct: list[float]):
    """Relative perplexity change vs the base model, in percent, per condition."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    colors = ["C2" if abs(v) <= 1 else "C3" for v in dppl_pct]
    ax.bar(range(len(labels)), dppl_pct, color=colors)
    for i, v in enumerate(dppl_pct):
        ax.text(i, v, f"{v:+.3f}%", ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    for y in (-1, 1):
        ax.axhline(y, color="k", ls=":", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
    ax.set(ylabel="ΔPPL vs base (%)", title="Held-out Shakespeare perplexity")
    fig.tight_layout()
    return fig
