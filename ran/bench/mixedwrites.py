"""Write passes of mixed-schedule batches: every row run vs only the rows that have started.

:class:`ran.tasks.episodes.EpisodeRunner` right-aligns a batch's episodes so that every
question pass happens in the same final call. In a batch of mixed schedules (the elapsed
probe: 0..4 filler passes and 0..4 passes after the event; the fact memory's training mix
of 0, 1, 2 or 4 distractor passes) a row whose episode has not started yet used to be run
through the model anyway and its state put back (``write_all_rows = True``); now only the
started rows are run. This times one :meth:`~ran.tasks.episodes.EpisodeRunner.run` (the
reservoir control, no gradient) of the same test episodes both ways, on a model with the
reservoir injected (gate open), the lower-layer store off so that no repetition reuses
another's work. Arms ``all_rows`` and ``started_rows``, interleaved with the order
alternating between repetitions, for each workload.

Reported per workload: the median per-repetition time ratio started_rows / all_rows with
a percentile bootstrap CI, the rows each arm sent through the write passes, and the
largest absolute difference between the two arms' candidate scores with whether their
predictions agree (the batch composition changes, so the scores may differ in float
rounding).

Run: ``python -m ran bench mixedwrites [--profile default]`` (updates ``bench.json``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ran.bench.lowercache import budget, injected
from ran.bench.store import bootstrap_median_ci, check, measured, section_met
from ran.injection.models import SMOLLM2
from ran.tasks.episodes import EpisodeRunner
from ran.tasks.probes import make_probe
from ran.util.results import Outputs
from ran.util.wording import ratio_text

ARMS = ("all_rows", "started_rows")
WORKLOADS = {  # name -> probe and its parameters (the schedules of notebooks 03 and 06)
    "elapsed": ("elapsed", dict(k_max=4, pre_max=4)),
    "distractor mix": ("fact_in_text", dict(k=16, distractors=(0, 1, 2, 4))),
}
PROFILE_SETTINGS = {  # profile -> model, test episodes per workload, repetitions
    "smoke": dict(model_name="tiny-llama", n_test=16, reps=2),
    "default": dict(model_name=SMOLLM2, n_test=32, reps=3),
    "paper": dict(model_name=SMOLLM2, n_test=32, reps=5),
}


def _episodes(workload: str, n_test: int, seed: int):
    probe, params = WORKLOADS[workload]
    n = dict(n_train=n_test, n_val=n_test, n_test=n_test)
    return make_probe(probe, seed=seed, **params, **n).splits()["test"]


def measure(model_name: str, n_test: int, reps: int, seed: int = 0) -> dict:
    """Interleaved times of both arms on every workload; see the module doc."""
    if reps < 1 or n_test < 2:
        raise ValueError(f"need reps >= 1 and n_test >= 2, got {reps}, {n_test}")
    handle, tok = injected(model_name, seed)
    runner = EpisodeRunner(handle, tok)
    rows, write_only = [0], handle.write_only

    def counted(ids, mask=None):
        rows[0] += ids.shape[0]
        return write_only(ids, mask)

    handle.write_only = counted
    out = {}
    try:
        for workload in WORKLOADS:
            eps = _episodes(workload, n_test, seed)
            times = {a: [] for a in ARMS}
            scores, written = {}, {}
            for i in range(reps):
                for a in ARMS if i % 2 == 0 else ARMS[::-1]:
                    runner.write_all_rows = a == "all_rows"
                    rows[0] = 0
                    t0 = time.perf_counter()
                    with budget("0"), torch.no_grad():
                        scores[a] = runner.run(eps)
                    times[a].append(time.perf_counter() - t0)
                    written[a] = rows[0]
            t = {a: np.array(v) for a, v in times.items()}
            ratio = t["started_rows"] / t["all_rows"]
            a, b = scores["all_rows"], scores["started_rows"]
            out[workload] = {
                "probe": WORKLOADS[workload][0],
                "probe_params": {
                    k: list(v) if isinstance(v, tuple) else v
                    for k, v in WORKLOADS[workload][1].items()
                },
                "times_s": {k: v.tolist() for k, v in t.items()},
                "median_s": {k: float(np.median(v)) for k, v in t.items()},
                "ratio": float(np.median(ratio)),
                "ratio_ci95": list(bootstrap_median_ci(ratio, seed=seed)),
                "rows_written": written,
                "max_abs_diff": float((a - b).abs().max()),
                "same_predictions": bool(torch.equal(a.argmax(1), b.argmax(1))),
            }
    finally:
        handle.write_only = write_only
        handle.remove()
    return {"model": model_name, "n_test": n_test, "reps": reps,
            "threads": torch.get_num_threads(), "workloads": out}  # fmt: skip


def run(outputs: Outputs, seed: int = 0, **overrides) -> dict:
    """Measure and return the ``mixed_writes`` section of ``bench.json`` (with its checks)."""
    settings = PROFILE_SETTINGS[outputs.profile] | overrides
    return measured(describe, measure, seed=seed, **settings)


def describe(res: dict) -> dict:
    """Add the checks, ``met`` and the summary sentence to a :func:`measure` result."""
    checks, parts = [], []
    for name, w in res["workloads"].items():
        checks.append(
            check(
                f"{name}: write time, started rows only / every row",
                w["ratio"],
                None,
                ci=w["ratio_ci95"],
                ratio=True,
            )
        )
        checks.append(
            check(
                f"{name}: same predictions both ways (1 = yes)",
                float(w["same_predictions"]),
                1,
                ">=",
            )
        )
        m, n = w["median_s"], w["rows_written"]
        parts.append(
            f"{name}: {m['all_rows']:.1f} s with every row run ({n['all_rows']} row-passes), "
            f"{m['started_rows']:.1f} s with the started rows only ({n['started_rows']}), "
            f"ratio {ratio_text(w['ratio'], w['ratio_ci95'], digits=2)}, scores within "
            f"{w['max_abs_diff']:.1e}, predictions equal: {'yes' if w['same_predictions'] else 'no'}"
        )
    res["checks"] = checks
    res["met"] = section_met(checks)
    res["summary"] = (
        f"Write passes of {res['n_test']} mixed-schedule test episodes on {res['model']} "
        f"({res['reps']} interleaved repetitions, lower-layer store off): " + "; ".join(parts)
    )
    return res
