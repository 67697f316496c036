"""Figures of notebook 07: the state's path in a fixed PCA plane, gate scores, the clock, latency.

:class:`Projection` is fitted once (on reference states, e.g. the gate probe's) and
then fixed, so a live plot of r(t) moving through prompted and idle passes keeps
its axes. Every function draws on a :class:`matplotlib.figure.Figure` (no pyplot
state) and returns it.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

COLORS = {"prompted-emitted": "tab:red", "prompted-silent": "tab:blue", "idle": "tab:gray",
          "review-silent": "tab:green", "review-emitted": "tab:olive"}  # fmt: skip


class Projection:
    """A fixed 2-D PCA projection of reservoir states (fitted by SVD of centred states)."""

    def __init__(self, states: np.ndarray):
        x = np.asarray(states, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 3:
            raise ValueError(f"a projection needs at least 3 states (rows), got shape {x.shape}.")
        self.mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.axes = vt[:2]
        var = s**2
        self.explained = (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]

    def __call__(self, states: np.ndarray) -> np.ndarray:
        return (np.asarray(states, dtype=np.float64) - self.mean) @ self.axes.T


def draw_trajectory(ax, proj: Projection, rows, title: str = "") -> None:
    """The path of r(t) through ``rows`` = ``[(pass_index, kind, state), ...]``."""
    if not rows:
        ax.set_title(title or "no passes yet")
        return
    xy = proj(np.stack([r[2] for r in rows]))
    ax.plot(xy[:, 0], xy[:, 1], color="0.75", lw=1, zorder=1)
    for kind in dict.fromkeys(r[1] for r in rows):
        idx = [i for i, r in enumerate(rows) if r[1] == kind]
        ax.scatter(xy[idx, 0], xy[idx, 1], s=28, color=COLORS.get(kind, "k"), label=kind, zorder=2)
    style = dict(textcoords="offset points", fontsize=8)
    ax.annotate(f"first: pass {rows[0][0]}", xy[0], xytext=(4, -10), **style)
    ax.annotate(f"last: pass {rows[-1][0]}", xy[-1], xytext=(4, 4), **style)
    ax.set_xlabel(f"PC1 ({100 * proj.explained[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * proj.explained[1]:.0f}%)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title)


def trajectory_figure(proj: Projection, traces: dict) -> Figure:
    """One panel per trace (e.g. the scripted conversation and its reset control)."""
    fig = Figure(figsize=(5.2 * len(traces), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(traces), sharex=True, sharey=True))
    for ax, (title, rows) in zip(axes, traces.items(), strict=True):
        draw_trajectory(ax, proj, rows, title)
    return fig


def gate_figure(report: dict) -> Figure:
    """Precision, recall and F1 (95% CIs) of the stateful gate, the stateless gate and always-emit."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    names, metrics = ("stateful", "stateless", "always"), ("precision", "recall", "f1")
    width = 0.26
    for j, metric in enumerate(metrics):
        vals, lo, hi = [], [], []
        for name in names:
            m = report[name]["scores"][metric]
            v = m["value"] if m["value"] is not None else 0.0
            ci = [c if c is not None else v for c in m["ci95"]]
            vals.append(v)
            lo.append(max(0.0, v - ci[0]))
            hi.append(max(0.0, ci[1] - v))
        x = np.arange(len(names)) + (j - 1) * width
        ax.bar(x, vals, width, yerr=[lo, hi], capsize=3, label=metric)
    ax.set_xticks(np.arange(len(names)), ["stateful gate", "stateless gate", "always emit"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out test score")
    ax.legend(fontsize=8, ncol=3, loc="lower right")
    ax.set_title(f"Output gate, {report['n_turns']['test']} test turns")
    return fig


def clock_figure(clock: dict) -> Figure:
    """Confusion of the elapsed-ticks readout (rows: true k, columns: decoded k)."""
    fig = Figure(figsize=(4.6, 3.9), layout="constrained")
    ax = fig.subplots()
    conf = np.array(clock["confusion"], dtype=float)
    conf = conf / conf.sum(1, keepdims=True).clip(min=1)
    im = ax.imshow(conf, cmap="Blues", vmin=0, vmax=1)
    ks = clock["k_values"]
    ax.set_xticks(range(len(ks)), ks)
    ax.set_yticks(range(len(ks)), ks)
    ax.set_xlabel("decoded idle ticks")
    ax.set_ylabel("true idle ticks since the last message")
    ax.set_title(f"clock from r(t): acc {clock['acc']:.2f} (chance {clock['chance']:.2f})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
