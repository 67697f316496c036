"""Evaluation throughput: one 2-thread process vs two 1-thread processes (issue 20's next step).

Training already runs in 2 one-thread workers (:func:`ran.training.jobs.train_all`); the
evaluations that follow it run in the notebook's own process with 2 torch threads. This
measures what moving them into 2 one-thread worker processes would buy, before any
notebook is rebuilt around it. One evaluation is :func:`ran.tasks.episodes.evaluate`, every
control on the same secret-word test episodes, on a model with the reservoir injected (gate
open; a trained readout costs the same), the lower-layer store off so that no repetition
reuses another's work. Arms, interleaved with the order alternating between repetitions:

* ``one_2t``: this process, 2 torch threads, all the episodes (the notebooks today);
* ``one_1t``: this process, 1 thread, all the episodes;
* ``two_1t``: 2 worker processes of 1 thread, each evaluating half the episodes (split at a
  batch boundary, so every batch, and the shuffled control's pool, is the same), started
  together; each worker built its model once and evaluated once before the timing (a
  notebook's workers would live as long as the notebook).

Reported: the median per-repetition speed-ups ``one_2t / two_1t`` and ``one_2t / one_1t``
(time ratios, > 1: faster than the notebooks today) with percentile bootstrap CIs, the
machine's GFLOPS before and after, and whether the workers' predictions equal the
1-thread process's (and the 2-thread one's).

Run: ``python -m ran bench evaljobs [--profile default]`` (updates ``bench.json``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from ran.bench import machine
from ran.bench.lowercache import budget, eval_setup
from ran.bench.store import bootstrap_median_ci, check, measured, section_met
from ran.injection.models import SMOLLM2
from ran.util.results import Outputs
from ran.util.wording import ratio_text

ARMS = ("one_2t", "one_1t", "two_1t")
PROFILE_SETTINGS = {  # profile -> model, keys, test episodes, repetitions, batch
    "smoke": dict(model_name="tiny-llama", k=4, n_test=32, reps=2, batch=8),
    "default": dict(model_name=SMOLLM2, k=16, n_test=64, reps=3, batch=32),
    "paper": dict(model_name=SMOLLM2, k=16, n_test=128, reps=5, batch=32),
}
_STATE: dict = {}  # a worker's model, tokenizer, handle and episodes (built once)


def _evaluate(handle, tok, episodes, batch) -> tuple[float, dict]:
    """Seconds and ``{control: predictions}`` of one evaluation of ``episodes``."""
    from ran.tasks.episodes import CONTROLS, evaluate

    t0 = time.perf_counter()
    out = evaluate(handle, tok, episodes, CONTROLS, batch)
    return time.perf_counter() - t0, {c: list(out[c]["pred"]) for c in CONTROLS}


def _worker_init(model_name, k, n_test, seed, batch, part) -> None:
    """A worker: 1 thread, no lower-layer store, its half of the episodes, one warm-up."""
    os.environ["RAN_LOWER_CACHE_MB"] = "0"
    torch.set_num_threads(1)
    handle, tok, episodes = eval_setup(model_name, k, n_test, seed)
    _STATE.update(handle=handle, tok=tok, episodes=_half(episodes, batch, part), batch=batch)
    _evaluate(handle, tok, _STATE["episodes"], batch)


def _worker_eval() -> tuple[float, dict]:
    s = _STATE
    return _evaluate(s["handle"], s["tok"], s["episodes"], s["batch"])


def _half(episodes, batch: int, part: int):
    """The first (``part`` 0) or second half of ``episodes``, split at a batch boundary."""
    cut = max(1, (len(episodes) // batch) // 2) * batch
    return episodes[:cut] if part == 0 else episodes[cut:]


def _timed_arms(model_name, k, n_test, reps, batch, seed) -> tuple[dict, dict]:
    """Each arm's seconds per repetition and its predictions (the first repetition's)."""
    threads = torch.get_num_threads()
    handle, tok, episodes = eval_setup(model_name, k, n_test, seed)
    ctx = mp.get_context("spawn")
    pools = [
        ProcessPoolExecutor(
            1,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(model_name, k, n_test, seed, batch, part),
        )
        for part in (0, 1)
    ]
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    preds: dict[str, dict] = {}
    try:
        for pool in pools:  # wait until both workers are built and warmed up
            pool.submit(int).result()
        torch.set_num_threads(2)
        _evaluate(handle, tok, episodes, batch)  # this process's warm-up

        def arm(name: str) -> tuple[float, dict]:
            if name == "two_1t":
                t0 = time.perf_counter()
                jobs = [pool.submit(_worker_eval) for pool in pools]
                halves = [j.result()[1] for j in jobs]
                return time.perf_counter() - t0, {c: halves[0][c] + halves[1][c] for c in halves[0]}
            torch.set_num_threads(2 if name == "one_2t" else 1)
            return _evaluate(handle, tok, episodes, batch)

        for i in range(reps):
            for a in ARMS if i % 2 == 0 else ARMS[::-1]:
                dt, p = arm(a)
                times[a].append(dt)
                preds.setdefault(a, p)
    finally:
        for pool in pools:
            pool.shutdown()
        handle.remove()
        torch.set_num_threads(threads)
    return times, preds


def measure(model_name: str, k: int, n_test: int, reps: int, batch: int, seed: int = 0) -> dict:
    """Interleaved evaluation times of the three arms; see the module doc."""
    if reps < 1 or n_test < 2 * batch:
        raise ValueError(f"need reps >= 1 and n_test >= 2 * batch, got {reps}, {n_test}, {batch}")
    gflops_before = machine.snapshot()["gflops"]
    with budget("0"):  # the spawned workers inherit it
        times, preds = _timed_arms(model_name, k, n_test, reps, batch, seed)
    t = {a: np.array(v) for a, v in times.items()}
    speedup = {a: t["one_2t"] / t[a] for a in ("two_1t", "one_1t")}
    return {
        "model": model_name,
        "k": k,
        "n_test": n_test,
        "batch": batch,
        "reps": reps,
        "times_s": {a: v.tolist() for a, v in t.items()},
        "median_s": {a: float(np.median(v)) for a, v in t.items()},
        "speedup_two_1t": float(np.median(speedup["two_1t"])),
        "speedup_two_1t_ci95": list(bootstrap_median_ci(speedup["two_1t"], seed=seed)),
        "speedup_one_1t": float(np.median(speedup["one_1t"])),
        "speedup_one_1t_ci95": list(bootstrap_median_ci(speedup["one_1t"], seed=seed)),
        "identical_to_1_thread": preds["two_1t"] == preds["one_1t"],
        "identical_to_2_threads": preds["two_1t"] == preds["one_2t"],
        "gflops": [gflops_before, machine.snapshot()["gflops"]],
        "load_avg_1min": os.getloadavg()[0],
    }


def run(outputs: Outputs, seed: int = 0, **overrides) -> dict:
    """Measure and return the ``eval_jobs`` section of ``bench.json`` (with its checks)."""
    settings = PROFILE_SETTINGS[outputs.profile] | overrides
    return measured(describe, measure, seed=seed, **settings)


def describe(res: dict) -> dict:
    """Add the checks, ``met`` and the summary sentence to a :func:`measure` result."""
    two, ci2 = res["speedup_two_1t"], res["speedup_two_1t_ci95"]
    one, ci1 = res["speedup_one_1t"], res["speedup_one_1t_ci95"]
    res["checks"] = [
        check("evaluation speed-up, 2 processes x 1 thread over 1 process x 2 threads", two,
              None, ci=ci2, ratio=True),
        check("same, 1 process x 1 thread", one, None, ci=ci1, ratio=True),
        check("predictions of the 2 processes equal the 1-thread process's (1 = yes)",
              float(res["identical_to_1_thread"]), 1, ">="),
    ]  # fmt: skip
    res["met"] = section_met(res["checks"])
    m, g = res["median_s"], res["gflops"]
    res["summary"] = (
        f"Evaluating every control on {res['n_test']} K = {res['k']} secret-word episodes on "
        f"{res['model']} (batch {res['batch']}, lower-layer store off) at {min(g):.0f}-"
        f"{max(g):.0f} GFLOPS: {m['one_2t']:.1f} s in one process of 2 threads, "
        f"{m['one_1t']:.1f} s of 1 thread, {m['two_1t']:.1f} s in 2 one-thread processes "
        f"taking half the episodes each: a speed-up of {ratio_text(two, ci2, digits=2)} over "
        f"the 2-thread process (1 thread alone: {ratio_text(one, ci1, digits=2)}), "
        f"{res['reps']} interleaved repetitions; predictions of the 2 processes equal the "
        f"1-thread process's: {'yes' if res['identical_to_1_thread'] else 'no'}, the 2-thread "
        f"one's: {'yes' if res['identical_to_2_threads'] else 'no'}"
    )
    return res
