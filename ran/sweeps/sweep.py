"""Sweeps: a base TrainConfig, axes, probes to evaluate; one job per config; one tidy table.

A sweep file (YAML or JSON) names::

    name: example_local            # the table is <results>/sweeps/<name>.{json,csv}
    profile: default               # output roots (ran.util.results.Outputs)
    base:                          # ran.training.config.TrainConfig fields
      model_name: tiny-llama
      steps: 20
      injection: {n_slots: 4, reservoir: {units: 64}}     # its nested InjectionConfig
    axes:                          # cartesian product; dotted names reach nested fields
      injection.reservoir.seed: [0, 1]
      learning_rate: [0.01, 0.03]
      probe_params.k: {range: [4, 9, 4]}             # range(start, stop[, step])
    evaluate:                      # each job evaluates these after training
      - {split: test, controls: [reservoir, reset, stateless]}
      - {probe: elapsed, params: {n_test: 64}, controls: [reservoir]}
    executor: {max_parallel: 2, threads: 1, share_lower: true}
    slurm: {partition: gpu, gpus_per_node: 1, timeout_min: 120}   # passed to sbatch

:func:`run_sweep` runs every config as one job of :mod:`ran.training.jobs` (train, or load by
its hash, then evaluate). Each job writes a done marker keyed by its config hash and
the evaluations (``<build>/sweeps/<name>/done/``) from its own process, so a rerun
skips finished jobs and an interrupted sweep, resumed by the same command, loses none.
The merged table (one row per job x evaluation x control; failed and unfinished jobs
are rows too, with their status and error) is rewritten atomically as each job ends.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path

from ran.util.configio import ConfigError, from_dict
from ran.util.results import PROFILES, Outputs

EVAL_FIELDS = ("probe", "params", "split", "controls", "label")
SPLITS = ("train", "val", "test")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ExecutorOptions:
    """How the jobs run: at most ``max_parallel`` at once, ``threads`` torch threads each,
    sharing the frozen lower layers' outputs on disk when ``share_lower``."""

    max_parallel: int = 2
    threads: int = 1
    share_lower: bool = True

    def __post_init__(self):
        if self.max_parallel < 1 or self.threads < 1:
            raise ValueError(
                f"executor: max_parallel and threads must be >= 1, got {self.max_parallel}, "
                f"{self.threads}"
            )


@dataclass
class Sweep:
    """A parsed, validated sweep file (see the module doc)."""

    name: str = ""
    base: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)
    evaluate: list = field(default_factory=lambda: [{"split": "test"}])
    profile: str = "default"
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    slurm: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"field 'name' must be a file-name-safe word, got {self.name!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"field 'profile' must be one of {', '.join(PROFILES)}")
        self.axes = {str(k): _axis_values(str(k), v) for k, v in self.axes.items()}
        if not self.axes:
            raise ValueError("field 'axes' must name at least one axis")
        if not isinstance(self.evaluate, list) or not self.evaluate:
            raise ValueError("field 'evaluate' must be a non-empty list of evaluations")
        self.evaluate = [_check_evaluation(i, e) for i, e in enumerate(self.evaluate)]
        from ran.training.executors import slurm_parameters

        slurm_parameters(self.slurm)  # unknown option -> ValueError naming it
        self._jobs = None

    def jobs(self) -> list[tuple[dict, object]]:
        """``(axis values, TrainConfig)`` of every point of the cartesian product."""
        if self._jobs is not None:
            return self._jobs
        from ran.training.config import TrainConfig

        base = from_dict(TrainConfig, self.base, "field 'base'").to_dict()
        out, seen = [], {}
        for combo in itertools.product(*self.axes.values()):
            tag = dict(zip(self.axes, combo, strict=True))
            doc = json.loads(json.dumps(base))
            for path, value in tag.items():
                _check_path(TrainConfig, path)
                _set(doc, path.split("."), value)
            where = "axes " + ", ".join(f"{k}={v!r}" for k, v in tag.items())
            cfg = from_dict(TrainConfig, doc, where)
            h = cfg.config_hash()
            if h in seen:
                raise ValueError(f"axes give the same config twice ({seen[h]} and {tag})")
            seen[h] = tag
            out.append((tag, cfg))
        self._jobs = out
        return out

    def eval_key(self) -> str:
        """8 hex digits of the evaluations: a done marker counts only for the same ones."""
        blob = json.dumps(self.evaluate, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


def _axis_values(name: str, values) -> list:
    if isinstance(values, dict) and set(values) == {"range"}:
        r = values["range"]
        if not (isinstance(r, list) and 2 <= len(r) <= 3 and all(isinstance(x, int) for x in r)):
            raise ValueError(f"axis {name!r}: range must be [start, stop] or [start, stop, step]")
        values = list(range(*r))
    if not isinstance(values, list) or not values:
        raise ValueError(f"axis {name!r} must be a non-empty list of values (or {{range: [a, b]}})")
    return values


def _check_evaluation(i: int, ev) -> dict:
    from ran.tasks.episodes import CONTROLS
    from ran.tasks.probes import PROBES

    where = f"evaluate[{i}]"
    if not isinstance(ev, dict):
        raise ValueError(f"{where} must be a mapping of {', '.join(EVAL_FIELDS)}")
    unknown = [k for k in ev if k not in EVAL_FIELDS]
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (use {', '.join(EVAL_FIELDS)})")
    if ev.get("probe") is not None and ev["probe"] not in PROBES:
        raise ValueError(f"{where}: field 'probe' must be one of {', '.join(PROBES)}")
    if ev.get("split", "test") not in SPLITS:
        raise ValueError(f"{where}: field 'split' must be one of {', '.join(SPLITS)}")
    controls = ev.get("controls", list(CONTROLS))
    if not isinstance(controls, list) or not controls or set(controls) - set(CONTROLS):
        raise ValueError(f"{where}: field 'controls' must be a list of {', '.join(CONTROLS)}")
    if not isinstance(ev.get("params", {}), dict):
        raise ValueError(f"{where}: field 'params' must be a mapping of probe parameters")
    return {"split": "test", "controls": controls} | {k: v for k, v in ev.items() if v is not None}


def _check_path(cls, path: str) -> None:
    """Check that the dotted ``path`` names a field of the config class ``cls``: a nested
    config's field (``injection.reservoir.seed``) or any key of a mapping (``probe_params.k``)."""
    parts = path.split(".")
    node = cls
    for i, name in enumerate(parts):
        where = ".".join(parts[:i]) or cls.__name__
        if node is dict:  # a free mapping: any key
            return
        if not is_dataclass(node):
            raise ValueError(f"axis {path!r}: {where!r} has no nested fields")
        known = {f.name: f for f in fields(node)}
        if name not in known:
            moved = getattr(node, "field_moved", lambda _: None)(name)
            what = "a TrainConfig field" if i == 0 else f"a field of {where!r}"
            raise ValueError(f"axis {path!r}: " + (moved or f"{name!r} is not {what}"))
        f = known[name]
        node = type(f.default_factory() if f.default is MISSING else f.default)


def _set(doc: dict, parts: list[str], value) -> None:
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value


def read_sweep(path: str | Path) -> Sweep:
    """Parse and validate a sweep file; any problem is a :class:`ConfigError` sentence."""
    from ran.cli.common import read_config_file

    path = Path(path)
    doc = read_config_file(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path.name}: a sweep file must be a mapping, got {type(doc).__name__}.")
    doc = {"name": path.stem} | doc
    try:
        sweep = from_dict(Sweep, doc, path.name)
        sweep.jobs()
    except ValueError as err:  # ConfigError included; every message names its field
        msg = str(err).rstrip(".") + "."
        raise ConfigError(msg if msg.startswith(path.name) else f"{path.name}: {msg}") from None
    return sweep


# ----------------------------------------------------------------------------- running
@dataclass
class SweepReport:
    """What one ``run_sweep`` did."""

    name: str
    n_jobs: int
    skipped: int  # finished by an earlier run
    rows: list[dict]  # one per finished job (ran.training.jobs.run_job rows)
    failures: list[dict]
    pending: list[str]  # keys of jobs not finished (interrupted)
    table: Path
    csv: Path
    wall_s: float = 0.0


def _folder(outputs: Outputs, name: str) -> Path:
    return outputs.build / "sweeps" / name


def run_sweep(sweep: Sweep, executor="local", max_parallel=None, outputs=None,
              progress=print) -> SweepReport:  # fmt: skip
    """Run every job of ``sweep`` not finished before; write the merged table.

    Parameters
    ----------
    sweep : Sweep
    executor : {"local", "slurm", "serial"}
    max_parallel : int, optional
        Overrides ``sweep.executor.max_parallel``.
    outputs : ran.util.results.Outputs, optional
        Defaults to ``Outputs(sweep.profile)``.

    Returns
    -------
    SweepReport
        Interrupted (Ctrl-C), the table is written with the unfinished jobs marked
        ``pending`` and the KeyboardInterrupt goes on.
    """
    from ran.sweeps.table import write_table
    from ran.training.executors import JobRunner
    from ran.training.jobs import spec_for
    from ran.util.atomic import atomic_write_json

    t0 = time.perf_counter()
    outputs = outputs or Outputs(sweep.profile)
    opts = sweep.executor
    max_parallel = max_parallel or opts.max_parallel
    folder, ek = _folder(outputs, sweep.name), sweep.eval_key()
    specs = [
        spec_for(cfg, outputs, sweep.evaluate, key=cfg.config_hash(), tag=tag, threads=opts.threads,
                 marker=folder / "done" / f"{cfg.config_hash()}-{ek}.json")
        for tag, cfg in sweep.jobs()
    ]  # fmt: skip
    rows = {s["key"]: json.loads(Path(s["marker"]).read_text()) for s in specs
            if Path(s["marker"]).is_file()}  # fmt: skip
    todo = [s for s in specs if s["key"] not in rows]
    failures: dict[str, dict] = {}
    skipped = len(rows)
    if progress:
        progress(f"sweep {sweep.name}: {len(specs)} jobs, {skipped} finished earlier (skipped), "
                 f"{len(todo)} to run on {executor} ({max_parallel} at once)")  # fmt: skip

    history = _history(folder)
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "executor": executor,
             "max_parallel": max_parallel, "skipped": skipped, "to_run": len(todo),
             "finished": 0, "failed": 0, "outcome": "running"}  # fmt: skip
    history.append(entry)
    atomic_write_json(folder / "history.json", history)  # a killed invocation stays recorded

    def write():
        wall = time.perf_counter() - t0
        entry["finished"] = len(rows) - skipped
        entry["failed"] = len(failures)
        atomic_write_json(folder / "history.json", history)
        return write_table(sweep, specs, rows, failures, outputs, executor, wall, history)

    def done(spec, row, failure):
        if row is not None:
            rows[spec["key"]] = row
        else:
            failures[spec["key"]] = failure
        write()
        if progress:
            n = len(rows) + len(failures)
            tag = ", ".join(f"{k}={v}" for k, v in spec["tag"].items())
            progress(f"[{n}/{len(specs)}] {spec['key']} ({tag}): " + _summary(row, failure))

    env = {"RAN_LOWER_DISK": str(outputs.cache / "lower")} if opts.share_lower else {}
    options = {"name": f"ran-{sweep.name}"} | sweep.slurm  # the Slurm job name
    runner = JobRunner(executor, folder / "submitit", max_parallel, opts.threads, options, env)
    try:
        started = runner.start(todo)
        attached = [j.job_id for j in started if not hasattr(j, "paths")]
        if attached and progress:
            progress(f"waiting for {len(attached)} job(s) an earlier run started: {attached}")
        runner.wait(done)
        entry["outcome"] = "failures" if failures else "complete"
    except KeyboardInterrupt:
        entry["outcome"] = "interrupted"
        raise
    finally:
        table, csv_path = write()
    pending = [s["key"] for s in specs if s["key"] not in rows and s["key"] not in failures]
    return SweepReport(sweep.name, len(specs), skipped, [rows[s["key"]] for s in specs
                       if s["key"] in rows], list(failures.values()), pending, table, csv_path,
                       time.perf_counter() - t0)  # fmt: skip


def _history(folder: Path) -> list[dict]:
    """The invocations of a sweep so far (``<build>/sweeps/<name>/history.json``)."""
    path = folder / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _summary(row, failure) -> str:
    if row is None:
        return f"FAILED: {failure['error']}"
    ev = row["evaluations"][0]
    first = next(iter(ev["controls"]))
    how = "loaded" if row["loaded"] else f"trained {row['train_wall_s']:.0f} s"
    return f"{ev['label']} {first} {ev['controls'][first]['acc']:.3f} ({how})"
