"""One training job, as a worker process runs it: :func:`run_job` trains (or loads) the run
of a spec made by :func:`ran.training.jobs.spec_for`, evaluates it, and returns its row.

While it runs, a marker file (:func:`running_path`) names the worker's pid and start
time, so a second process can tell a live job from one that died.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path


def running_path(marker: str | Path) -> Path:
    """The ``.running.json`` file beside a done marker."""
    marker = Path(marker)
    return marker.with_name(marker.stem + ".running.json")


def _proc_start(pid: int) -> str | None:
    try:  # field 22 of /proc/<pid>/stat: start time since boot (tells a reused pid apart)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def run_job(spec: dict) -> dict:
    """Train (or load) ``spec["config"]``, evaluate its ``evaluations``, return the row."""
    import torch

    from ran.mechanisms.adapter import _named_trainable
    from ran.training.config import TrainConfig
    from ran.training.train import train
    from ran.util.atomic import atomic_write_json
    from ran.util.memo import tensor_digest
    from ran.util.results import Outputs

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    t0 = time.perf_counter()
    marker = Path(spec["marker"]) if spec.get("marker") else None
    running = running_path(marker) if marker else None
    if running is not None:
        pid = os.getpid()
        atomic_write_json(running, {"host": socket.gethostname(), "pid": pid,
                                    "start": _proc_start(pid), "key": spec["key"],
                                    "slurm_job_id": os.environ.get("SLURM_JOB_ID")})  # fmt: skip
    try:
        cfg = TrainConfig.from_dict(spec["config"])
        res = train(cfg, Outputs(spec["profile"], root=spec.get("root")), progress=False)
        evals = [evaluate_one(res, e) for e in spec["evaluations"]]
        hist = res.history
        row = {
            "key": spec["key"],
            "hash": res.hash,
            "tag": spec.get("tag", {}),
            "loaded": res.loaded,
            "train_wall_s": res.wall_time_s,
            "steps_run": len(hist.get("step", [])),
            "best_val_acc": hist.get("best_val_acc"),
            "final_loss": hist["loss"][-1] if hist.get("loss") else None,
            "params_digest": tensor_digest(_named_trainable(res.model, res.handle).values()),
            "history_digest": _digest(hist),
            "evaluations": evals,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "job_wall_s": time.perf_counter() - t0,
        }
        if marker is not None:
            atomic_write_json(marker, _jsonable(row))
        return _jsonable(row)
    finally:
        if running is not None:
            running.unlink(missing_ok=True)


def evaluate_one(res, ev: dict) -> dict:
    """One evaluation of a trained run, summarised (no per-episode predictions).

    ``ev["probe"]`` (default: the training probe) with ``ev["params"]`` over the training
    probe's parameters when it is the training probe; ``split`` (default ``test``);
    ``controls`` (default every control of :data:`ran.tasks.episodes.CONTROLS`). The training
    probe without new parameters goes through :meth:`TrainResult.evaluate` (cached by
    :mod:`ran.util.memo`), so a notebook evaluating the same run reuses the value.
    """
    from ran.tasks import probes as P
    from ran.tasks.episodes import CONTROLS, evaluate
    from ran.util.memo import memo

    cfg = res.config
    probe = ev.get("probe") or cfg.probe
    params = dict(ev.get("params") or {})
    split = ev.get("split", "test")
    controls = tuple(ev.get("controls") or CONTROLS)
    if probe == cfg.probe and not params:
        out = res.evaluate(split, controls)
        n_cand = cfg.make_probe().n_candidates
    else:
        base = cfg.probe_params if probe == cfg.probe else {}
        pr = P.make_probe(probe, **({"seed": cfg.seed} | base | params))
        eps, n_cand = pr.splits()[split], pr.n_candidates
        key = {"run": res.hash, "probe": probe, "params": pr.params(), "split": split,
               "controls": list(controls)}  # fmt: skip
        out = memo(res.outputs, "sweep_eval", key, evaluate, res.handle, res.tokenizer, eps,
                   controls, cfg.eval_batch_size, cfg.scoring)  # fmt: skip
    label = ev.get("label") or (probe if probe == cfg.probe and not params else f"{probe}*")
    summary = {c: {k: out[c][k] for k in ("acc", "ci_low", "ci_high", "correct", "n")}
               for c in controls}  # fmt: skip
    return {"label": f"{label}/{split}", "probe": probe, "split": split, "k": n_cand,
            "n": out["n"], "chance": out["chance"], "controls": summary}  # fmt: skip


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(_jsonable(obj), sort_keys=True).encode()).hexdigest()[:16]


def _jsonable(obj):
    from ran.util.results import to_jsonable

    return to_jsonable(obj)
