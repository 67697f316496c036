"""Training runs as independent jobs: one :class:`ran.train.TrainConfig` per job, run by submitit.

A job (:func:`run_job`) trains one config, or loads it by its hash from the run cache
(:func:`ran.train.train`), evaluates the probes it lists and returns one JSON-able row.
:func:`run_jobs` hands specs to an existing engine (submitit: ``serial`` in this
process, ``local`` subprocesses, ``slurm`` job arrays; see :mod:`ran.executors`), never a
scheduler of our own.

A job given a ``marker`` path writes its row there when it finishes (atomically, from
the job's own process, so a job outlives the command that submitted it), and
``<marker>.running.json`` with its host and pid while it runs: a later runner waits
for a live job of this host instead of submitting it twice. A failed job is a row of
:attr:`ran.executors.JobsReport.failures` (its error and log), never silently dropped.

:func:`train_all` is the pipeline's use: the configs of a notebook whose runs are not
cached are trained in :func:`default_workers` worker processes of one torch thread
each (2 on a 2-core machine); the notebook's own loop then loads them from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

# Runs trained for this process by worker jobs (train_all, or a sweep it ran): a later
# train() that loads one of them reports loaded=False, since it was not a reuse.
TRAINED_BY_WORKERS: set[str] = set()


def note_trained(rows) -> None:
    """Record the runs that job ``rows`` trained (not loaded) in :data:`TRAINED_BY_WORKERS`."""
    TRAINED_BY_WORKERS.update(r["hash"] for r in rows if not r["loaded"])


# ----------------------------------------------------------------------------- one job
def spec_for(config, outputs, evaluations=(), key=None, marker=None, threads=None, tag=None):
    """The JSON-able spec of one job (what is pickled for the worker).

    Parameters
    ----------
    config : ran.train.TrainConfig
    outputs : ran.results.Outputs
        Run cache and memo roots of the job.
    evaluations : sequence of dict
        ``{"probe", "params", "split", "controls", "label"}`` each (see :func:`evaluate_one`).
    key : str, optional
        The job's id in reports; defaults to the config hash.
    marker : path, optional
        Where the job writes its row when it finishes.
    threads : int, optional
        torch threads of the job (None: leave the process's setting).
    tag : dict, optional
        Values copied into the row (e.g. the sweep's axis values).
    """
    return {
        "key": key or config.config_hash(),
        "config": config.to_dict(),
        "profile": outputs.profile,
        "root": None if outputs.root is None else str(outputs.root),
        "evaluations": [dict(e) for e in evaluations],
        "marker": None if marker is None else str(marker),
        "threads": threads,
        "tag": dict(tag or {}),
    }


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

    from ran.atomic import atomic_write_json
    from ran.memo import tensor_digest
    from ran.results import Outputs
    from ran.train import TrainConfig, _named_trainable, train

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
    ``controls`` (default every control of :data:`ran.episodes.CONTROLS`). The training
    probe without new parameters goes through :meth:`TrainResult.evaluate` (cached by
    :mod:`ran.memo`), so a notebook evaluating the same run reuses the value.
    """
    from ran import probes as P
    from ran.episodes import CONTROLS, evaluate
    from ran.memo import memo

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
    from ran.results import to_jsonable

    return to_jsonable(obj)


def run_jobs(specs, executor="local", max_parallel=2, folder=None, slurm_options=None,
             threads=1, env=None, on_done=None):  # fmt: skip
    """:func:`ran.executors.run_jobs` (re-exported: the job layer's entry point)."""
    from ran.executors import run_jobs as run

    return run(specs, executor, max_parallel, folder, slurm_options, threads, env, on_done)


# ----------------------------------------------------------------------------- the pipeline
def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(outputs=None) -> int:
    """Worker processes for the pipeline's trainings: ``RAN_TRAIN_WORKERS`` if set, else 2
    when the machine has 2 or more cores (1 in the smoke profile, whose runs take seconds)."""
    raw = os.environ.get("RAN_TRAIN_WORKERS")
    if raw is not None:
        try:
            return max(1, int(raw))
        except ValueError:
            raise ValueError(f"RAN_TRAIN_WORKERS must be an integer, got {raw!r}") from None
    if outputs is not None and outputs.profile == "smoke":
        return 1
    return 2 if cores() >= 2 else 1


def train_all(configs, outputs, workers=None, share_lower=True, progress=print):
    """Train the ``configs`` whose runs are not cached, ``workers`` at a time in worker
    processes of ``cores() // workers`` torch threads each (local executor).

    With one worker this does nothing: the caller's loop trains in-process as before.
    ``share_lower`` lets the workers share the frozen lower layers' outputs on disk
    (:mod:`ran.lowerdisk`). A failed job is reported, not raised: the caller's own
    ``train`` call then meets the same error in-process.
    """
    from ran.train import _paths

    workers = default_workers(outputs) if workers is None else workers
    todo, seen = [], set()
    for cfg in configs:
        key, run_path, params_path = _paths(cfg, outputs)
        if key not in seen and not (run_path.is_file() and params_path.is_file()):
            seen.add(key)
            todo.append(cfg)
    if workers <= 1 or not todo:
        from ran.executors import JobsReport

        return JobsReport()
    threads = max(1, cores() // workers)
    specs = [spec_for(c, outputs, threads=threads) for c in todo]
    env = {"RAN_LOWER_DISK": str(outputs.cache / "lower")} if share_lower else {}
    if progress:
        progress(f"training {len(todo)} run(s) in {min(workers, len(todo))} worker(s) of "
                 f"{threads} thread(s)")  # fmt: skip

    def done(spec, row, failure):
        if progress:
            what = f"{row['train_wall_s']:.0f} s" if row else f"FAILED: {failure['error']}"
            progress(f"  run {spec['key']}: {what}")

    folder = outputs.build / "jobs"
    report = run_jobs(specs, "local", workers, folder, threads=threads, env=env, on_done=done)
    note_trained(report.rows)
    return report
