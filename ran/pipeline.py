"""The batch runner: every notebook, headless, with papermill.

``python -m ran run --profile P [--only NN] [--lanes N] [-p name value ...]`` converts
each ``notebooks/NN_*.py`` (jupytext py:percent) to an .ipynb under
``build/<profile>/notebooks/``, executes it with papermill on the ``python3`` kernel
with ``profile=P`` injected into its ``parameters`` cell, exports HTML to
``build/<profile>/html/`` and records each notebook's wall time in
``<results>/pipeline.json``. A failing notebook stops the run with one line that
names it and the error it raised.

Lanes. With one lane (the default) the notebooks run in order, each with the torch
threads its ``threads`` parameter asks for (and its trainings in 2 one-thread workers,
:func:`ran.training.jobs.train_all`). With ``lanes`` > 1 (``--lanes N`` or
``RAN_PIPELINE_LANES``) up to that many notebooks run at once, each in its own process
with ``threads = 1``, ``OMP_NUM_THREADS=1`` and its trainings in-process
(``RAN_TRAIN_WORKERS=1``; a 1-thread training is bit-identical to a 1-thread worker's).
A notebook starts when the notebooks it reads (:data:`DEPENDS`) have finished, by the
longest chain it starts (:func:`schedule_order`); a failure lets the running ones finish
and starts no other. Lanes are opt-in: on this 2-core CPU two 1-thread processes train
faster than one 2-thread process, but a whole notebook at 1 thread is slower, and the
longest notebook bounds the run; no clean measurement has shown lanes shorten a cold
``make all`` yet.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ran.report.notebooks import (
    NOTEBOOK_DIR,
    RECORDS,
    list_notebooks,
    pipeline_json,
    pipeline_meta,
)
from ran.util.atomic import atomic_write
from ran.util.results import Outputs, check_profile, package_versions

KERNEL = "python3"
# notebook number -> the notebooks whose outputs it reads (06: notebook 01's echo-state
# results for its regime sentence, and 03's fact-memory run, its best configuration: in a
# lane of its own 06 would train that run a second time; 07: the fact adapter 06 writes)
DEPENDS = {"06": ("01", "03"), "07": ("06",)}
LANE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAN_TRAIN_WORKERS": "1"}


class PipelineError(RuntimeError):
    """A notebook failed; the message names it."""


@dataclass
class RunReport:
    """What one pipeline run did: notebook id -> wall seconds, and outputs."""

    profile: str
    wall_time_s: dict[str, float] = field(default_factory=dict)
    machine: dict[str, dict] = field(default_factory=dict)  # stem -> speed before/after
    runs: dict[str, dict] = field(default_factory=dict)  # stem -> runs trained/loaded
    executed: dict[str, str] = field(default_factory=dict)
    html: dict[str, str] = field(default_factory=dict)
    lanes: int = 1  # notebooks run at once
    elapsed_s: float = 0.0  # wall time of the whole run (with lanes: less than the sum)
    record: str = "pipeline"  # the results file of its timing (pipeline_warm: make warm)
    cells: dict[str, dict] = field(default_factory=dict)  # stem -> cell_times()


def _named(only: list[str]) -> list[str]:
    """The numbers (``03``) and stems (``03_h1...``) named in ``only`` ("1,3", ["04"]), in order."""
    names = [o.strip() for item in only for o in str(item).split(",") if o.strip()]
    return [n.zfill(2) if n.isdigit() else n for n in names]


def _matches(p: Path, name: str) -> bool:
    return name in (p.name[:2], p.stem)


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """Keep the notebooks whose number (``03``) or stem (``03_h1...``) is in ``only``."""
    if not only:
        return notebooks
    wanted = set(_named(only))
    chosen = [p for p in notebooks if p.name[:2] in wanted or p.stem in wanted]
    found = {p.name[:2] for p in chosen} | {p.stem for p in chosen}
    missing = sorted(wanted - found)
    if missing:
        names = ", ".join(p.stem for p in notebooks) or "none"
        raise PipelineError(f"no notebook matches {', '.join(missing)}; available: {names}")
    return chosen


def to_ipynb(src: Path, dst: Path) -> Path:
    """Convert a jupytext py:percent notebook to .ipynb (keeps the parameters tag)."""
    import jupytext

    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    dst.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, dst, fmt="ipynb")
    return dst


def export_html(executed: Path, dst: Path) -> Path:
    """Export an executed notebook to a standalone HTML page."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(body, encoding="utf-8")
    return dst


def _failure_summary(exc: BaseException) -> str:
    """One line from a papermill error: the exception name and value of the cell."""
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    return f"{ename}: {str(evalue).strip().splitlines()[-1] if str(evalue).strip() else ''}"


def run_notebook(
    src: Path, outputs: Outputs, parameters: dict | None = None, progress: bool = True
) -> tuple[Path, float]:
    """Execute one notebook with papermill; returns (executed path, wall seconds)."""
    import papermill as pm

    build = outputs.build
    ipynb = to_ipynb(src, build / "notebooks" / "src" / f"{src.stem}.ipynb")
    executed = build / "notebooks" / f"{src.stem}.ipynb"
    params = {"profile": outputs.profile, **(parameters or {})}
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(ipynb),
            str(executed),
            parameters=params,
            kernel_name=KERNEL,
            cwd=str(src.parent),
            progress_bar=progress,
            log_output=False,
        )
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's error
        raise PipelineError(
            f"notebook {src.stem} failed ({_failure_summary(exc)}); "
            f"the executed copy with the traceback is {executed}"
        ) from None
    return executed, time.perf_counter() - t0


def cell_times(executed: Path, top: int = 5) -> dict:
    """Where an executed notebook's time went, from papermill's record of each cell:
    ``code_s`` (every code cell's seconds), ``train_cells_s`` (the cells that start trainings:
    their source calls ``train_all``, so they may hold evaluation too) and the ``top`` slowest
    cells as ``[index, seconds, first code line]``."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    rows = []
    for i, cell in enumerate(nb.cells):
        dur = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
        if cell.get("cell_type") != "code" or not isinstance(dur, int | float):
            continue
        lines = [ln.strip() for ln in cell.source.splitlines()]
        first = next((ln for ln in lines if ln and not ln.startswith("#")), "")
        rows.append((i, float(dur), first[:80], "train_all(" in cell.source))
    slowest = sorted(rows, key=lambda r: -r[1])[:top]
    return {
        "code_s": round(sum(r[1] for r in rows), 2),
        "train_cells_s": round(sum(r[1] for r in rows if r[3]), 2),
        "slowest": [[i, round(s, 2), line] for i, s, line, _ in slowest],
    }


def default_lanes() -> int:
    """Notebooks run at once: ``RAN_PIPELINE_LANES`` if set, else 1 (see the module doc)."""
    raw = os.environ.get("RAN_PIPELINE_LANES")
    if raw is None:
        return 1
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"RAN_PIPELINE_LANES must be an integer, got {raw!r}") from None


def cold_seconds(meta: dict) -> dict[str, float]:
    """Each notebook's cold wall time as last recorded (``pipeline.json`` meta): its own
    seconds plus the training seconds of the runs it loaded from the cache."""
    runs = meta.get("runs") or {}
    return {
        stem: float(wall) + sum((runs.get(stem) or {}).get("loaded", {}).values())
        for stem, wall in (meta.get("timing") or {}).items()
    }


def schedule_order(notebooks: list[Path], seconds: dict[str, float]) -> list[Path]:
    """The notebooks by the longest chain each one starts (its ``seconds``, stem ->
    expected seconds, unknown: 0, plus the longest chain of the notebooks that wait for
    it, :data:`DEPENDS`), longest first, ties in number order. :func:`run` starts the
    first of them whose dependencies are done."""
    by_nb = {p.name[:2]: p for p in notebooks}
    chain: dict[str, float] = {}

    def length(nb: str) -> float:
        if nb not in chain:
            after = [d for d, deps in DEPENDS.items() if nb in deps and d in by_nb]
            own = float(seconds.get(by_nb[nb].stem, 0.0))
            chain[nb] = own + max((length(d) for d in after), default=0.0)
        return chain[nb]

    return sorted(notebooks, key=lambda p: (-length(p.name[:2]), p.name))


def _waits_for(src: Path, chosen: set[str]) -> set[str]:
    """The numbers of the selected notebooks ``src`` must wait for."""
    return set(DEPENDS.get(src.name[:2], ())) & chosen


def _lane_job(src: str, profile: str, parameters: dict, env: dict) -> tuple[str, float]:
    """One notebook in a lane's process (spawned): ``env`` set, then :func:`run_notebook`."""
    os.environ.update(env)
    executed, wall = run_notebook(Path(src), Outputs(profile), parameters, progress=False)
    return str(executed), wall


def run(
    profile: str = "default",
    only: list[str] | None = None,
    parameters: dict | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    html: bool = True,
    progress: bool = True,
    lanes: int | None = None,
    record: str = "pipeline",
) -> RunReport:
    """Run the selected notebooks of ``profile``, ``lanes`` at once (None:
    :func:`default_lanes`); stop starting notebooks at the first failure. With lanes,
    ``only`` given by number is also the order they start in (dependencies permitting),
    otherwise :func:`schedule_order` of the last recorded cold times. The timing goes to
    ``<results>/<record>.json`` (``pipeline_warm``: a warm rerun, kept apart from the
    cold record)."""
    if record not in RECORDS:  # fails before any notebook runs
        raise ValueError(f"record must be one of {', '.join(RECORDS)}, not {record!r}")
    outputs = Outputs(check_profile(profile))
    notebooks = select(list_notebooks(notebook_dir), only)
    if not notebooks:
        raise PipelineError(f"no numbered notebooks found in {notebook_dir}")
    lanes = default_lanes() if lanes is None else int(lanes)
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    from ran.bench import machine  # torch: only when notebooks are run

    report = RunReport(profile=profile, lanes=min(lanes, len(notebooks)), record=record)
    t_run = time.perf_counter()
    if report.lanes == 1:
        speed = machine.snapshot()  # each notebook's "after" is the next one's "before"
        for i, src in enumerate(notebooks, 1):
            print(f"[{i}/{len(notebooks)}] {src.stem} (profile {profile})", flush=True)
            before, started = speed, time.time()
            executed, wall = run_notebook(src, outputs, parameters, progress=progress)
            speed = machine.snapshot()
            _finish(report, outputs, src, executed, wall, before, speed, started, html, t_run)
        return report
    order = None  # an explicit --only list is also the order in which lanes start them
    if only:
        named = _named(only)
        order = sorted(
            notebooks, key=lambda p: next(i for i, n in enumerate(named) if _matches(p, n))
        )
    _run_lanes(report, outputs, notebooks, parameters, html, t_run, order)
    return report


def _finish(report, outputs, src, executed, wall, before, after, started, html, t_run) -> None:
    """Record one finished notebook (timing, machine speed, runs, HTML) in ``report`` and
    ``<results>/pipeline.json``."""
    from ran.bench.notebooks import run_flags

    report.executed[src.stem] = str(executed)
    report.wall_time_s[src.stem] = round(wall, 2)
    report.machine[src.stem] = {"before": before, "after": after}
    report.runs[src.stem] = run_flags(outputs, src.name[:2], since=started)
    report.cells[src.stem] = cell_times(Path(executed))
    if html:
        page = export_html(Path(executed), outputs.build / "html" / f"{src.stem}.html")
        report.html[src.stem] = str(page)
    report.elapsed_s = round(time.perf_counter() - t_run, 2)
    print(f"    {src.stem} done in {wall:.1f} s", flush=True)
    _record_timing(outputs, report)


def _run_lanes(report, outputs, notebooks, parameters, html, t_run, order=None) -> None:
    """:func:`run` with ``report.lanes`` notebooks at once, in spawned processes."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from ran.bench import machine

    pending = order or schedule_order(notebooks, cold_seconds(pipeline_meta(outputs)))
    chosen = {p.name[:2] for p in notebooks}
    done: set[str] = set()
    params = {"threads": 1} | dict(parameters or {})
    running, failure = {}, None
    print(f"{len(notebooks)} notebook(s) in {report.lanes} lanes of 1 thread "
          f"(profile {report.profile})", flush=True)  # fmt: skip
    with ProcessPoolExecutor(report.lanes, mp_context=mp.get_context("spawn")) as pool:
        while pending or running:
            ready = [p for p in pending if _waits_for(p, chosen) <= done]
            starts = [] if failure else ready[: report.lanes - len(running)]
            before = machine.snapshot() if starts else None  # once per round of starts
            for src in starts:
                pending.remove(src)
                print(f"[start] {src.stem}", flush=True)
                job = pool.submit(_lane_job, str(src), report.profile, params, LANE_ENV)
                running[job] = (src, before, time.time())
            if not running:
                break
            for job in wait(running, return_when=FIRST_COMPLETED)[0]:
                src, before, started = running.pop(job)
                try:
                    executed, wall = job.result()
                except Exception as exc:  # a PipelineError from the lane, or the lane died
                    if not isinstance(exc, PipelineError):
                        exc = PipelineError(
                            f"notebook {src.stem} failed ({type(exc).__name__}: {exc})"
                        )
                    failure = failure or exc
                    continue
                done.add(src.name[:2])
                after = machine.snapshot()
                _finish(report, outputs, src, executed, wall, before, after, started, html, t_run)
    if failure is not None:  # dependencies outside the run never block, so nothing else is left
        raise failure


def _record_timing(outputs: Outputs, report: RunReport) -> None:
    """Merge this run's per-notebook wall times, the machine's speed around each notebook,
    the training runs its results recorded and its cells' times (:func:`cell_times`) into
    ``<results>/pipeline.json``; a notebook run again replaces all four of its entries."""
    path = pipeline_json(outputs, report.record)
    old = pipeline_meta(outputs, report.record)
    merged = {}
    for key, new in (("timing", report.wall_time_s), ("machine", report.machine),
                     ("runs", report.runs), ("cells", report.cells)):  # fmt: skip
        entries = {k: v for k, v in (old.get(key) or {}).items() if k not in report.wall_time_s}
        merged[key] = dict(sorted((entries | new).items()))
    doc = {
        "meta": {"name": report.record, "profile": outputs.profile, "versions": package_versions()},
        "results": {"notebooks": sorted(merged["timing"])},
    }
    doc["meta"] |= merged
    # the last run's own wall time: with lanes, less than the sum of its notebooks'
    doc["meta"]["last_run"] = {"notebooks": sorted(report.wall_time_s), "lanes": report.lanes,
                               "elapsed_s": report.elapsed_s}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent=1) + "\n")  # a crash never leaves a torn file
