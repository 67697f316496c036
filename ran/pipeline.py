"""The batch runner: every notebook, in order, headless, with papermill.

``python -m ran run --profile P [--only NN] [-p name value ...]`` converts each
``notebooks/NN_*.py`` (jupytext py:percent) to an .ipynb under
``build/<profile>/notebooks/``, executes it with papermill on the ``python3``
kernel with ``profile=P`` injected into its ``parameters`` cell, exports HTML to
``build/<profile>/html/`` and records each notebook's wall time in
``<results>/pipeline.json``. A failing notebook stops the run with one line that
names it and the error it raised.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ran.util.atomic import atomic_write
from ran.util.results import REPO_ROOT, Outputs, check_profile, package_versions

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "python3"
_NB_RE = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")


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


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered py:percent notebooks, in order (``01_...py``, ``02_...py``, ...)."""
    return sorted(p for p in Path(notebook_dir).glob("*.py") if _NB_RE.match(p.name))


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """Keep the notebooks whose number (``03``) or stem (``03_h1...``) is in ``only``."""
    if not only:
        return notebooks
    wanted = {o.strip() for item in only for o in str(item).split(",") if o.strip()}
    wanted = {w.zfill(2) if w.isdigit() else w for w in wanted}
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


def run(
    profile: str = "default",
    only: list[str] | None = None,
    parameters: dict | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    html: bool = True,
    progress: bool = True,
) -> RunReport:
    """Run the selected notebooks of ``profile`` in order; stop at the first failure."""
    outputs = Outputs(check_profile(profile))
    notebooks = select(list_notebooks(notebook_dir), only)
    if not notebooks:
        raise PipelineError(f"no numbered notebooks found in {notebook_dir}")
    from ran.bench import machine  # torch: only when notebooks are run
    from ran.bench.notebooks import run_flags

    report = RunReport(profile=profile)
    speed = machine.snapshot()  # each notebook's "after" is the next one's "before"
    for i, src in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {src.stem} (profile {profile})", flush=True)
        before, started = speed, time.time()
        executed, wall = run_notebook(src, outputs, parameters, progress=progress)
        speed = machine.snapshot()
        report.executed[src.stem] = str(executed)
        report.wall_time_s[src.stem] = round(wall, 2)
        report.machine[src.stem] = {"before": before, "after": speed}
        report.runs[src.stem] = run_flags(outputs, src.name[:2], since=started)
        if html:
            page = export_html(executed, outputs.build / "html" / f"{src.stem}.html")
            report.html[src.stem] = str(page)
        print(f"    done in {wall:.1f} s", flush=True)
        _record_timing(outputs, report)
    return report


def _record_timing(outputs: Outputs, report: RunReport) -> None:
    """Merge this run's per-notebook wall times, the machine's speed around each notebook
    and the training runs its results recorded into ``<results>/pipeline.json``; a
    notebook run again replaces all three of its entries."""
    path = outputs.results / "pipeline.json"
    old = json.loads(path.read_text()).get("meta", {}) if path.exists() else {}
    merged = {}
    for key, new in (("timing", report.wall_time_s), ("machine", report.machine),
                     ("runs", report.runs)):  # fmt: skip
        entries = {k: v for k, v in (old.get(key) or {}).items() if k not in report.wall_time_s}
        merged[key] = dict(sorted((entries | new).items()))
    doc = {
        "meta": {"name": "pipeline", "profile": outputs.profile, "versions": package_versions()},
        "results": {"notebooks": sorted(merged["timing"])},
    }
    doc["meta"] |= merged
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent=1) + "\n")  # a crash never leaves a torn file
