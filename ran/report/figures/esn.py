"""Plots of reservoir dynamics for notebook 01 (static figures and the live widget view)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ran.report.figures.axes import log_axis
from ran.reservoir.config import ReservoirConfig
from ran.reservoir.dynamics import REGIMES, SATURATION_LEVEL, make_drive
from ran.reservoir.esn import ReservoirBank

METRICS = {  # column -> (panel title, log y-axis)
    "esp_dist": ("ESP: final distance / sqrt(N) (median, band min-max)", True),
    "forgetting_time": ("forgetting time (steps; not forgotten: not drawn)", False),
    "saturation": (f"saturation: fraction |r| > {SATURATION_LEVEL}", False),
    "participation_ratio": ("participation ratio (effective dimension)", False),
    "memory_capacity": ("memory capacity (Jaeger 2002)", False),
    "lyapunov": ("largest Lyapunov exponent (per step)", False),
}
COLORS = {"autonomous": "tab:blue", "driven": "tab:orange"}


def metrics_vs_sr(df: pd.DataFrame, units: int) -> plt.Figure:
    """Every metric against sr for both regimes: mean over seeds, band = min-max."""
    sub = df[df.units == units].replace([np.inf, -np.inf], np.nan)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), constrained_layout=True)
    for ax, (col, (title, logy)) in zip(axes.flat, METRICS.items(), strict=True):
        for reg in REGIMES:
            g = sub[sub.regime == reg].groupby("sr")[col]
            if g.count().sum() == 0:
                continue
            m, lo, hi = g.mean(), g.min(), g.max()
            if logy:
                m, lo, hi = (np.clip(v, 1e-17, None) for v in (g.median(), lo, hi))
            ax.plot(m.index, m.values, "o-", ms=3, color=COLORS[reg], label=reg)
            ax.fill_between(m.index, lo.values, hi.values, color=COLORS[reg], alpha=0.2)
        if logy:
            log_axis(ax, "y", max_ticks=7)
            ax.set_ylim(1e-17, 10)  # float64 rounding floor; smaller distances are drawn at it
            ax.axhline(float(df.esp_tol.iloc[0]), color="k", ls=":", lw=1, label="tolerance")
        if col == "lyapunov":
            ax.axhline(0, color="k", lw=0.8)
        ax.axvline(1.0, color="grey", lw=0.6, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("spectral radius sr")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Echo-state reservoir, N = {units} (mean over seeds, band = min-max)")
    return fig


def mc_vs_units(df: pd.DataFrame) -> plt.Figure:
    """Driven memory capacity against N for a few spectral radii, with the MC <= N bound."""
    drv = df[df.regime == "driven"]
    srs = sorted(drv.sr.unique())
    pick = sorted({srs[round(i)] for i in np.linspace(0, len(srs) - 1, min(5, len(srs)))})
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for sr in pick:
        g = drv[np.isclose(drv.sr, sr)].groupby("units").memory_capacity
        ax.errorbar(g.mean().index, g.mean().values, yerr=g.std().fillna(0).values,
                    marker="o", capsize=3, label=f"sr = {sr:.2f}")  # fmt: skip
    units = sorted(drv.units.unique())
    ax.plot(units, units, "k:", label="bound MC = N")
    log_axis(ax, "x", units)
    log_axis(ax, "y")
    ax.set_xlabel("units N (log scale)")
    ax.set_ylabel("memory capacity (log scale)")
    ax.legend(fontsize=8)
    return fig


def boundary_plot(payload: dict) -> plt.Figure:
    """ESP boundary sr* per N with 95% CI; censored (never lost on the grid) drawn as arrows."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    top = 1.0
    for i, reg in enumerate(REGIMES):
        for units, b in payload["boundary"].items():
            if reg not in b:
                continue
            br, x = b[reg], float(units) * (1.04 if i else 0.96)
            top = max(top, br["sr_max"])
            if math.isfinite(br["mean"]):  # hollow marker: some seeds censored (not counted)
                err = [[br["mean"] - br["ci_low"]], [br["ci_high"] - br["mean"]]]
                ax.errorbar([x], [br["mean"]], yerr=err, fmt="o", capsize=4, color=COLORS[reg],
                            mfc="white" if br["n_censored"] else COLORS[reg])  # fmt: skip
            if br["n_censored"]:
                ax.annotate("", (x, br["sr_max"] + 0.12), (x, br["sr_max"]),
                            arrowprops={"arrowstyle": "->", "color": COLORS[reg]})  # fmt: skip
    for reg in REGIMES:
        ax.plot([], [], "o", color=COLORS[reg], label=reg)
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_ylim(top=top + 0.2)
    log_axis(ax, "x", [float(u) for u in payload["boundary"]])
    ax.set_xlabel("units N (log scale)")
    ax.set_ylabel("ESP boundary sr* (95% CI)")
    ax.set_title("arrow: seeds that forget at every sr of the grid\n(hollow: mean of the rest)",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=8)
    return fig


def live(sr: float, units: int, input_scaling: float, lr: float, steps: int = 300, seed: int = 0):
    """Trajectories of one reservoir from two initial states, both regimes, with live metrics."""
    cfg = ReservoirConfig(units=int(units), input_scaling=input_scaling, lr=lr, seed=seed)
    bank = ReservoirBank(cfg, 1, [sr], [seed])
    g = torch.Generator().manual_seed(seed)
    init = torch.rand(4, cfg.units, generator=g, dtype=torch.float64) * 2 - 1
    u = make_drive(steps, "uniform", seed)
    drv = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)[:, None]
    r = init[None, None].clone()
    traj = []
    for t in range(steps):
        r = bank.step(r, u[t] * drv, check=False)
        traj.append(r[0, 0])
    x = torch.stack(traj).numpy()  # (T, 4, N)
    show = min(steps, 80)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for j, reg in enumerate(REGIMES):
        for i, c in enumerate(("tab:green", "tab:red")):
            axes[j].plot(x[:show, 2 * j, i], lw=1, color=c)
            axes[j].plot(x[:show, 2 * j + 1, i], lw=1, ls="--", color=c)
        sat = float((np.abs(x[steps // 2 :, 2 * j]) > SATURATION_LEVEL).mean())
        axes[j].set_title(
            f"{reg}: 2 units, 2 initial states (solid, dashed); saturation {sat:.2f}", fontsize=9
        )
        axes[j].set_xlabel("step")
        d = np.linalg.norm(x[:, 2 * j] - x[:, 2 * j + 1], axis=-1) / math.sqrt(cfg.units)
        axes[2].plot(np.maximum(d, 1e-300), color=COLORS[reg], label=reg)
    log_axis(axes[2], "y", max_ticks=7)
    axes[2].set_ylim(1e-17, 10)
    axes[2].set_title("distance between the two trajectories / sqrt(N)", fontsize=9)
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"sr = {sr:.2f}, N = {cfg.units}, input_scaling = {input_scaling:g}, lr = {lr:g}")
    return fig


def live_show(sr: float, units: int, input_scaling: float, lr: float, steps: int = 300, seed=0):
    """:func:`live`, shown and closed (returns None, so ipywidgets draws it once)."""
    plt.show(live(sr, units, input_scaling, lr, steps=steps, seed=seed))
