# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Echo-state reservoir dynamics
#
# The reservoir that RAN injects into an attention layer is a fixed random
# leaky echo-state network (Jaeger 2001; Lukoševičius 2012):
# $r(t+1) = (1-lr)\,r(t) + lr\,\tanh(W r(t) + W_{in} u(t))$, with $W$ rescaled
# to spectral radius $sr$ exactly. Before relying on it as a memory we map its
# dynamics over a grid of spectral radii, seeds and sizes, in two regimes:
# **autonomous** ($u = 0$: the zero state is a fixed point, trajectories start
# from random unit-scale states) and **driven** (i.i.d. scalar input). Metrics:
# echo-state property (distance of trajectories from different initial states,
# forgetting time), saturation, participation ratio, memory capacity (Jaeger
# 2002) and the largest Lyapunov exponent (Benettin et al. 1980). The whole
# grid runs batched (`ran.reservoir.ReservoirBank`); logic lives in
# `ran.reservoir.dynamics`, `ran.study.esn` (the findings) and `ran.report.figures.esn`.

# %% [markdown]
# ## Imports

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ran.report.figures import esn as viz
from ran.reservoir import dynamics
from ran.study import esn
from ran.util import results
from ran.util.memo import memo

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
seed = 0  # seed of the drive and the initial states; reservoir seeds are 0..n_seeds-1
interactive = False  # True: ipywidgets sliders redraw the live view
n_seeds = 5  # reservoir seeds per grid point
n_sr = 16  # spectral radii on the grid
sr_min = 0.5  # smallest spectral radius
sr_max = 2.0  # largest spectral radius
steps = 1000  # time steps per trajectory
washout = 200  # steps discarded before statistics
units_list = "50,100,200,400"  # reservoir sizes (comma string)
input_scaling = 1.0  # W_in scale in the driven regime
lr = 1.0  # leak rate
drive = "uniform"  # uniform on [-1, 1] or standard gaussian
mc_k_max = 100  # delays of the memory capacity
refine_points = 8  # extra srs inside the grid cell that brackets the autonomous sr*
threads = 1  # torch threads (small batched matmuls on a shared CPU: 1 is fastest)
live_sr = 1.2  # spectral radius of the static live view
live_units = 100  # size of the static live view

# %%
smoke = dict(n_seeds=2, n_sr=5, steps=200, washout=50, units_list="20,40", mc_k_max=20, refine_points=3)  # fmt: skip
if profile == "smoke":
    globals().update(smoke)
outputs = results.Outputs(profile)
units = results.parse_list(units_list)
srs = [float(x) for x in np.round(np.linspace(sr_min, sr_max, n_sr), 4)]
seeds = list(range(n_seeds))
torch.set_num_threads(threads)
print(f"profile={profile}: {n_sr} sr x {n_seeds} seeds x {units} units, {steps} steps")

# %% [markdown]
# ## Compute

# %%
t0 = time.perf_counter()
sweep_args = dict(steps=steps, washout=washout, input_scaling=input_scaling, lr=lr, drive=drive,
                  mc_k_max=mc_k_max, seed=seed)  # fmt: skip
# cached by its arguments and the code (ran.util.memo): a warm rerun reads the table back
df = memo(outputs, "esn_sweep", dict(srs=srs, seeds=seeds, units=units, threads=threads, **sweep_args),
          dynamics.sweep, srs, seeds, units, **sweep_args)  # fmt: skip
sweep_s = time.perf_counter() - t0
payload, summary = dynamics.summarize(df, refine_points=refine_points)
print(f"sweep: {len(df)} rows in {sweep_s:.1f} s")
for f in summary[1:]:
    print(f["text"])

# %% [markdown]
# ## Figures

# %%
n_show = 200 if 200 in units else units[-1]
fig = viz.metrics_vs_sr(df, n_show)
p_metrics = outputs.figure_path("01_metrics_vs_sr.png")
fig.savefig(p_metrics, dpi=120)
plt.show()

# %%
fig = viz.mc_vs_units(df)
p_mc = outputs.figure_path("01_mc_vs_units.png")
fig.savefig(p_mc, dpi=120)
plt.show()

# %%
fig = viz.boundary_plot(payload)
p_boundary = outputs.figure_path("01_esp_boundary.png")
fig.savefig(p_boundary, dpi=120)
plt.show()

# %% [markdown]
# ### Live view
# With `interactive = True` the sliders redraw one reservoir's trajectories
# from two initial states in both regimes; otherwise the static version below.

# %%
if interactive:
    import ipywidgets as w

    slider = dict(continuous_update=False)  # redraw on release: one redraw takes seconds
    w.interact(viz.live_show, sr=w.FloatSlider(value=0.9, min=0.1, max=2.0, step=0.05, **slider),
               units=w.IntSlider(value=100, min=10, max=400, step=10, **slider),
               input_scaling=w.FloatSlider(value=input_scaling, min=0.0, max=2.0, step=0.05,
                                           **slider),
               lr=w.FloatSlider(value=lr, min=0.05, max=1.0, step=0.05, **slider),
               steps=w.fixed(300), seed=w.fixed(seed))  # fmt: skip
else:
    fig = viz.live(live_sr, live_units, input_scaling, lr, steps=300, seed=seed)
    p_live = outputs.figure_path("01_live.png")
    fig.savefig(p_live, dpi=120)
    plt.show()

# %% [markdown]
# ## Save

# %%
figures = {"metrics": p_metrics, "mc": p_mc, "boundary": p_boundary} | ({} if interactive else {"live": p_live})  # fmt: skip
findings = esn.findings(df, payload, summary, figures, outputs, n_show=n_show, n_seeds=n_seeds, steps=steps,
                        drive=drive, input_scaling=input_scaling, mc_k_max=mc_k_max, live_sr=live_sr,
                        live_units=live_units)  # fmt: skip
payload["settings"] = dict(srs=srs, seeds=seeds, units=units, steps=steps, washout=washout,
                           input_scaling=input_scaling, lr=lr, drive=drive, mc_k_max=mc_k_max,
                           drive_distribution="uniform[-1, 1]" if drive == "uniform" else "N(0, 1)",
                           esp_tol=float(df.esp_tol.iloc[0]), n_init=2, torch_threads=threads)  # fmt: skip
payload["table"] = df.to_dict(orient="list")
path = results.save_results("01_esn_dynamics", payload, outputs, seed=seed,
                            wall_time_s=time.perf_counter() - t0, findings=findings,
                            extra_meta={"timing": {"sweep_s": sweep_s}})  # fmt: skip
print(f"saved {outputs.rel(path)}")
