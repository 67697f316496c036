"""Figures of notebook 02 (surgery): slot attention mass, drive sweeps, pooling."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ran.report.figures.axes import log_axis
from ran.reservoir.dynamics import SATURATION_LEVEL


def slot_mass(masses: dict[str, dict]) -> plt.Figure:
    """Bars of the mean attention mass on the slots per query head, one panel per model.

    ``masses[name]`` is the output of :func:`ran.study.surgery.slot_mass_per_head`.
    """
    fig, axes = plt.subplots(
        1, len(masses), figsize=(4.5 * len(masses), 3.2), constrained_layout=True, squeeze=False
    )
    for ax, (name, m) in zip(axes[0], masses.items(), strict=True):
        mass = np.asarray(m["mass"])  # (passes, H)
        heads = np.arange(mass.shape[1])
        ax.bar(heads, mass.mean(0), yerr=mass.std(0), color="tab:purple", alpha=0.8)
        ax.set_xticks(heads)
        ax.set_xlabel("query head")
        ax.set_ylabel("attention mass on slots")
        ax.set_title(f"{name}, layer {m['layer']}, tanh(g) = {m['gate']:.2f}", fontsize=10)
        ax.set_ylim(0, 1)
    return fig


def sweep_maps(sweep: dict, chosen: tuple[float, float] | None = None) -> plt.Figure:
    """Heatmaps over sr x input_scaling: saturation, ESP distance, participation ratio."""
    srs, sc = sweep["sr"], sweep["input_scaling"]
    panels = [
        ("saturation", f"saturation (fraction |r| > {SATURATION_LEVEL})", False),
        ("esp", "ESP: distance of 2 initial states after T passes / sqrt(N)", True),
        ("pr", "participation ratio of the states", False),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    for ax, (key, title, log) in zip(axes, panels, strict=True):
        z = np.asarray(sweep[key], dtype=float).mean(0)  # (n_sr, n_scaling)
        if log:
            z = np.log10(np.maximum(z, 1e-12))
            title = "log10 " + title
        im = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(sc)), [f"{s:g}" for s in sc])
        ax.set_yticks(range(len(srs)), [f"{s:g}" for s in srs])
        ax.set_xlabel("input_scaling")
        ax.set_ylabel("spectral radius sr")
        ax.set_title(title, fontsize=9)
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                ax.text(j, i, f"{z[i, j]:.2g}", ha="center", va="center", fontsize=7, color="w")
        if chosen is not None:
            i = int(np.argmin(np.abs(np.asarray(srs) - chosen[0])))
            j = int(np.argmin(np.abs(np.asarray(sc) - chosen[1])))
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def pooling_curves(sweeps: dict[str, dict], stats: dict[str, dict], sr: float, max_sat: float):
    """Saturation and participation ratio vs input_scaling at ``sr``, per pooling."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for pooling, sw in sweeps.items():
        k = int(np.argmin(np.abs(np.asarray(sw["sr"]) - sr)))
        sc = sw["input_scaling"]
        lab = f"{pooling} (drive PR {stats[pooling]['pr']:.1f}, cos {stats[pooling]['cos']:.2f})"
        axes[0].plot(sc, np.asarray(sw["saturation"]).mean(0)[k], "o-", label=lab)
        axes[1].plot(sc, np.asarray(sw["pr"]).mean(0)[k], "o-", label=lab)
    axes[0].axhline(max_sat, color="k", ls=":", lw=1, label=f"saturation budget {max_sat:g}")
    for ax, title in zip(axes, ["saturation", "participation ratio of the states"], strict=True):
        log_axis(ax, "x", sc)
        ax.set_xlabel("input_scaling (log scale)")
        ax.set_title(f"{title} at sr = {sr:g}", fontsize=10)
        ax.legend(fontsize=8)
    return fig
