"""The study's notebooks on disk: the numbered py:percent files under ``notebooks/``.

One list for everything that needs it: the pipeline runs them (:mod:`ran.pipeline`), the
notebooks bench reads their recorded times (:mod:`ran.bench.notebooks`) and the lab copies
them (:mod:`ran.lab`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ran.util.results import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
_NB_RE = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered py:percent notebooks, in order (``01_...py``, ``02_...py``, ...)."""
    return sorted(p for p in Path(notebook_dir).glob("*.py") if _NB_RE.match(p.name))


def numbers(notebook_dir: Path = NOTEBOOK_DIR) -> tuple[str, ...]:
    """The notebooks' two-digit numbers, in order (``("01", "02", ...)``)."""
    return tuple(p.name[:2] for p in list_notebooks(notebook_dir))
