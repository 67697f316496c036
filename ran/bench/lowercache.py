"""Evaluation time with and without reusing the frozen lower layers (:mod:`ran.injection.lowercache`).

One evaluation is :func:`ran.tasks.episodes.evaluate` with every control on the same
secret-word test episodes, on a model with the reservoir injected (gate open;
a trained readout costs the same). Three arms, interleaved with the order
alternating between repetitions so that drifts in machine load hit them alike:

* ``off``: ``RAN_LOWER_CACHE_MB=0``, every call runs the whole model;
* ``on``: the store starts empty, so the first control pays for layers
  0..L-1 and the others reuse them (a notebook's first evaluation);
* ``shared``: the store still holds the episodes (a second mechanism, or a
  validation pass, evaluated on the same episodes).

Reported: the median per-repetition ratios on/off and shared/off with
percentile bootstrap CIs, and whether the three arms give identical results.
The target, <= 0.70 for ``on``, is the saving estimated before the store was
built (about 30% of evaluation time).

Run: ``python -m ran bench lowercache [--profile default]`` (updates ``bench.json``).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np
import torch

from ran.bench.store import bootstrap_median_ci, check, measured, section_met
from ran.injection import lowercache as LC
from ran.injection.config import InjectionConfig
from ran.injection.models import SMOLLM2, load_model
from ran.mechanisms.reservoir_slots import inject
from ran.tasks.episodes import CONTROLS, evaluate
from ran.tasks.probes import make_probe
from ran.util.results import Outputs
from ran.util.wording import ratio_text

TARGET = 0.70  # the saving estimated before the store was built (about 30% of evaluation)
ARMS = ("off", "on", "shared")

PROFILE_SETTINGS = {  # profile -> model, keys, test episodes, repetitions, batch
    "smoke": dict(model_name="tiny-llama", k=4, n_test=16, reps=2, batch=8),
    "default": dict(model_name=SMOLLM2, k=16, n_test=64, reps=3, batch=32),
    "paper": dict(model_name=SMOLLM2, k=16, n_test=128, reps=5, batch=32),
}


@contextmanager
def budget(mb: str):
    """``RAN_LOWER_CACHE_MB`` set to ``mb`` inside the block, restored after."""
    before = os.environ.get("RAN_LOWER_CACHE_MB")
    os.environ["RAN_LOWER_CACHE_MB"] = mb
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAN_LOWER_CACHE_MB", None)
        else:
            os.environ["RAN_LOWER_CACHE_MB"] = before


def injected(model_name: str, seed: int):
    """(handle, tokenizer) of a benched model: frozen, the reservoir injected, gate open."""
    model, tok = load_model(model_name, seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    return inject(model, InjectionConfig(gate_init=1.0, seed=seed)), tok


def eval_setup(model_name: str, k: int, n_test: int, seed: int):
    """(handle, tokenizer, test episodes) of the benched evaluation: :func:`injected` and
    ``n_test`` K = ``k`` secret-word test episodes."""
    handle, tok = injected(model_name, seed)
    probe = make_probe("secret_word", k=k, n_train=n_test, n_val=n_test, n_test=n_test, seed=seed)
    return handle, tok, probe.splits()["test"]


def measure(model_name: str, k: int, n_test: int, reps: int, batch: int, seed: int = 0) -> dict:
    """Interleaved evaluation times of the three arms; see the module doc."""
    if reps < 1 or n_test < 2:
        raise ValueError(f"need reps >= 1 and n_test >= 2, got {reps}, {n_test}")
    handle, tok, episodes = eval_setup(model_name, k, n_test, seed)

    hits = dict.fromkeys(ARMS, 0)

    def arm(name: str) -> tuple[float, dict]:
        if name == "on":
            LC.clear()
        before = LC.STATS.hits
        t0 = time.perf_counter()
        with budget("0" if name == "off" else os.environ.get("RAN_LOWER_CACHE_MB", "4096")):
            out = evaluate(handle, tok, episodes, CONTROLS, batch)
        dt = time.perf_counter() - t0
        hits[name] = LC.STATS.hits - before  # calls served from the store (last repetition)
        return dt, out

    times = {a: [] for a in ARMS}
    reference, identical = None, True
    for i in range(reps):
        order = ARMS if i % 2 == 0 else ("on", "shared", "off")  # shared always follows on
        for a in order:
            dt, out = arm(a)
            times[a].append(dt)
            reference = out if reference is None else reference
            identical &= out == reference
    handle.remove()
    LC.clear()
    t = {a: np.array(v) for a, v in times.items()}
    ratios = {a: t[a] / t["off"] for a in ("on", "shared")}
    return {
        "model": model_name,
        "k": k,
        "n_test": n_test,
        "controls": list(CONTROLS),
        "reps": reps,
        "threads": torch.get_num_threads(),
        "times_s": {a: v.tolist() for a, v in t.items()},
        "median_s": {a: float(np.median(v)) for a, v in t.items()},
        "ratio_on": float(np.median(ratios["on"])),
        "ratio_on_ci95": list(bootstrap_median_ci(ratios["on"], seed=seed)),
        "ratio_shared": float(np.median(ratios["shared"])),
        "ratio_shared_ci95": list(bootstrap_median_ci(ratios["shared"], seed=seed)),
        "identical": bool(identical),
        "served_calls": hits,
        "target": TARGET,
    }


def run(outputs: Outputs, seed: int = 0, **overrides) -> dict:
    """Measure and return the ``lowercache`` section of ``bench.json`` (with its checks)."""
    settings = PROFILE_SETTINGS[outputs.profile] | overrides
    return measured(describe, measure, seed=seed, **settings)


def describe(res: dict) -> dict:
    """Add the checks, ``met`` and the summary sentence to a :func:`measure` result."""
    on, ci = res["ratio_on"], res["ratio_on_ci95"]
    sh, ci_sh = res["ratio_shared"], res["ratio_shared_ci95"]
    res["checks"] = [
        check(
            "evaluation time, lower layers reused / not (first evaluation)",
            on,
            TARGET,
            ci=ci,
            ratio=True,
        ),
        check(
            "same, the episodes already stored (a second mechanism)", sh, None, ci=ci_sh, ratio=True
        ),
        check(
            "results identical with and without reuse (1 = yes)", float(res["identical"]), 1, ">="
        ),
    ]
    res["met"] = section_met(res["checks"])
    m = res["median_s"]
    res["summary"] = (
        f"Evaluating {len(res['controls'])} controls on {res['n_test']} K = {res['k']} "
        f"secret-word episodes on {res['model']}: {m['off']:.1f} s with every layer run, "
        f"{m['on']:.1f} s reusing layers 0..L-1 within the evaluation (median ratio "
        f"{ratio_text(on, ci, digits=2)}) and {m['shared']:.1f} s with the episodes already "
        f"stored (ratio {ratio_text(sh, ci_sh, digits=2)}), {res['reps']} interleaved "
        f"repetitions; results identical in every arm: {'yes' if res['identical'] else 'no'}"
    )
    return res
