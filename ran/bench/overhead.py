"""Forward-latency overhead of the injected reservoir (gate open) on SmolLM2-135M.

Two copies of the same model are loaded: one untouched, one injected with the
gate opened (the real cost: plain attention, slot attention, readout and one
reservoir step at layer L). Each repetition times one forward pass of each on
the same T tokens (batch 1; T = 256 by default; the fastest of ``inner`` passes), in an
order that alternates between repetitions, so drifts in machine load hit both arms alike. The result is the
median of the per-repetition ratios with a percentile bootstrap CI.

Run: ``python -m ran bench overhead [--profile default]`` (updates ``bench.json``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ran.bench.store import bootstrap_median_ci, check, measured, section_met
from ran.evaluation.quality import time_forward
from ran.injection.config import InjectionConfig
from ran.injection.models import SMOLLM2, load_model
from ran.mechanisms.reservoir_slots import inject
from ran.util.results import Outputs
from ran.util.wording import ratio_text

TARGET = 1.02  # the overhead budget of the design


def layer_extra_cost(handle, seq_len: int, reps: int = 200, seed: int = 0) -> dict:
    """Median time of layer L's attention call, injected vs the base function alone.

    Random q/k/v of the layer's shapes (the cost does not depend on values);
    the injected call includes the slot readout, slot attention, gate blend,
    drive pooling and one reservoir step. Interleaved, ``reps`` calls each.
    """
    module = handle._attn
    cfg = handle.model.config
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    hd = handle.input_dim // n_heads
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n_heads, seq_len, hd, generator=gen)
    k, v = (torch.randn(1, n_kv, seq_len, hd, generator=gen) for _ in range(2))
    kw = {"scaling": hd**-0.5, "dropout": 0.0}
    t_base, t_inj = [], []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            handle._base_fn(module, q, k, v, None, **kw)
            t1 = time.perf_counter()
            handle(module, q, k, v, None, **kw)
            t_inj.append(time.perf_counter() - t1)
            t_base.append(t1 - t0)
    return {
        "base_ms": 1000 * float(np.median(t_base)),
        "injected_ms": 1000 * float(np.median(t_inj)),
    }


def measure(
    model_name: str = SMOLLM2,
    seq_len: int = 256,
    reps: int = 40,
    inner: int = 2,
    warmup: int = 2,
    threads: int = 1,
    seed: int = 0,
) -> dict:
    """Interleaved latencies of the untouched and the injected model; see module doc."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        plain, tok = load_model(model_name, seed=seed)
        injected, _ = load_model(model_name, seed=seed)
        handle = inject(injected, InjectionConfig())
        handle.set_gate(1.0)
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, plain.config.vocab_size, (1, seq_len), generator=gen)
        for _ in range(warmup):
            time_forward(plain, ids)
            time_forward(injected, ids)
        t_plain, t_inj = [], []
        for i in range(reps):
            if i % 2 == 0:
                t_plain.append(time_forward(plain, ids, inner))
                t_inj.append(time_forward(injected, ids, inner))
            else:
                t_inj.append(time_forward(injected, ids, inner))
                t_plain.append(time_forward(plain, ids, inner))
        handle.reset_state()
        layer = layer_extra_cost(handle, seq_len, seed=seed)
        handle.remove()
    finally:
        torch.set_num_threads(before)
    t_plain, t_inj = np.array(t_plain), np.array(t_inj)
    ratios = t_inj / t_plain
    lo, hi = bootstrap_median_ci(ratios, seed=seed)
    return {
        "model": model_name,
        "seq_len": seq_len,
        "batch": 1,
        "reps": reps,
        "inner": inner,
        "threads": threads,
        "layer": handle.layer,
        "t_plain_s": t_plain.tolist(),
        "t_injected_s": t_inj.tolist(),
        "median_plain_s": float(np.median(t_plain)),
        "median_injected_s": float(np.median(t_inj)),
        "median_ratio": float(np.median(ratios)),
        "ratio_ci95": [lo, hi],
        "target": TARGET,
        "layer_call": layer,
        # Intrinsic estimate: the extra work at layer L over the untouched forward time.
        "ratio_from_layer_cost": 1
        + (layer["injected_ms"] - layer["base_ms"]) / (1000 * float(np.median(t_plain))),
    }


PROFILE_SETTINGS = {  # profile -> (model, tokens per pass, interleaved repetitions, inner)
    "smoke": dict(model_name="tiny-llama", seq_len=64, reps=4, inner=1, warmup=1),
    "default": dict(model_name=SMOLLM2, seq_len=256, reps=16, inner=1, warmup=1),
    "paper": dict(model_name=SMOLLM2, seq_len=256, reps=40, inner=2, warmup=2),
}


def run(outputs: Outputs, seed: int = 0, **overrides) -> dict:
    """Measure and return the ``overhead`` section of ``bench.json`` (with its checks)."""
    settings = PROFILE_SETTINGS[outputs.profile] | overrides
    return measured(describe, measure, threads=1, seed=seed, **settings)


def describe(res: dict) -> dict:
    """Add the checks, ``met`` and the summary sentence to a :func:`measure` result."""
    r, ci = res["median_ratio"], res["ratio_ci95"]
    extra_ms = res["layer_call"]["injected_ms"] - res["layer_call"]["base_ms"]
    res["checks"] = [
        check(f"injected / untouched forward time (T = {res['seq_len']})", r, TARGET, ci=ci,
              ratio=True),
        check("same, from the extra layer-L work alone", res["ratio_from_layer_cost"], TARGET,
              ratio=True),
    ]  # fmt: skip
    res["met"] = section_met(res["checks"][:1])
    res["summary"] = (
        f"Injected/untouched forward time on {res['model']} at T = {res['seq_len']}, batch 1: "
        f"median ratio {ratio_text(r, ci)}, {res['reps']} interleaved repetitions, 1 thread "
        f"(untouched {1000 * res['median_plain_s']:.0f} ms, injected "
        f"{1000 * res['median_injected_s']:.0f} ms). The extra work at layer L alone "
        f"({extra_ms:.2f} ms per pass) gives {res['ratio_from_layer_cost']:.4f}"
    )
    return res
