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
# # 05 · Reservoir seed selection
#
# RAN never trains the reservoir: it draws one at random and keeps it. How
# much does that draw matter? We train the same readout and gate on the same
# probe (secret-word recall, K candidates) once per reservoir seed: only
# `ReservoirConfig.seed` changes (so `W` and `W_in`); the readout init, the
# data order and every hyper-parameter stay fixed. The best seed is chosen on
# **validation** accuracy and reported on the held-out **test** split with its
# Wilson 95% CI and the controls (reset, shuffled, stateless base model,
# chance). Across seeds we report the spread of test accuracy, the optimism of
# picking the best on validation, tests of equal accuracy (one-way ANOVA,
# chi-square of homogeneity, Cochran's Q for the matched design), and whether
# metrics of the untrained reservoir (participation ratio, memory capacity;
# `ran.reservoir.dynamics`) predict the trained accuracy (Spearman rho, bootstrap CI
# over seeds). Logic lives in `ran.study.seeds` and `ran.training.train`.

# %% [markdown]
# ## Imports

# %%
import gc
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats

from ran.injection.config import InjectionConfig
from ran.reservoir import ReservoirConfig, dynamics
from ran.study import seeds as SD
from ran.study.surgery import model_drives
from ran.training import jobs
from ran.training.config import TrainConfig
from ran.training.train import train
from ran.util import results
from ran.util.memo import memo
from ran.util.stats import wilson_interval

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
model_name = "smollm2-135m"  # the base model (smoke: tiny-llama)
seed = 0  # readout init, data order, probe episodes, drive noise and bootstrap
first_seed = 0  # reservoir seeds are first_seed .. first_seed + n_seeds - 1
n_seeds = 8  # reservoir seeds trained
k = 16  # secret-word candidates (chance 1/k)
steps = 30  # optimiser steps per seed (no early stopping)
batch_size = 8  # episodes per step
learning_rate = 2e-2  # peak AdamW learning rate (warm-up, then cosine decay)
warmup_steps = 3  # linear warm-up steps
gate_init = 0.5  # per-head gate pre-activation at init (open: the readout learns at once)
n_train = 240  # training episodes (steps * batch_size: each seen once)
n_val = 128  # validation episodes (seed selection)
n_test = 256  # test episodes (reporting; every seed and control sees the same ones)
write_template = "The secret word is {key}."  # the write pass (one template)
units = 512  # reservoir size N
sr = 0.9  # spectral radius
input_scaling = 0.3  # W_in scale
noise_steps = 1200  # steps of the scalar-noise drive for the untrained PR / MC
washout = 200  # steps discarded before the untrained metrics
mc_k_max = 100  # delays of the memory capacity
n_boot = 2000  # bootstrap resamples (over seeds) of Spearman rho
threads = 2  # torch threads (2 when the notebook has the machine to itself)
executor = "local"  # paper profile: the sweep command's executor for the seed runs (local, slurm)

# %%
inject_extra = {}  # InjectionConfig overrides (smoke only)
# paper: the size the question needs (32 seeds, full training; every training episode seen once, tighter CIs)
paper = dict(n_seeds=32, steps=150, batch_size=16, warmup_steps=10, n_train=2400, n_val=256,
             n_test=512)  # fmt: skip
smoke = dict(model_name="tiny-llama", n_seeds=3, steps=3, units=64, noise_steps=200, washout=50, mc_k_max=20,
             probe_params=dict(k=4, keys=["dog", "cat", "owl", "bee"], write_templates=["{key}"], n_train=96,
                               n_val=24, n_test=48),  # a random 4-layer model learns K=4 recall of a bare key
             inject_extra=dict(n_slots=4), learning_rate=3e-2, warmup_steps=2, batch_size=16, input_scaling=0.5,
             n_boot=500)  # fmt: skip
if profile == "paper":
    globals().update(paper)
probe_params = dict(k=k, n_train=n_train, n_val=n_val, n_test=n_test,
                    write_templates=[write_template])  # fmt: skip
if profile == "smoke":
    globals().update(smoke)
outputs = results.Outputs(profile)
torch.set_num_threads(threads)
res_seeds = list(range(first_seed, first_seed + n_seeds))
reservoir = ReservoirConfig(units=units, sr=sr, input_scaling=input_scaling)
injection = InjectionConfig(reservoir=reservoir, gate_init=gate_init, **inject_extra)
base = TrainConfig(model_name=model_name, probe="secret_word", probe_params=probe_params,
                   injection=injection, steps=steps, batch_size=batch_size,
                   learning_rate=learning_rate, warmup_steps=warmup_steps, eval_every=0,
                   patience=0, seed=seed)  # fmt: skip
cfgs = SD.seed_configs(base, res_seeds)
chance = 1.0 / base.make_probe().n_candidates
sweep_file = results.REPO_ROOT / "sweeps" / "05_seed_study_paper.yaml"
print(f"profile={profile}: {model_name}, {n_seeds} reservoir seeds, {steps} steps, "
      f"K={base.make_probe().n_candidates}; runs {[c.config_hash() for c in cfgs]}")  # fmt: skip

# %% [markdown]
# ## Compute
# ### Train (or load) one run per reservoir seed, evaluate val and test
#
# `eval_every=0` and `patience=0`: every seed trains exactly `steps` steps and
# is evaluated on validation once, at the end, so validation is used only to
# pick the seed. Test runs the trained reservoir for every seed; the controls
# run on the seed picked on validation (below).

# %%
t0 = time.perf_counter()
if profile == "paper":  # through the sweep command's job layer: python -m ran sweep <sweep_file>
    from ran.sweeps.sweep import read_sweep, run_sweep

    sweep = read_sweep(sweep_file)
    assert [c.config_hash() for _, c in sweep.jobs()] == [c.config_hash() for c in cfgs], (
        f"the paper configs differ from {sweep_file}")  # fmt: skip
    rep = run_sweep(sweep, executor, outputs=outputs)
    assert not rep.failures and not rep.pending, f"seed runs failed: {rep.failures}"
    jobs.note_trained(rep.rows)  # trained now, by the sweep's jobs: not "loaded" below
else:  # 2 worker processes of 1 thread on a 2-core machine (ran.training.jobs); smoke: in-process
    jobs.train_all(cfgs, outputs)
rows, test_correct = [], {}
for cfg in cfgs:
    t1 = time.perf_counter()
    run = train(cfg, outputs, progress=False, lazy=True)
    t2 = time.perf_counter()
    ev = run.evaluate("test", ("reservoir",))
    val = run.history["val_acc"][-1]
    vk = round(val * len(run.episodes["val"]))
    vlo, vhi = wilson_interval(vk, len(run.episodes["val"]))
    hit = np.array(ev["reservoir"]["pred"]) == np.array(ev["answers"])
    res_seed = cfg.injection.reservoir.seed
    test_correct[res_seed] = hit.astype(int)
    rows.append(dict(seed=res_seed, hash=run.hash, val_acc=val, val_lo=vlo, val_hi=vhi,
                     val_correct=vk, n_val=len(run.episodes["val"]),
                     test_acc=ev["reservoir"]["acc"], test_lo=ev["reservoir"]["ci_low"],
                     test_hi=ev["reservoir"]["ci_high"], test_correct=ev["reservoir"]["correct"],
                     n_test=ev["n"],
                     final_loss=run.history["loss"][-1], train_wall_s=run.wall_time_s,
                     loaded=run.loaded, this_run_s=t2 - t1, eval_s=time.perf_counter() - t2))  # fmt: skip
    print({k_: (round(v, 3) if isinstance(v, float) else v) for k_, v in rows[-1].items()})
    del run
    gc.collect()
df = pd.DataFrame(rows)
answers = ev["answers"]
train_s = time.perf_counter() - t0

# %% [markdown]
# ### Best on validation, seed variance, tests of equal accuracy
#
# * One-way ANOVA: per-episode correctness (0/1) as observations grouped by
#   seed; H0: the mean correctness (accuracy) is the same for every seed.
# * Chi-square test of homogeneity of proportions on the seeds x (right,
#   wrong) table: the same H0, the test made for binary outcomes.
# * Both assume independent groups, but every seed answers the *same* test
#   episodes; Cochran's Q is the test for k matched binary outcomes.

# %%
best = SD.select_best(df)
best_seed = int(best.seed)
var = SD.seed_variance(df, best)
groups = [test_correct[s] for s in res_seeds]
anova = SD.anova_oneway(groups)
scipy_anova = stats.f_oneway(*groups)
chi2 = SD.chi2_homogeneity(df.test_correct.tolist(), df.n_test.tolist())
cochran = SD.cochran_q(np.stack(groups, 1))
print(f"best on val: seed {best_seed}; variance {var}")
t_ctrl = time.perf_counter()
run = train(cfgs[res_seeds.index(best_seed)], outputs, progress=False)  # cached: loads
ctrl = run.evaluate("test", ("reservoir", "reset", "shuffled", "stateless", "oracle"))
assert ctrl["reservoir"]["correct"] == int(best.test_correct)  # same run, same episodes
del run
gc.collect()
ctrl_s = time.perf_counter() - t_ctrl
print(
    {c: round(ctrl[c]["acc"], 3) for c in ("reservoir", "reset", "shuffled", "stateless", "oracle")}
)
print(f"ANOVA {anova} (scipy F={scipy_anova.statistic:.4g}, p={scipy_anova.pvalue:.4g})")
print(f"chi-square {chi2}; Cochran's Q {cochran}")

# %% [markdown]
# ### Untrained metrics of each reservoir
#
# * Scalar unit noise (`ran.reservoir.dynamics.sweep`, driven regime, uniform[-1, 1]
#   through a +-1 input column): participation ratio and memory capacity of the
#   same `W` (same seed, units, sr, input_scaling; the input column differs
#   from the trained `W_in`, whose width is the model's).
# * Real drives: the untouched model's write-pass drives on the validation
#   episodes through the trained-shape `W_in` of each seed. In a two-pass
#   episode the question reads `r1 = tanh(W_in u)`, so `W` never acts; we
#   measure the participation ratio of r1 across episodes and the share of its
#   variance explained by the secret word.

# %%
t3 = time.perf_counter()
inj = base.injection  # every seed's, but for the reservoir seed
noise_args = dict(regimes=("driven",), steps=noise_steps, washout=washout, input_scaling=input_scaling,
                  lr=inj.reservoir.lr, rc_connectivity=inj.reservoir.rc_connectivity, mc_k_max=mc_k_max,
                  seed=seed)  # fmt: skip
# the sweep and the drives are cached by their arguments and the code (ran.util.memo)
sw = memo(outputs, "esn_sweep", dict(srs=[sr], seeds=res_seeds, units=[units], threads=threads, **noise_args),
          dynamics.sweep, [sr], res_seeds, [units], **noise_args)  # fmt: skip
sw = sw.set_index("seed")
df["pr_noise"] = df.seed.map(sw.participation_ratio)
df["mc_noise"] = df.seed.map(sw.memory_capacity)
df["lyapunov_noise"] = df.seed.map(sw.lyapunov)
val_eps = base.make_probe().splits()["val"]
drive_args = dict(texts=[e.passes[0] for e in val_eps], pooling=inj.pooling, layer=inj.layer,
                  seed=base.model_seed)  # fmt: skip
drives = memo(outputs, "drives", dict(model=model_name, threads=threads, **drive_args), model_drives,
              model_name, **drive_args)  # fmt: skip
val_answers = [e.answer for e in val_eps]
one = [SD.one_step_metrics(c.injection.reservoir, drives, val_answers) for c in cfgs]
for col in ("pr_real", "sep_real", "sat_real"):
    df[col] = [m[col] for m in one]
metrics = SD.ranked_metrics(df)  # column -> label of the metrics correlated with accuracy
corr = {m: SD.spearman_bootstrap(df[m], df.test_acc, n_boot, seed) for m in metrics}
corr_val = {m: SD.spearman_bootstrap(df[m], df.val_acc, n_boot, seed) for m in metrics}
rho_crit = SD.rho_critical(n_seeds)  # |rho| needed for p < SD.ALPHA
untrained_s = time.perf_counter() - t3
print(df[["seed", "val_acc", "test_acc", *metrics]].round(4).to_string(index=False))
print(
    {
        m: (round(c["rho"], 3), round(c["ci_low"], 3), round(c["ci_high"], 3))
        for m, c in corr.items()
    }
)

# %% [markdown]
# ## Figures

# %%
ctrl_lines = {f"{c} (seed {best_seed})": ctrl[c]["acc"] for c in ("reset", "shuffled", "stateless")}
fig = SD.plot_seed_accuracy(df, best_seed, chance, ctrl_lines)
p_acc = outputs.figure_path("05_seed_accuracy.png")
fig.savefig(p_acc, dpi=120)
plt.show()

# %%
fig = SD.plot_untrained_vs_trained(df, metrics, corr, "test_acc")
p_corr = outputs.figure_path("05_untrained_vs_trained.png")
fig.savefig(p_corr, dpi=120)
plt.show()

# %% [markdown]
# ## Save

# %%
b = df[df.seed == best_seed].iloc[0]
figures = {"accuracy": p_acc, "correlation": p_corr}
findings = SD.findings(df, best_seed, ctrl, var, anova, chi2, cochran, corr, corr_val, metrics, base, chance,
                       n_boot, rho_crit, figures, outputs)  # fmt: skip
payload = {
    "settings": dict(model_name=model_name, seeds=res_seeds, base_config=base.to_dict(),
                     run_hashes=df.hash.tolist(), noise_steps=noise_steps, washout=washout,
                     mc_k_max=mc_k_max, n_boot=n_boot, torch_threads=threads,
                     noise_drive="uniform[-1, 1] scalar through a +-1 column",
                     real_drives=f"{len(val_eps)} validation write passes, untouched model"),
    "per_seed": df.to_dict(orient="list"),
    "best": dict(seed=best_seed, val_acc=b.val_acc, test=dict(acc=b.test_acc, ci_low=b.test_lo,
                 ci_high=b.test_hi, correct=int(b.test_correct), n=int(b.n_test)),
                 chance=chance, controls={c: {k_: v for k_, v in ctrl[c].items() if k_ != "pred"}
                 for c in ("reset", "shuffled", "stateless", "oracle")}),
    "variance": var,
    "anova": anova | {"scipy_F": scipy_anova.statistic, "scipy_p": scipy_anova.pvalue},
    "chi2_homogeneity": chi2,
    "cochran_q": cochran,
    "spearman_test": corr,
    "spearman_val": corr_val,
    "rho_critical_p05": rho_crit,
    "test_answers": answers,
    "test_correct": {str(s): v for s, v in test_correct.items()},
    "timing": dict(train_and_eval_s=train_s, controls_s=ctrl_s, untrained_s=untrained_s,
                   train_wall_s_sum=float(df.train_wall_s.sum())),
}  # fmt: skip
path = results.save_results("05_seed_selection", payload, outputs, seed=seed, model_name=model_name,
                            wall_time_s=time.perf_counter() - t0, findings=findings)  # fmt: skip
print(f"saved {outputs.rel(path)}")
for f in findings:
    print(f.get("text", f.get("caption")))
