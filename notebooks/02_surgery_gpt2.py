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
# # 02 · Surgery: a reservoir inside one attention layer
#
# `ran.mechanisms.reservoir_slots.inject` appends $M$ reservoir slots (keys and values read out of
# the reservoir state $r(t)$) to the keys/values of one mid layer $L$, after
# RoPE and outside the KV cache, behind a per-head gate $g$ closed at init:
# the layer returns $\text{plain} + \tanh(g)(\text{augmented} - \text{plain})$
# with "plain" computed by the model's own attention function, so at init the
# injected model is **bit-identical** to the untouched one. After each pass the
# reservoir is driven once by layer $L$'s attention output pooled at the last
# real token, normalised so that $W_{in}u$ has RMS `input_scaling` whatever the
# width. This notebook checks exactness (GQA Llama: the embedded SmolLM2-135M;
# a GPT-2-architecture model), shows where attention goes once the gate opens,
# and drives the reservoir with real attention streams to choose the pooling
# and `input_scaling`. Logic lives in `ran.mechanisms.reservoir_slots`, `ran.study.surgery`
# and `ran.report.figures.surgery`.

# %% [markdown]
# ## Imports

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.report.figures import surgery as surgery_viz
from ran.reservoir import ReservoirConfig
from ran.study import surgery as A
from ran.util import results

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
model_name = "smollm2-135m"  # model of the slot-attention and drive analyses
gpt2_name = "tiny-gpt2"  # GPT-2-architecture model of the exactness table (paper: gpt2)
seed = 0  # seed of the tiny models and of the random initial states
n_prompts = 48  # prompts in the stream (one pass each)
gate = 1.0  # gate logit g of the slot-attention figure, tanh(1) is 0.76
sr_list = "0.5,0.7,0.9,1.1,1.3"  # spectral radii of the sweep (comma string)
scaling_list = "0.03,0.1,0.3,1,3,10"  # input scalings of the sweep (comma string)
n_seeds = 3  # reservoir seeds of the sweep
max_saturation = 0.05  # saturation budget for choosing input_scaling
threads = 1  # torch threads (the CPU is shared: 1 is fastest)

# %%
if profile == "smoke":
    model_name, gpt2_name, n_prompts, n_seeds = "tiny-gpt2", "tiny-gpt2", 12, 1
if profile == "paper" and gpt2_name == "tiny-gpt2":
    gpt2_name, n_prompts = "gpt2", 128
outputs = results.Outputs(profile)
torch.set_num_threads(threads)
srs = [float(x) for x in sr_list.split(",")]
scalings = [float(x) for x in scaling_list.split(",")]
exact_models = list(dict.fromkeys([model_name, gpt2_name]))
default_res = ReservoirConfig()
default_inj = InjectionConfig()
texts = A.prompts(n_prompts)
print(
    f"profile={profile}: exactness on {exact_models}; analyses on {model_name}, {n_prompts} prompts"
)

# %% [markdown]
# ## Compute
# ### Bit-exactness at init and after `remove()`

# %%
t0 = time.perf_counter()
rows = A.exactness(exact_models, texts, seed=seed)
exact_s = time.perf_counter() - t0
n_equal = sum(r["equal"] and r["equal_after_remove"] for r in rows)
print(f"{n_equal}/{len(rows)} cases bit-identical ({exact_s:.0f} s)")
for r in rows:
    print(r)

# %% [markdown]
# ### Attention on the slots with the gate open, and real drive streams

# %%
model, tok = load_model(model_name, seed=seed)
t1 = time.perf_counter()
mass = A.slot_mass_per_head(model, tok, texts, gate=gate)
drives = {p: A.collect_drives(model, tok, texts, pooling=p) for p in ("last", "mean")}
pstats = {p: A.pooling_stats(u) for p, u in drives.items()}
res_seeds = [default_res.seed + i for i in range(n_seeds)]
sweeps = {
    p: A.drive_sweep(u, srs, scalings, default_res, seeds=res_seeds) for p, u in drives.items()
}
stream_s = time.perf_counter() - t1
best_pool = max(pstats, key=lambda p: pstats[p]["pr"])
chosen = A.choose_scaling(sweeps[default_inj.pooling], default_res.sr, max_saturation)
print(f"pooling stats: {pstats}; chosen input_scaling at sr={default_res.sr}: {chosen}")

# %% [markdown]
# ## Figures

# %%
fig = surgery_viz.slot_mass({model_name: mass})
p_mass = outputs.figure_path("02_slot_mass.png")
fig.savefig(p_mass, dpi=120)
plt.show()

# %%
fig = surgery_viz.sweep_maps(sweeps[default_inj.pooling], chosen=(default_res.sr, chosen))
p_sweep = outputs.figure_path("02_drive_sweep.png")
fig.savefig(p_sweep, dpi=120)
plt.show()

# %%
fig = surgery_viz.pooling_curves(sweeps, pstats, default_res.sr, max_saturation)
p_pool = outputs.figure_path("02_pooling.png")
fig.savefig(p_pool, dpi=120)
plt.show()

# %% [markdown]
# ## Save

# %%
pool = default_inj.pooling
sw = sweeps[pool]
k_sr = int(np.argmin(np.abs(np.asarray(srs) - default_res.sr)))
j_def = int(np.argmin(np.abs(np.asarray(scalings) - default_res.input_scaling)))
sat_def = float(np.asarray(sw["saturation"]).mean(0)[k_sr, j_def])
below_one = [i for i, s in enumerate(srs) if s < 1]
esp_max = float(np.asarray(sw["esp"])[:, below_one].max())
m_mean = mass["mass"].mean(0)
findings = [
    results.table(
        "Injected vs untouched model at init (gate closed) and after remove(): "
        "max |Δ| over logits (forward) or token ids (generate, 20 greedy tokens, KV cache)",
        ["model", "attention", "padding", "output", "max |Δ|", "torch.equal", "equal after remove"],
        [[r["model"], r["impl"], r["padding"], r["output"], r["max_abs_diff"], r["equal"],
          r["equal_after_remove"]] for r in rows],
    ),
    results.text(
        f"At init the injected model is bit-identical to the untouched one in {n_equal} of "
        f"{len(rows)} cases ({', '.join(exact_models)} x eager/sdpa x no/left padding x "
        "forward/generate), and again after remove()."
    ),
    results.figure(
        p_mass,
        f"Attention mass on the {default_inj.n_slots} slots per query head at layer "
        f"{mass['layer']} of {model_name} with the gate at tanh(g) = {mass['gate']:.2f}, "
        f"untrained readout, over {n_prompts} passes: mean {m_mean.mean():.3f} "
        f"(heads {m_mean.min():.3f}-{m_mean.max():.3f}).",
        outputs,
    ),
    results.figure(
        p_sweep,
        f"Reservoir (N = {default_res.units}, {n_seeds} seed(s)) driven by {model_name}'s "
        f"layer-{mass['layer']} '{pool}' drives of {n_prompts} prompts, over sr x input_scaling. "
        f"At sr = {default_res.sr:g} the largest input_scaling with saturation <= "
        f"{max_saturation:g} is {chosen:g} (red); the default {default_res.input_scaling:g} "
        f"saturates {sat_def:.3f} of the units; for sr < 1 two initial states end at most "
        f"{esp_max:.2g} apart (/sqrt(N)) after {sw['steps']} passes.",
        outputs,
    ),
    results.figure(
        p_pool,
        f"Drive pooling: 'last' drives have participation ratio {pstats['last']['pr']:.1f} and "
        f"mean pairwise cosine {pstats['last']['cos']:.2f} across prompts, 'mean' drives "
        f"{pstats['mean']['pr']:.1f} and {pstats['mean']['cos']:.2f}; the more distinct is "
        f"'{best_pool}', the default is '{pool}'.",
        outputs,
    ),
]  # fmt: skip
payload = {
    "exactness": rows,
    "slot_mass": {"per_pass_head": mass["mass"], "layer": mass["layer"], "tanh_gate": mass["gate"]},
    "pooling": pstats,
    "sweeps": sweeps,
    "chosen_input_scaling": chosen,
    "best_pooling_by_pr": best_pool,
    "settings": dict(exact_models=exact_models, model_name=model_name, n_prompts=n_prompts,
                     gate=gate, srs=srs, scalings=scalings, reservoir_seeds=res_seeds,
                     max_saturation=max_saturation, reservoir=default_res, torch_threads=threads,
                     prompts=texts),
}  # fmt: skip
path = results.save_results("02_surgery", payload, outputs, seed=seed, model_name=model_name,
                            wall_time_s=time.perf_counter() - t0, findings=findings,
                            extra_meta={"timing": {"exactness_s": exact_s, "stream_s": stream_s}})  # fmt: skip
print(f"saved {outputs.rel(path)}")
