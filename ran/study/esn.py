"""Notebook 01 (echo-state dynamics): its findings.

The sweep and its summary (boundaries, memory, chaos per size, and the table and
sentences computed from them) live in :mod:`ran.reservoir.dynamics`
(:func:`~ran.reservoir.dynamics.sweep`, :func:`~ran.reservoir.dynamics.summarize`);
:func:`findings` adds the captions of the notebook's figures, their numbers
computed from the same summary.
"""

from __future__ import annotations

import pandas as pd

from ran.util.results import figure


def findings(
    df: pd.DataFrame,
    payload: dict,
    summary: list[dict],
    figures: dict,
    outputs,
    *,
    n_show: int,
    n_seeds: int,
    steps: int,
    drive: str,
    input_scaling: float,
    mc_k_max: int,
    live_sr: float | None = None,
    live_units: int | None = None,
) -> list[dict]:
    """Notebook 01's findings: ``summary`` (the findings of
    :func:`ran.reservoir.dynamics.summarize`, whose ``payload`` holds ``boundary``,
    ``memory`` and ``sr_grid_step`` per N) followed by the figures (``figures``:
    ``metrics``, ``mc``, ``boundary`` paths, and ``live`` for the static live view of
    ``live_sr`` and ``live_units``, when drawn). ``df`` is the sweep, ``n_show`` the N
    of the metrics figure."""
    b_auto = payload["boundary"][n_show]["autonomous"]
    b_drv = payload["boundary"][n_show]["driven"]
    mem = payload["memory"][n_show]
    drv_rows = df[df.regime == "driven"]
    mc_best_n = max(payload["memory"], key=lambda n: payload["memory"][n]["max_mean"])
    mc_ok, mc_n = int((drv_rows.memory_capacity <= drv_rows.units).sum()), len(drv_rows)
    autonomous = [b["autonomous"]["mean"] for b in payload["boundary"].values()]
    out = list(summary)
    out += [
        figure(figures["metrics"], f"Metrics vs sr, N = {n_show}, {n_seeds} seeds, {steps} steps. "
               f"Autonomous: initial state kept from sr* = {b_auto['mean']:.3f} (95% CI "
               f"{b_auto['ci_low']:.3f}-{b_auto['ci_high']:.3f}, resolution "
               f"{b_auto.get('resolution', payload['sr_grid_step']):.3g}); driven ({drive}, "
               f"input_scaling {input_scaling:g}): {b_drv['n_censored']} of "
               f"{b_drv['n_seeds']} seeds forget it at every sr up to {b_drv['sr_max']:.2f}; "
               f"best mean MC {mem['max_mean']:.1f} at sr = {mem['sr_at_max']:.2f}.", outputs),
        figure(figures["mc"], f"Driven memory capacity vs N (mean ± sd over {n_seeds} seeds, "
               f"{mc_k_max} delays); largest mean MC "
               f"{payload['memory'][mc_best_n]['max_mean']:.1f} at N = {mc_best_n} "
               f"(sr = {payload['memory'][mc_best_n]['sr_at_max']:.2f}); MC <= N holds for "
               f"{mc_ok} of {mc_n} estimates.", outputs),
        figure(figures["boundary"], "ESP boundary sr* per N (mean, 95% Student-t CI over "
               f"{n_seeds} seeds); autonomous sr* spans {min(autonomous):.3f}-{max(autonomous):.3f} "
               "across N; arrows: driven reservoirs that forget at every sr of the grid.", outputs),
    ]  # fmt: skip
    if "live" in figures:
        out.append(
            figure(
                figures["live"],
                f"One reservoir (sr = {live_sr}, N = {live_units}): "
                "two trajectories per regime and their distance.",
                outputs,
            )
        )
    return out
