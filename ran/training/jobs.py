"""Training runs as independent jobs: one :class:`ran.training.config.TrainConfig` per job, run by submitit.

A job (:func:`run_job`) trains one config, or loads it by its hash from the run cache
(:func:`ran.training.train.train`), evaluates the probes it lists and returns one JSON-able row.
:func:`run_jobs` hands specs to an existing engine (submitit: ``serial`` in this
process, ``local`` subprocesses, ``slurm`` job arrays; see :mod:`ran.training.executors`), never a
scheduler of our own.

A job given a ``marker`` path writes its row there when it finishes (atomically, from
the job's own process, so a job outlives the command that submitted it), and
``<marker>.running.json`` with its host and pid while it runs: a later runner waits
for a live job of this host instead of submitting it twice. A failed job is a row of
:attr:`ran.training.executors.JobsReport.failures` (its error and log), never silently dropped.

:func:`train_all` is the pipeline's use: the configs of a notebook whose runs are not
cached are trained in :func:`default_workers` worker processes of one torch thread
each (2 on a 2-core machine); the notebook's own loop then loads them from the cache.
"""

from __future__ import annotations

import os

from ran.training.worker import (  # noqa: F401  (re-exported: the job layer's names)
    _digest,
    _jsonable,
    _proc_start,
    evaluate_one,
    run_job,
    running_path,
)


def note_trained(rows) -> None:
    """Record the runs that job ``rows`` trained (not loaded) in :data:`TRAINED_BY_WORKERS`."""
    from ran.training.train import TRAINED_BY_WORKERS

    TRAINED_BY_WORKERS.update(r["hash"] for r in rows if not r["loaded"])


# ----------------------------------------------------------------------------- one job
def spec_for(config, outputs, evaluations=(), key=None, marker=None, threads=None, tag=None):
    """The JSON-able spec of one job (what is pickled for the worker).

    Parameters
    ----------
    config : ran.training.config.TrainConfig
    outputs : ran.util.results.Outputs
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


def run_jobs(specs, executor="local", max_parallel=2, folder=None, slurm_options=None,
             threads=1, env=None, on_done=None):  # fmt: skip
    """:func:`ran.training.executors.run_jobs` (re-exported: the job layer's entry point)."""
    from ran.training.executors import run_jobs as run

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


def _recorded(path) -> tuple[float, dict] | None:
    """``(wall_time_s, config)`` of a run record, None when it is missing or unreadable."""
    import json

    try:
        doc = json.loads(path.read_text())
        return float(doc["wall_time_s"]), doc.get("config") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def estimated_wall(cfg, records: list[tuple[float, dict]]) -> float | None:
    """A config's wall time from the recorded runs of the same probe and mechanism: the one
    whose step budget is closest, scaled by the ratio of steps (None: no such record)."""
    alike = [
        (wall, c) for wall, c in records
        if c.get("probe") == cfg.probe and c.get("kind", "reservoir") == cfg.kind and c.get("steps")
    ]  # fmt: skip
    if not alike:
        return None
    wall, c = min(alike, key=lambda r: abs(r[1]["steps"] - cfg.steps))
    return wall * cfg.steps / c["steps"]


def longest_first(todo):
    """``todo``, a list of ``(config, run record path)``, in the order to start them, longest
    first (LPT: a long job started last leaves a core idle at the end). A config's cost is its
    record's wall time, else an estimate from the records beside it (:func:`estimated_wall`:
    a config whose hash changed, e.g. one option, costs about what its predecessor did); a
    config with neither is started first (its cost is unknown). The order changes no result:
    every job trains independently."""
    folders = {path.parent for _, path in todo}
    records = [r for f in folders for p in sorted(f.glob("*.json")) if (r := _recorded(p))]

    def start_key(item):  # sorted() is stable: ties keep the given order
        cfg, path = item
        own = _recorded(path)
        wall = own[0] if own else estimated_wall(cfg, records)
        return (True, -wall) if wall is not None else (False, 0.0)

    return [cfg for cfg, _ in sorted(todo, key=start_key)]


def train_all(configs, outputs, workers=None, share_lower=True, progress=print):
    """Train the ``configs`` whose runs are not cached, ``workers`` at a time in worker
    processes of ``cores() // workers`` torch threads each (local executor), started
    longest first (:func:`longest_first`).

    With one worker this does nothing: the caller's loop trains in-process as before.
    ``share_lower`` lets the workers share the frozen lower layers' outputs on disk
    (:mod:`ran.injection.lowerdisk`). A failed job is reported, not raised: the caller's own
    ``train`` call then meets the same error in-process.
    """
    from ran.training.train import _paths

    workers = default_workers(outputs) if workers is None else workers
    todo, seen = [], set()
    for cfg in configs:
        key, run_path, params_path = _paths(cfg, outputs)
        if key not in seen and not (run_path.is_file() and params_path.is_file()):
            seen.add(key)
            todo.append((cfg, run_path))
    if workers <= 1 or not todo:
        from ran.training.executors import JobsReport

        return JobsReport()
    threads = max(1, cores() // workers)
    specs = [spec_for(c, outputs, threads=threads) for c in longest_first(todo)]
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
