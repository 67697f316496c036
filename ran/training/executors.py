"""Running job specs (:mod:`ran.training.jobs`) on an existing engine: submitit, never a scheduler of ours.

* ``serial``: in this process, one after another (the reference of the bit-identity tests);
* ``local``: submitit's ``LocalExecutor``, every job a subprocess of this machine, at most
  ``max_parallel`` at once (submitted as slots free), each with ``threads`` torch threads
  (``OMP_NUM_THREADS`` in its environment, ``torch.set_num_threads`` in :func:`ran.training.jobs.run_job`);
* ``slurm``: submitit's ``SlurmExecutor``, all jobs in one job array whose
  ``%max_parallel`` throttle Slurm enforces; the sweep file's ``slurm`` options
  (partition, GPUs, time...) pass through to the sbatch script (:func:`slurm_parameters`).

A spec whose ``.running.json`` names a live process of this host (a job submitted by an
earlier runner that was killed) is waited for instead of being submitted twice. A failed
job becomes a row of :attr:`JobsReport.failures` with its error and log.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ran.training.worker import _proc_start, run_job, running_path

EXECUTORS = ("serial", "local", "slurm")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 min) would kill any training
SLURM_TIMEOUT_MIN = 24 * 60  # --time when the sweep file's slurm options set no timeout_min


@dataclass
class JobsReport:
    """What a batch of jobs gave: the rows of the finished ones and the failures."""

    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # {"key", "error", "log", "detail"}
    wall_s: float = 0.0


@contextlib.contextmanager
def _environ(values: dict):
    """Set environment variables (inherited by submitted subprocesses), then restore them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _alive_elsewhere(spec: dict) -> dict | None:
    """The running marker of this spec if a live process of this host holds it."""
    if not spec.get("marker"):
        return None
    try:
        doc = json.loads(running_path(spec["marker"]).read_text())
        if doc.get("host") != socket.gethostname() or int(doc["pid"]) == os.getpid():
            return None
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return doc if doc.get("start") in (None, _proc_start(int(doc["pid"]))) else None


class _Attached:
    """A job an earlier runner submitted that still runs here: wait for its marker."""

    def __init__(self, spec: dict, doc: dict):
        self.spec, self.doc = spec, doc
        self.job_id = f"pid {doc['pid']} (earlier run)"

    def done(self) -> bool:
        return Path(self.spec["marker"]).is_file() or _alive_elsewhere(self.spec) is None

    def outcome(self) -> tuple[str, object]:
        if Path(self.spec["marker"]).is_file():
            return "ok", json.loads(Path(self.spec["marker"]).read_text())
        return "failed", f"the job started earlier as pid {self.doc['pid']} ended without a row"

    def cancel(self) -> None:  # not ours to stop: it finishes and writes its marker
        pass


class JobRunner:
    """Submit job specs to an executor, wait for them, collect rows and failures.

    Parameters
    ----------
    executor : {"serial", "local", "slurm"}
    folder : path
        submitit's folder (pickles, logs, sbatch scripts); unused by ``serial``.
    max_parallel : int
        Jobs running at once (local: submitted as slots free; slurm: the array throttle).
    threads : int
        torch threads per job (``OMP_NUM_THREADS`` of the workers too).
    slurm_options : dict, optional
        Slurm only (a local job runs without a time limit). submitit AutoExecutor
        parameters: its generic ones (``timeout_min``, ``mem_gb``,
        ``gpus_per_node``, ``cpus_per_task``, ``nodes``, ``tasks_per_node``, ``name``) as
        they are, anything else as an sbatch option (``partition``, ``account``, ``qos``,
        ``constraint``, ``setup``, ``additional_parameters``...).
    env : dict, optional
        Extra environment variables of the workers.
    """

    def __init__(self, executor="local", folder=None, max_parallel=2, threads=1,
                 slurm_options=None, env=None, poll_s=0.5):  # fmt: skip
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        if max_parallel < 1 or threads < 1:
            raise ValueError(
                f"need max_parallel >= 1 and threads >= 1, got {max_parallel}, {threads}"
            )
        if executor != "serial" and folder is None:
            raise ValueError(f"the {executor} executor needs a folder for submitit's files")
        self.executor, self.folder = executor, None if folder is None else Path(folder)
        self.max_parallel, self.threads, self.poll_s = max_parallel, threads, poll_s
        self.slurm_options = dict(slurm_options or {})
        self.env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} | dict(env or {})
        self.pending: list[dict] = []
        self.order: list[str] = []  # keys in the order of start(): the order of the rows
        self.running: list[tuple[dict, object]] = []  # (spec, submitit job or _Attached)
        self._ex = None

    # -- submission
    def _executor(self):
        if self._ex is None:
            import submitit

            cluster = "local" if self.executor == "local" else "slurm"
            ex = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
            if cluster == "slurm":
                params = {"timeout_min": SLURM_TIMEOUT_MIN} | slurm_parameters(self.slurm_options)
                params["slurm_array_parallelism"] = self.max_parallel
                params.setdefault("cpus_per_task", self.threads)
            else:  # the Slurm options are the cluster's: a local job only needs no time limit
                params = {"timeout_min": LOCAL_TIMEOUT_MIN}
            ex.update_parameters(**params)
            self._ex = ex
        return self._ex

    def start(self, specs: list[dict]) -> list:
        """Queue ``specs``; submit what may run now (all of them on Slurm). Returns the
        submitted jobs (submitit Job objects, or waits on live jobs of earlier runs)."""
        fresh = []
        self.order += [s["key"] for s in specs]
        for spec in specs:
            doc = _alive_elsewhere(spec)
            if doc is not None:
                self.running.append((spec, _Attached(spec, doc)))
            else:
                fresh.append(spec)
        if self.executor == "slurm" and fresh:
            ex = self._executor()
            with _environ(self.env), ex.batch():
                jobs = [ex.submit(run_job, s) for s in fresh]
            self.running += list(zip(fresh, jobs, strict=True))
        else:
            self.pending += fresh
            self._fill()
        return [job for _, job in self.running]

    def _fill(self) -> None:
        if self.executor != "local":
            return
        while self.pending and len(self.running) < self.max_parallel:
            spec = self.pending.pop(0)
            with _environ(self.env):
                job = self._executor().submit(run_job, spec)
            self.running.append((spec, job))

    # -- collection
    def wait(self, on_done=None) -> JobsReport:
        """Run or wait for every queued job; ``on_done(spec, row_or_None, failure_or_None)``
        is called as each finishes. Interrupted (Ctrl-C), the running jobs are cancelled
        (finished ones are kept) and the KeyboardInterrupt goes on."""
        report, t0 = JobsReport(), time.perf_counter()
        rows: dict[str, dict] = {}
        try:
            while self.pending or self.running:
                if self.executor == "serial" and self.pending:
                    spec = self.pending.pop(0)
                    self._record(spec, *self._serial(spec), None, rows, report, on_done)
                    continue
                finished = [(s, j) for s, j in self.running if j.done()]
                for spec, job in finished:
                    self.running.remove((spec, job))
                    self._record(spec, *_outcome(job), _log(job), rows, report, on_done)
                self._fill()
                if not finished:
                    time.sleep(self.poll_s)
        except BaseException:
            self.cancel()
            raise
        report.rows = [rows[k] for k in self.order if k in rows]
        report.wall_s = time.perf_counter() - t0
        return report

    @staticmethod
    def _serial(spec):
        try:
            return "ok", run_job(spec)
        except Exception as exc:  # a failed job is reported, not raised
            return "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"

    def _record(self, spec, status, value, log, rows, report, on_done):
        if status == "ok":
            rows[spec["key"]] = value
            failure = None
        else:
            text = str(value).strip()
            failure = {"key": spec["key"], "error": _last_error_line(text),
                       "log": log, "detail": text[-4000:]}  # fmt: skip
            report.failures.append(failure)
        if on_done is not None:
            on_done(spec, rows.get(spec["key"]), failure)

    def cancel(self) -> None:
        """Stop every running job of ours and forget the queued ones."""
        self.pending.clear()
        for _, job in self.running:
            with contextlib.suppress(Exception):
                job.cancel()
        self.running.clear()


def _outcome(job) -> tuple[str, object]:
    if isinstance(job, _Attached):
        return job.outcome()
    try:
        return "ok", job.result()
    except Exception as exc:  # submitit's FailedJobError / UncompletedJobError carry the trace
        return "failed", f"{exc}"


def _log(job) -> str | None:
    """The job's stderr log (None for a job of an earlier run)."""
    paths = getattr(job, "paths", None)
    return None if paths is None else str(paths.stderr)


def _last_error_line(text: str) -> str:
    """The last line of a traceback that names an exception (else the last line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}]
    errs = [ln for ln in lines if ":" in ln and ln.split(":")[0].replace(".", "").isidentifier()
            and ln.split(":")[0].split(".")[-1][:1].isupper()]  # fmt: skip
    return (errs or lines or ["unknown error"])[-1][:300]


def slurm_parameters(options: dict) -> dict:
    """The sweep file's ``slurm`` options as submitit AutoExecutor parameters (generic
    names kept, sbatch ones prefixed ``slurm_``); an unknown option raises ValueError."""
    from submitit.auto.auto import AutoExecutor
    from submitit.slurm.slurm import _get_default_parameters

    generic, sbatch = set(AutoExecutor._typed_parameters()), set(_get_default_parameters())
    out = {}
    for name, value in options.items():
        if name in generic:
            out[name] = value
        elif name in sbatch:
            out[f"slurm_{name}"] = value
        else:
            raise ValueError(f"unknown Slurm option {name!r}")
    return out


def run_jobs(specs, executor="local", max_parallel=2, folder=None, slurm_options=None,
             threads=1, env=None, on_done=None) -> JobsReport:  # fmt: skip
    """Run ``specs`` (see :func:`spec_for`) through ``executor`` and wait for all of them.

    See :class:`JobRunner` for the parameters; returns the rows (in spec order) and failures.
    """
    runner = JobRunner(executor, folder, max_parallel, threads, slurm_options, env)
    runner.start(list(specs))
    return runner.wait(on_done)
