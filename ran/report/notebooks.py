"""The study's notebooks on disk: the numbered py:percent files under ``notebooks/``.

One list for everything that needs it: the pipeline runs them (:mod:`ran.pipeline`), the
notebooks bench reads their recorded times (:mod:`ran.bench.notebooks`) and the lab copies
them (:mod:`ran.lab`). The pipeline's record of its runs, ``<results>/pipeline.json``, is read
here too (:func:`pipeline_meta`), by both the pipeline that writes it and the bench.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ran.util.results import REPO_ROOT, Outputs

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
_NB_RE = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered py:percent notebooks, in order (``01_...py``, ``02_...py``, ...)."""
    return sorted(p for p in Path(notebook_dir).glob("*.py") if _NB_RE.match(p.name))


def numbers(notebook_dir: Path = NOTEBOOK_DIR) -> tuple[str, ...]:
    """The notebooks' two-digit numbers, in order (``("01", "02", ...)``)."""
    return tuple(p.name[:2] for p in list_notebooks(notebook_dir))


RECORDS = ("pipeline", "pipeline_warm")  # where a pipeline run records its timing


def pipeline_json(outputs: Outputs, record: str = "pipeline") -> Path:
    """``<results>/pipeline.json``: the pipeline's per-notebook timing, machine and runs
    (``record="pipeline_warm"``: those of a warm rerun, ``make warm``)."""
    if record not in RECORDS:
        raise ValueError(f"record must be one of {', '.join(RECORDS)}, not {record!r}")
    return outputs.results / f"{record}.json"


def pipeline_meta(outputs: Outputs, record: str = "pipeline") -> dict:
    """``pipeline.json``'s ``meta`` (timing, machine, runs, last_run), ``{}`` before any run."""
    path = pipeline_json(outputs, record)
    return json.loads(path.read_text()).get("meta", {}) if path.exists() else {}
