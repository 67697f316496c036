"""Where outputs go, and how results are saved with their provenance.

Every notebook writes one JSON file per result set through :func:`save_results`.
The file holds the payload (numbers), ``meta`` (seed, model, package versions,
git commit, wall time) and ``findings``: tables, figures and sentences whose
numbers are computed from the payload by code, which ``python -m ran report``
pastes into FINDINGS.md. Nothing in FINDINGS.md is typed by hand.

Output roots depend on the profile: ``default`` writes the committed
``figures/`` and ``data/results/``; ``smoke`` writes under ``build/smoke/`` and
never touches committed results; ``paper`` writes under ``build/paper/``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ran.util.atomic import atomic_write_json
from ran.util.wording import NOISE, spans_one

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("smoke", "default", "paper")
# Keys under meta that change from run to run (wall time, dates); everything
# else in a results file must be identical between two runs of the same config.
VOLATILE_META_KEYS = ("wall_time_s", "created", "git_commit", "timing")
_PACKAGES = ("torch", "numpy", "scipy", "transformers", "pandas", "reservoirpy")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


@dataclass(frozen=True)
class Outputs:
    """The output folders of one profile (all absolute, never cwd-relative)."""

    profile: str = "default"
    root: Path | None = None  # override the repo root (tests point it at a temp dir)

    def __post_init__(self):
        check_profile(self.profile)

    @property
    def base(self) -> Path:
        root = Path(self.root) if self.root is not None else _env_root()
        return root if self.profile == "default" else root / "build" / self.profile

    @property
    def results(self) -> Path:
        return self.base / "data" / "results"

    @property
    def figures(self) -> Path:
        return self.base / "figures"

    @property
    def build(self) -> Path:
        """Executed notebooks, HTML and the PDF (never committed): ``build/`` for the
        default profile, ``build/<profile>/`` for the others."""
        root = Path(self.root) if self.root is not None else _env_root()
        return root / "build" if self.profile == "default" else root / "build" / self.profile

    @property
    def cache(self) -> Path:
        """Cache shared by profiles (converted model weights, training runs)."""
        root = Path(self.root) if self.root is not None else _env_root()
        return root / "build" / "cache"

    def figure_path(self, name: str) -> Path:
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / name

    def rel(self, path: Path) -> str:
        """Path relative to the repo root, as written into results and FINDINGS."""
        root = Path(self.root) if self.root is not None else _env_root()
        return str(Path(path).resolve().relative_to(root.resolve()))


def _env_root() -> Path:
    return Path(os.environ.get("RAN_ROOT", REPO_ROOT))


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, Paths and dataclasses for JSON.

    Non-finite floats become None (JSON has no NaN) so files stay strict JSON.
    """
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _timed(block: dict, timing: bool) -> dict:
    """``block`` marked as stating a time (``timing=True``): a rerun's results diff
    (:mod:`ran.report.resdiff`) skips it, as it skips every timing field."""
    return block | {"timing": True} if timing else block


def table(caption: str, columns: list[str], rows: list[list[Any]], fmt: str = ".3g",
          timing: bool = False, timing_columns=(), timing_rows=()) -> dict:  # fmt: skip
    """A findings table; numbers are formatted by the report with ``fmt``. ``timing`` marks
    the whole table as stating times (:func:`_timed`); ``timing_columns`` (names) and
    ``timing_rows`` (indices) mark only those cells, which a rerun's diff then skips."""
    unknown = set(timing_columns) - set(columns)
    if unknown:
        raise ValueError(f"timing_columns {sorted(unknown)} are not columns of the table")
    block = {"kind": "table", "caption": caption, "columns": columns, "rows": rows, "fmt": fmt}
    if timing_columns:
        block["timing_columns"] = list(timing_columns)
    if timing_rows:
        block["timing_rows"] = [int(i) for i in timing_rows]
    return _timed(block, timing)


def figure(path: Path | str, caption: str, outputs: Outputs | None = None) -> dict:
    p = outputs.rel(Path(path)) if outputs is not None else str(path)
    return {"kind": "figure", "path": p, "caption": caption}


def text(sentence: str, timing: bool = False) -> dict:
    """A sentence for FINDINGS; build it with f-strings from measured values (``timing``:
    it states a time, see :func:`_timed`)."""
    return _timed({"kind": "text", "text": sentence}, timing)


def target(
    claim: str,
    value: Any,
    goal: str,
    met: bool | None,
    *,
    ci: list | tuple | None = None,
    ratio: bool = False,
    note: str = "",
    source: str | None = None,
    timing: bool = False,
) -> dict:
    """A target a result is held to: one row of FINDINGS' Targets table, never a sentence.

    ``claim`` names what is measured, ``value`` is the measurement (a number, or text such
    as ``"0.914 [0.853, 0.951]"``), ``goal`` the target expression (``">= 0.95"``) and
    ``met`` whether the value meets it (None: not measured). For a time ratio
    (``ratio=True``) whose ``ci`` contains 1 the note reads "within noise": the row still
    says met or NOT met against its target; ``timing`` (implied by ``ratio``) marks a row that
    states a time (:func:`_timed`). ``source`` defaults to the results file the
    block is saved in (filled by the report).
    """
    if ratio and spans_one(ci) and not note:
        note = NOISE
    block = {
        "kind": "target",
        "claim": claim,
        "value": value,
        "target": goal,
        "met": None if met is None else bool(met),
        "ci": None if ci is None else [float(v) for v in ci],
        "note": note,
        "source": source,
    }
    return _timed(block, timing or ratio)  # a time ratio states a time


def save_results(
    name: str,
    payload: dict,
    outputs: Outputs,
    *,
    seed: int | None,
    model_name: str | None = None,
    wall_time_s: float | None = None,
    findings: list[dict] | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Write ``<results>/<name>.json`` with payload, provenance and findings."""
    meta = {
        "name": name,
        "profile": outputs.profile,
        "seed": seed,
        "model_name": model_name,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": wall_time_s,
    }
    meta.update(extra_meta or {})
    doc = {"meta": meta, "findings": findings or [], "results": payload}
    outputs.results.mkdir(parents=True, exist_ok=True)
    path = outputs.results / f"{name}.json"
    atomic_write_json(path, to_jsonable(doc), indent=1)  # a crash never leaves a torn file
    return path


def load_results(name: str, outputs: Outputs) -> dict:
    path = outputs.results / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no results file {path}; run the notebook that writes it "
            f"(`python -m ran run --profile {outputs.profile}`) first"
        )
    return json.loads(path.read_text())


def strip_volatile(doc: dict) -> dict:
    """A copy of a results document without the run-to-run varying meta fields."""
    out = json.loads(json.dumps(doc))
    for key in VOLATILE_META_KEYS:
        out.get("meta", {}).pop(key, None)
    return out


def parse_list(text: str, cast=int, allow_empty: bool = False) -> list:
    """A notebook's comma-list parameter (``"0,1,2"``) as a list of ``cast`` values.

    Papermill passes only scalars, so list parameters are comma strings; every
    notebook parses them with this one helper. Empty items are an error; an empty
    (or blank) ``text`` is the empty list when ``allow_empty``, else an error too.
    """
    if allow_empty and not str(text).strip():
        return []
    items = [s.strip() for s in str(text).split(",")]
    if not items or any(not s for s in items):
        raise ValueError(f"a list parameter needs comma-separated values, got {text!r}")
    try:
        return [cast(s) for s in items]
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a list of {cast.__name__}") from None
