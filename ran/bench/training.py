"""Training throughput: one process vs 2 worker processes vs workers sharing the lower layers.

The workload is the pipeline's commonest: several runs of one training config that
differ only in the reservoir seed (notebook 05's seed study; the mechanisms of
notebook 04 likewise share their episodes), so every run sees the same episodes in the
same batch order. Each arm trains the same ``n_configs`` runs from an empty run cache
(its own output root, so nothing is loaded) through :mod:`ran.training.jobs`:

* ``serial``: one process (this one) with ``cores()`` torch threads and the in-process
  store of :mod:`ran.injection.lowercache`: the pipeline's notebook loop before the workers;
* ``serial_1t``: the same with 1 torch thread, the bit-identity reference of the workers;
* ``workers``: 2 worker processes of the local executor (submitit), 1 torch thread
  each; a job is a fresh process, so nothing is shared between runs;
* ``shared``: the same 2 workers sharing the frozen lower layers' outputs on disk
  (:mod:`ran.injection.lowerdisk`, a fresh folder): a run reuses what the runs before it, in
  either worker, computed.

Throughput is optimiser steps per second of the arm's wall time (model loading and
worker start-up included: what a notebook waits for); the ratios to ``serial`` are
measured in this one run. The machine's load average is recorded: the 2 cores are
shared, and other work there moves every arm. The end-to-end arms include start-up and
evaluation, so the step itself is also timed alone: in this process (1 thread) the same
training batches run with every layer computed (``off``), with the store empty
(``cold``: computed, stored and written to disk) and served from disk (``disk``: what
a second run of the same episodes gets), interleaved batch by batch.

Run: ``python -m ran bench training [--profile default]`` (updates ``bench.json``).
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ran.bench import machine
from ran.bench.store import bootstrap_median_ci, check, measured, section_met
from ran.injection import lowercache as LC
from ran.injection.config import InjectionConfig
from ran.injection.models import SMOLLM2
from ran.reservoir.config import ReservoirConfig
from ran.training.config import TrainConfig
from ran.training.executors import run_jobs
from ran.training.jobs import cores, spec_for
from ran.util.configio import updated
from ran.util.results import Outputs

TARGET_WORKERS = 1.16  # the lower end of the 1.16-1.39x measured before the layout was chosen
ARMS = ("serial", "serial_1t", "workers", "shared")
EVALS = [{"split": "val", "controls": ["reservoir"]}]
_ENV = ("RAN_LOWER_CACHE_MB", "RAN_LOWER_DISK")

PROFILE_SETTINGS = {  # profile -> model, runs, steps, batch, K, validation episodes, N
    "smoke": dict(model_name="tiny-llama", n_configs=2, steps=3, batch_size=8, k=4, n_val=16,
                  units=64),
    # runs as long as notebook 05's (30 steps): start-up weighs what it weighs in the pipeline
    "default": dict(model_name=SMOLLM2, n_configs=4, steps=30, batch_size=8, k=16, n_val=16,
                    units=512),
    "paper": dict(model_name=SMOLLM2, n_configs=4, steps=20, batch_size=8, k=16, n_val=64,
                  units=512),
}  # fmt: skip


def configs(model_name, n_configs, steps, batch_size, k, n_val, units) -> list[TrainConfig]:
    """Notebook 05's training config, shortened: the runs differ only in the reservoir seed."""
    probe = dict(k=k, n_train=steps * batch_size, n_val=n_val, n_test=16,
                 write_templates=["The secret word is {key}."])  # fmt: skip
    injection = InjectionConfig(
        reservoir=ReservoirConfig(units=units, sr=0.9, input_scaling=0.3), gate_init=0.5
    )
    base = TrainConfig(model_name=model_name, probe="secret_word", probe_params=probe,
                       injection=injection, steps=steps, batch_size=batch_size, learning_rate=2e-2,
                       warmup_steps=min(3, steps - 1), eval_every=0, patience=0)  # fmt: skip
    return [updated(base, injection={"reservoir": {"seed": s}}) for s in range(n_configs)]


@contextmanager
def _env(values: dict):
    before = {k: os.environ.get(k) for k in _ENV}
    for k in _ENV:
        os.environ.pop(k, None)
    os.environ.update(values)
    LC.clear()
    try:
        yield
    finally:
        for k, v in before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        LC.clear()


def _arm(name: str, cfgs, tmp: Path) -> dict:
    out = Outputs("smoke", root=tmp / name)  # an empty run cache: every run trains
    serial = name.startswith("serial")
    threads = cores() if name == "serial" else 1
    env = {"RAN_LOWER_DISK": str(tmp / "lower")} if name == "shared" else {}
    specs = [spec_for(c, out, EVALS, threads=threads) for c in cfgs]
    t0 = time.perf_counter()
    with _env({} if serial else env):
        if serial:
            rep = run_jobs(specs, "serial")
        else:
            rep = run_jobs(specs, "local", 2, tmp / "submitit", threads=1, env=env)
    wall = time.perf_counter() - t0
    if rep.failures:
        raise RuntimeError(f"bench training, arm {name}: {rep.failures[0]['error']}")
    steps = sum(r["steps_run"] for r in rep.rows)
    procs = 1 if serial else 2
    in_training = sum(r["train_wall_s"] for r in rep.rows) / procs  # per process, start-up out
    return {
        "wall_s": wall,
        "steps": steps,
        "steps_per_s": steps / wall,
        "threads_per_process": threads,
        "processes": procs,
        "train_steps_per_s": steps / in_training,  # steps/s inside the training loops only
        "outside_training_s": procs * wall - procs * in_training,  # start-up, loading, evals
        "train_wall_s": [r["train_wall_s"] for r in rep.rows],
        "val_acc": [r["evaluations"][0]["controls"]["reservoir"]["acc"] for r in rep.rows],
        "fingerprint": [
            (r["params_digest"], r["history_digest"], r["evaluations"]) for r in rep.rows
        ],  # fmt: skip
        "lower_files": len(list((tmp / "lower").rglob("*.safetensors"))) if name == "shared" else 0,
    }


def step_times(cfg: TrainConfig, tmp: Path, n_batches: int) -> dict:
    """One training step (episodes, loss, backward) per batch in three modes, interleaved."""
    from ran.mechanisms.adapter import _named_trainable
    from ran.tasks.episodes import EpisodeRunner
    from ran.training.train import _build

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok, handle = _build(cfg)
    for p in _named_trainable(model, handle).values():
        p.requires_grad_(True)
    runner = EpisodeRunner(handle, tok, cfg.scoring)
    eps = cfg.make_probe().splits()["train"]
    b = cfg.batch_size
    times = {"off": [], "cold": [], "disk": []}
    same = True

    def step(batch):
        t0 = time.perf_counter()
        scores = runner.run(batch, "reservoir")
        loss = torch.nn.functional.cross_entropy(scores, torch.tensor([e.answer for e in batch]))
        loss.backward()
        handle.detach_state()
        return time.perf_counter() - t0, scores.detach()

    for i in range(n_batches):
        batch = eps[i * b : (i + 1) * b]
        with _env({"RAN_LOWER_CACHE_MB": "0"}):
            dt, ref = step(batch)
            times["off"].append(dt)
        with _env({"RAN_LOWER_DISK": str(tmp / "steps")}):
            for mode in ("cold", "disk"):  # cold computes and writes; disk: memory emptied
                LC.clear()
                dt, s = step(batch)
                times[mode].append(dt)
                same &= torch.equal(s, ref)
    torch.set_num_threads(threads)
    t = {k: np.array(v) for k, v in times.items()}
    ratio = {m: t[m] / t["off"] for m in ("cold", "disk")}
    return {
        "n_batches": n_batches,
        "median_s": {k: float(np.median(v)) for k, v in t.items()},
        "times_s": {k: v.tolist() for k, v in t.items()},
        "ratio_disk": float(np.median(ratio["disk"])),
        "ratio_disk_ci95": list(bootstrap_median_ci(ratio["disk"])),
        "ratio_cold": float(np.median(ratio["cold"])),
        "identical": bool(same),
    }


def measure(model_name, n_configs, steps, batch_size, k, n_val, units) -> dict:
    """Train the same runs in every arm and time the step alone (see the module doc)."""
    cfgs = configs(model_name, n_configs, steps, batch_size, k, n_val, units)
    torch_threads = torch.get_num_threads()
    load_before, gflops_before = os.getloadavg()[0], machine.snapshot()["gflops"]
    with tempfile.TemporaryDirectory(prefix="ran-bench-training-") as tmp:
        arms = {a: _arm(a, cfgs, Path(tmp)) for a in ARMS}
        torch.set_num_threads(torch_threads)
        steps_alone = step_times(cfgs[0], Path(tmp), max(3, min(steps, 8)))
    prints = {a: arms[a].pop("fingerprint") for a in ARMS}
    one_thread = prints["workers"] == prints["serial_1t"] == prints["shared"]
    base = arms["serial"]["steps_per_s"]
    return {
        "model": model_name,
        "n_configs": n_configs,
        "steps": steps,
        "batch_size": batch_size,
        "k": k,
        "units": units,
        "cores": cores(),
        "load_avg_1min": [load_before, os.getloadavg()[0]],  # other work on the machine
        "gflops": [gflops_before, machine.snapshot()["gflops"]],  # the CPU's speed, before/after
        "run_hashes": [c.config_hash() for c in cfgs],
        "arms": arms,
        "ratio": {a: arms[a]["steps_per_s"] / base for a in ARMS if a != "serial"},
        "ratio_in_training": {
            a: arms[a]["train_steps_per_s"] / arms["serial"]["train_steps_per_s"]
            for a in ARMS
            if a != "serial"
        },
        "identical_1_thread": bool(one_thread),  # workers, shared and serial_1t
        "identical_to_2_threads": prints["serial"] == prints["serial_1t"],
        "step": steps_alone,
        "all_identical": bool(one_thread and steps_alone["identical"]),
    }


def run(outputs: Outputs, **overrides) -> dict:
    """Measure and return the ``training`` section of ``bench.json`` (with its checks)."""
    settings = PROFILE_SETTINGS[outputs.profile] | overrides
    return measured(describe, measure, **settings)


def describe(res: dict) -> dict:
    """Add the checks, ``met`` and the summary sentence to a :func:`measure` result."""
    r, a, st = res["ratio"], res["arms"], res["step"]
    res["checks"] = [
        check("training steps/s, 2 workers x 1 thread / 1 process x 2 threads", r["workers"],
              TARGET_WORKERS, ">="),
        check("same, the 2 workers sharing the lower layers' outputs on disk", r["shared"], None),
        check("same, 1 process x 1 thread (no workers)", r["serial_1t"], None),
        check("same, inside the training loops only (start-up and loading left out)",
              res["ratio_in_training"]["workers"] if "ratio_in_training" in res else None, None),
        check("training step time, lower layers' outputs read from disk / computed",
              st["ratio_disk"], None, ci=st["ratio_disk_ci95"], ratio=True),
        check("results identical: workers, shared, 1-thread serial, step modes (1 = yes)",
              float(res["all_identical"]), 1, ">="),
        check("2-thread results identical to the 1-thread ones (1 = yes)",
              float(res["identical_to_2_threads"]), None),
    ]  # fmt: skip
    res["met"] = section_met(res["checks"])
    lo, hi = st["ratio_disk_ci95"]
    res["summary"] = (
        f"Training {res['n_configs']} runs of {res['steps']} steps (batch {res['batch_size']}, "
        f"K = {res['k']} secret word, reservoir seeds 0-{res['n_configs'] - 1}, same episodes) "
        f"on {res['model']}, load average {res['load_avg_1min'][0]:.1f}-"
        f"{res['load_avg_1min'][1]:.1f} on {res['cores']} cores{_speed(res.get('gflops'))}: "
        f"1 process of "
        f"{a['serial']['threads_per_process']} threads {a['serial']['steps_per_s']:.2f} steps/s "
        f"(of 1 thread {a['serial_1t']['steps_per_s']:.2f}); 2 workers of 1 thread "
        f"{a['workers']['steps_per_s']:.2f} ({r['workers']:.2f}x); the workers sharing the "
        f"lower layers on disk "
        f"{a['shared']['steps_per_s']:.2f} ({r['shared']:.2f}x); wall time of each arm, "
        f"start-up included{_in_training(res)}. A step alone takes {st['median_s']['off']:.2f} s with every layer "
        f"computed and {st['ratio_disk']:.2f} of that (95% CI {lo:.2f}-{hi:.2f}) with the "
        f"lower layers' outputs read from disk ({st['ratio_cold']:.2f} while storing them). "
        f"Results bit-identical across the 1-thread arms and step modes: "
        f"{'yes' if res['all_identical'] else 'no'}; the 2-thread process gives "
        f"{'the same' if res['identical_to_2_threads'] else 'other'} bits"
    )
    return res


def _speed(gflops) -> str:
    """`` at 80-95 GFLOPS`` (the matmul speed before and after), or nothing if unrecorded."""
    return f" at {min(gflops):.0f}-{max(gflops):.0f} GFLOPS" if gflops else ""


def _in_training(res: dict) -> str:
    """The ratios counted inside the training loops (start-up, model loading and the
    jobs' evaluation left out), and those seconds; nothing for results measured before."""
    if "ratio_in_training" not in res:
        return ""
    r, a = res["ratio_in_training"], res["arms"]
    return (
        f"; inside the training loops only, 2 workers {r['workers']:.2f}x and sharing "
        f"{r['shared']:.2f}x (each worker spent {a['workers']['outside_training_s'] / 2:.0f} s "
        f"outside them, the 2-thread process {a['serial']['outside_training_s']:.0f} s)"
    )
