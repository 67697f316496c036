"""Wall time of each notebook, read from the provenance of its results (nothing is run).

Notebook ``NN`` is found by the prefix ``NN_`` of its results file(s) under
``<results>/``; its minutes are the papermill wall time recorded in
``pipeline.json``'s ``meta.timing`` (kernel start included) when present, else the
``meta.wall_time_s`` the notebook saved with its results (the largest, when it
saved several files). A notebook with no results is listed as not run.

A warm notebook loads its training runs from the run cache, so its wall time
understates a cold run. Every training run a results file records with
``loaded`` true (unique by config hash) adds the wall time its own training
recorded: the ``cold estimate`` is the recorded minutes plus those.
"""

from __future__ import annotations

import json
import time

from ran.bench.store import check, section_met, verdict
from ran.results import Outputs

NOTEBOOKS = ("01", "02", "03", "04", "05")
TARGET_MINUTES = 60.0  # all notebooks of the default profile, cold, on 2 CPU cores (issue 6)


def _pipeline_timing(outputs: Outputs) -> dict[str, float]:
    path = outputs.results / "pipeline.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("meta", {}).get("timing", {}) or {}


def _loaded_runs(node, found: dict[str, float]) -> None:
    """Collect ``{hash: training wall seconds}`` of the runs a results tree marks ``loaded``.

    A run is a dict with ``hash`` and ``loaded`` (and ``wall_time_s`` or
    ``train_wall_s``), or a dict of equal-length columns with those keys.
    """
    if isinstance(node, dict):
        if "hash" in node and "loaded" in node:
            wall = node.get("wall_time_s", node.get("train_wall_s"))
            cols = isinstance(node["hash"], list)
            hashes, loaded = (
                (node["hash"], node["loaded"]) if cols else ([node["hash"]], [node["loaded"]])
            )
            walls = wall if cols else [wall]
            for h, ld, w in zip(hashes, loaded, walls or [None] * len(hashes), strict=True):
                if ld is True and isinstance(w, int | float):
                    found[str(h)] = float(w)
        for v in node.values():
            _loaded_runs(v, found)
    elif isinstance(node, list):
        for v in node:
            _loaded_runs(v, found)


def wall_times(outputs: Outputs, notebooks=NOTEBOOKS) -> list[dict]:
    """One row per notebook: notebook, results file(s), minutes (None if not run), source,
    the reused (loaded) training runs with their recorded minutes, and the cold estimate."""
    timing = _pipeline_timing(outputs)
    rows = []
    for nb in notebooks:
        files = sorted(outputs.results.glob(f"{nb}_*.json"))
        docs = [json.loads(p.read_text()) for p in files]
        metas = [d.get("meta", {}) for d in docs]
        reused: dict[str, float] = {}
        for d in docs:
            _loaded_runs(d.get("results", {}), reused)
        reused_min = sum(reused.values()) / 60
        walls = [m["wall_time_s"] for m in metas if isinstance(m.get("wall_time_s"), int | float)]
        stems = [k for k in sorted(timing) if k.startswith(f"{nb}_")]
        if stems:
            minutes, source = sum(timing[k] for k in stems) / 60, "pipeline.json meta.timing"
            name = ", ".join(stems)
        elif walls:
            minutes, source = max(walls) / 60, "results meta.wall_time_s"
            name = metas[0].get("name", files[0].stem)
        else:
            minutes, source, name = None, "not run (no results)", nb
        rows.append(
            {
                "notebook": name,
                "results": ", ".join(p.name for p in files) or "none",
                "minutes": minutes,
                "source": source,
                "reused_runs": len(reused),
                "reused_minutes": reused_min,
                "cold_minutes": None if minutes is None else minutes + reused_min,
            }
        )
    return rows


def run(outputs: Outputs) -> dict:
    """The ``notebooks`` section: the wall-time table, its total and the per-notebook target."""
    t0 = time.perf_counter()
    rows = wall_times(outputs)
    ran_rows = [r for r in rows if r["minutes"] is not None]
    missing = [r["notebook"] for r in rows if r["minutes"] is None]
    total = sum(r["minutes"] for r in ran_rows)
    cold = sum(r["cold_minutes"] for r in ran_rows)
    n_reused = sum(r["reused_runs"] for r in ran_rows)
    longest = max(ran_rows, key=lambda r: r["minutes"]) if ran_rows else None
    checks = [
        check("all notebooks, total (minutes)", total if not missing else None, TARGET_MINUTES),
        check("longest notebook (minutes)", longest["minutes"] if longest else None, None),
        check(
            "all notebooks, cold estimate (minutes)", cold if not missing else None, TARGET_MINUTES
        ),
    ]
    longest_text = (
        f"; the longest, {longest['notebook']}, takes {longest['minutes']:.1f} min"
        if longest
        else ""
    )
    summary = (
        f"{len(ran_rows)} notebook(s) with results take {total:.1f} min in all in profile "
        f"{outputs.profile}{longest_text} (target <= {TARGET_MINUTES:g} min for all of them, as last recorded: "
        f"{verdict(checks[0]['met'])})"
        + (
            f"; {n_reused} training run(s) were reused from the cache; retrained at their "
            f"recorded wall times, a cold run takes about {cold:.1f} min "
            f"({verdict(checks[2]['met'])})"
            if n_reused
            else ""
        )
        + (f"; no results yet for notebook(s) {', '.join(missing)}" if missing else "")
    )
    return {
        "rows": rows,
        "total_minutes": total,
        "cold_minutes": cold,
        "target": TARGET_MINUTES,
        "checks": checks,
        "met": section_met(checks),
        "summary": summary,
        "wall_time_s": time.perf_counter() - t0,
    }
