"""Two sets of results compared field by field, timing and provenance left out.

A rerun of the pipeline should reproduce every committed number except the ones that
measure the machine: wall times, timing ratios, latencies, GFLOPS, and the provenance of
the run (commit, date, package versions). :func:`diff_dirs` walks the JSON results of two
``data/results`` folders in parallel and sorts every differing leaf into one of four kinds:

* ``rounding``: two numbers within a relative 1e-5 of each other (float summation order);
* ``numeric``: two numbers further apart;
* ``text``: two strings (a findings sentence that states a changed number is one);
* ``structure``: a key or list item present on one side only, or a change of type.

A findings block that states a time (``"timing": True``, set by
:func:`ran.util.results.text`, ``table`` and ``target`` with ``timing=True``) is skipped whole,
and a table's cells in its ``timing_columns`` and ``timing_rows``.

``python -m ran report --diff OTHER`` prints the table for the profile's results against
``OTHER`` (another checkout's ``data/results``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

# Keys whose values measure time or the machine, or record provenance (the whole subtree;
# names ending in TIMING_SUFFIXES too, phase_s among them). The agent's ``counters`` count
# the idle ticks its wall-clock timer fired (and the passes and tokens with them).
TIMING_KEYS = frozenset(
    {"timing", "machine", "versions", "git_commit", "created", "last_run", "overhead",
     "latency", "ratios", "median_ratio", "timing_columns", "timing_rows",
     "counters"}
)  # fmt: skip
TIMING_SUFFIXES = ("_s", "_ms", "_min", "_gflops")
# Files that are timing records as a whole.
TIMING_FILES = frozenset({"bench.json", "pipeline.json", "pipeline_warm.json"})
KINDS = ("rounding", "numeric", "text", "structure")


def is_timing(key: str) -> bool:
    """Whether a key names a timing or provenance field (skipped with its subtree)."""
    return key in TIMING_KEYS or key.endswith(TIMING_SUFFIXES)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _untimed_table(t: dict, other: dict) -> dict:
    """Table ``t`` (a findings table, or any dict of ``rows``) without the cells either side
    marks as stating a time (its ``timing_columns`` by name, ``timing_rows`` by index); the
    paths of the cells after a dropped column count without it."""
    cols = set(t.get("timing_columns", ())) | set(other.get("timing_columns", ()))
    drop_rows = set(t.get("timing_rows", ())) | set(other.get("timing_rows", ()))
    if not (cols or drop_rows):
        return t
    drop = {i for i, c in enumerate(t.get("columns", ())) if c in cols}
    rows = [[v for i, v in enumerate(row) if i not in drop]
            for j, row in enumerate(t.get("rows", ())) if j not in drop_rows]  # fmt: skip
    return t | {"rows": rows, "columns": [c for c in t.get("columns", ()) if c not in cols]}


def diff_values(a, b, path: str = "") -> list[tuple[str, str]]:
    """``[(kind, path)]`` of every differing leaf of two JSON values (timing keys skipped)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.get("timing") is True or b.get("timing") is True:  # a findings block on time
            return []
        if isinstance(a.get("rows"), list) and isinstance(b.get("rows"), list):
            a, b = _untimed_table(a, b), _untimed_table(b, a)
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if is_timing(str(k)):
                continue
            if k not in a or k not in b:
                out.append(("structure", f"{path}/{k}"))
            else:
                out += diff_values(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = [("structure", f"{path}[{len(a)}!={len(b)}]")] if len(a) != len(b) else []
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            out += diff_values(x, y, f"{path}[{i}]")
        return out
    if _number(a) and _number(b):
        if a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)):
            return []
        close = math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-12)
        return [("rounding" if close else "numeric", path)]
    if type(a) is not type(b):
        return [("structure", path)]
    return [] if a == b else [("text", path)]


def diff_dirs(a_dir, b_dir, pattern: str = "**/*.json") -> dict[str, dict]:
    """Per results file present on either side (by its path under the folder, the run
    records under ``runs/`` included): ``{kind: count}``, ``first`` (up to five differing
    paths per kind) and ``missing`` (the side it is missing from, if any)."""
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    names = sorted(
        {str(p.relative_to(d)) for d in (a_dir, b_dir) for p in d.glob(pattern)
         if p.name not in TIMING_FILES}
    )  # fmt: skip
    report = {}
    for name in names:
        pa, pb = a_dir / name, b_dir / name
        if not (pa.exists() and pb.exists()):
            report[name] = {"missing": "first" if not pa.exists() else "second"}
            continue
        found = diff_values(json.loads(pa.read_text()), json.loads(pb.read_text()))
        counts = Counter(kind for kind, _ in found)
        first = {k: [p for kind, p in found if kind == k][:5] for k in KINDS if counts[k]}
        report[name] = {k: counts[k] for k in KINDS} | {"first": first}
    return report


def render(report: dict[str, dict]) -> str:
    """The report as a markdown table (one row per file) and the first differing paths."""
    lines = ["| file | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    notes = []
    for name, r in report.items():
        if "missing" in r:
            lines.append(
                f"| {name} | missing on the {r['missing']} side |" + " |" * (len(KINDS) - 1)
            )
            continue
        lines.append(f"| {name} | " + " | ".join(str(r[k]) for k in KINDS) + " |")
        for kind, paths in r["first"].items():
            notes.append(f"- {name} {kind}: " + ", ".join(paths))
    return "\n".join(lines + ([""] + notes if notes else []))
