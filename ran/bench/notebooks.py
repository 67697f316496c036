"""Wall time of each notebook, read from the provenance of its results (nothing is run).

Notebook ``NN`` is found by the prefix ``NN_`` of its results file(s) under
``<results>/``; its minutes are the papermill wall time recorded in
``pipeline.json``'s ``meta.timing`` (kernel start included) when present, else the
``meta.wall_time_s`` the notebook saved with its results (the largest, when it
saved several files). A notebook with no results is listed as not run.

A warm notebook loads its training runs from the run cache, so its wall time
understates a cold run. Every training run a results file records with
``loaded`` true (unique by config hash) adds the wall time its own training
recorded: the ``cold estimate`` is the recorded minutes plus those. Runs recorded
with ``loaded`` false were trained while the notebook ran: their minutes
(``training_minutes``) are the training share of the notebook's own minutes.

With lanes (:mod:`ran.pipeline`) notebooks overlap, so the target is checked on the
wall time of the last run (``pipeline.json``'s ``meta.last_run``) when that run
covered every notebook listed, the sum of the notebooks' minutes otherwise.
"""

from __future__ import annotations

import json
import time

from ran.bench.store import check, section_met
from ran.report.notebooks import numbers, pipeline_meta
from ran.util.results import Outputs

NOTEBOOKS = numbers()  # every numbered notebook under notebooks/ ("01", ..., "07")
TARGET_MINUTES = 45.0  # a cold run of every notebook of the default profile on 2 cores (issue 20)
TARGET_WARM_MINUTES = 5.0  # the same run again on its caches (make warm)


def run_flags(outputs: Outputs, nb: str, since: float | None = None) -> dict[str, dict]:
    """``{"trained": {hash: s}, "loaded": {hash: s}}`` of the runs recorded by notebook
    ``nb``'s results files (only those written at or after ``since``, a ``time.time()``)."""
    paths = sorted(outputs.results.glob(f"{nb}_*.json"))
    return _flags(
        [json.loads(p.read_text()) for p in paths if since is None or p.stat().st_mtime >= since]
    )


def _flags(docs: list[dict]) -> dict[str, dict]:
    """:func:`run_flags` of loaded results documents."""
    loaded: dict[str, float] = {}
    trained: dict[str, float] = {}
    for d in docs:
        _runs(d.get("results", {}), loaded, trained)
    return {"trained": trained, "loaded": loaded}


def _runs(node, loaded: dict[str, float], trained: dict[str, float]) -> None:
    """Collect ``{hash: training wall seconds}`` of the runs a results tree records,
    into ``loaded`` (marked ``loaded``: reused from the cache) or ``trained`` (trained
    while the notebook ran, so inside its wall time).

    A run is a dict with ``hash`` and ``loaded`` (and ``wall_time_s`` or
    ``train_wall_s``), or a dict of equal-length columns with those keys.
    """
    if isinstance(node, dict):
        if "hash" in node and "loaded" in node:
            wall = node.get("wall_time_s", node.get("train_wall_s"))
            cols = isinstance(node["hash"], list)
            hashes, flags = (
                (node["hash"], node["loaded"]) if cols else ([node["hash"]], [node["loaded"]])
            )
            walls = wall if cols else [wall]
            for h, ld, w in zip(hashes, flags, walls or [None] * len(hashes), strict=True):
                if isinstance(w, int | float) and isinstance(ld, bool):
                    (loaded if ld else trained)[str(h)] = float(w)
        for v in node.values():
            _runs(v, loaded, trained)
    elif isinstance(node, list):
        for v in node:
            _runs(v, loaded, trained)


def wall_times(outputs: Outputs, notebooks=NOTEBOOKS) -> list[dict]:
    """One row per notebook: notebook, results file(s), minutes (None if not run), source,
    the runs trained while it ran (their minutes are part of its own), the reused (loaded)
    training runs (``reused_hashes``: hash -> recorded seconds) with their minutes, and the
    cold estimate.

    A run trained by any of the notebooks (recorded with ``loaded`` false somewhere)
    is inside that notebook's wall time, so it is never added as reused, not even by
    a notebook that loads it (e.g. notebook 04's scaling point that reuses its
    comparison's run); :func:`run` counts each reused run once in the total.
    """
    meta = pipeline_meta(outputs)
    timing, snapshots, machine, cells = (
        meta.get(k) or {} for k in ("timing", "runs", "machine", "cells")
    )
    rows, every_trained = [], set()
    for nb in notebooks:
        files = sorted(outputs.results.glob(f"{nb}_*.json"))
        docs = [json.loads(p.read_text()) for p in files]
        metas = [d.get("meta", {}) for d in docs]
        stems = [k for k in sorted(timing) if k.startswith(f"{nb}_")]
        if stems and all(k in snapshots for k in stems):  # recorded with the minutes
            trained = {h: s for k in stems for h, s in snapshots[k]["trained"].items()}
            reused = {h: s for k in stems for h, s in snapshots[k]["loaded"].items()}
        else:
            flags = _flags(docs)
            trained, reused = flags["trained"], flags["loaded"]
        every_trained |= set(trained)
        walls = [m["wall_time_s"] for m in metas if isinstance(m.get("wall_time_s"), int | float)]
        speeds = [s["gflops"] for k in stems for s in (machine.get(k) or {}).values()]
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
                "trained_runs": len(trained),
                "training_minutes": sum(trained.values()) / 60,
                "reused_hashes": reused,
                "gflops": [min(speeds), max(speeds)] if speeds else None,
                "slowest_cells": [
                    c for k in stems for c in (cells.get(k) or {}).get("slowest", [])
                ],
            }
        )
    for row in rows:
        reused = {h: w for h, w in row["reused_hashes"].items() if h not in every_trained}
        row["reused_hashes"] = reused
        row["reused_runs"] = len(reused)
        row["reused_minutes"] = sum(reused.values()) / 60
        m = row["minutes"]
        row["cold_minutes"] = None if m is None else m + row["reused_minutes"]
    return rows


def run(outputs: Outputs) -> dict:
    """The ``notebooks`` section: the wall-time table, its total and the per-notebook target."""
    t0 = time.perf_counter()
    last = pipeline_meta(outputs).get("last_run")
    sec = describe({"rows": wall_times(outputs), "profile": outputs.profile, "last_run": last,
                    "warm": warm_run(outputs)})  # fmt: skip
    sec["wall_time_s"] = time.perf_counter() - t0
    return sec


def warm_run(outputs: Outputs) -> dict | None:
    """The warm rerun ``make warm`` recorded (``pipeline_warm.json``): its notebooks, wall
    minutes, per-notebook minutes and the machine's GFLOPS around them; None if none."""
    meta = pipeline_meta(outputs, "pipeline_warm")
    last = meta.get("last_run")
    if not last:
        return None
    stems = last.get("notebooks", [])
    speeds = [s["gflops"] for k in stems for s in (meta.get("machine", {}).get(k) or {}).values()]
    return {
        "notebooks": stems,
        "minutes": last["elapsed_s"] / 60,
        "per_notebook_s": {k: meta.get("timing", {}).get(k) for k in stems},
        "gflops": [min(speeds), max(speeds)] if speeds else None,
    }


def _warm_text(warm: dict | None, whole: bool) -> str:
    if warm is None:
        return ""
    speed = f" at {warm['gflops'][0]:.0f}-{warm['gflops'][1]:.0f} GFLOPS" if warm["gflops"] else ""
    what = "every notebook" if whole else f"{len(warm['notebooks'])} notebook(s) only"
    return (
        f"; a warm rerun on the caches (make warm) ran {what} in {warm['minutes']:.1f} min{speed}"
    )


def slowest_cells(rows: list[dict], n: int = 3) -> list[dict]:
    """The ``n`` slowest notebook cells of ``rows`` (:func:`wall_times`; papermill's record,
    :func:`ran.pipeline.cell_times`): notebook, cell index, minutes and first code line."""
    cells = [
        {"notebook": r["notebook"], "cell": c[0], "minutes": c[1] / 60, "line": c[2]}
        for r in rows
        for c in r.get("slowest_cells") or []
    ]
    return sorted(cells, key=lambda c: -c["minutes"])[:n]


def _cells_text(rows: list[dict]) -> str:
    top = slowest_cells(rows)
    if not top:
        return ""
    parts = []
    for c in top:
        line = c["line"].replace("`", "'")
        parts.append(f"{c['notebook'][:2]} cell {c['cell']} ({c['minutes']:.1f} min, `{line}`)")
    return "; the slowest cells: " + ", ".join(parts)


def describe(sec: dict) -> dict:
    """Add the totals, the checks, ``met`` and the summary sentence to the section's
    ``rows`` (:func:`wall_times`) and ``profile``."""
    rows = sec["rows"]
    ran_rows = [r for r in rows if r["minutes"] is not None]
    missing = [r["notebook"] for r in rows if r["minutes"] is None]
    total = sum(r["minutes"] for r in ran_rows)
    last = sec.get("last_run") or {}  # the pipeline's last run (pipeline.json)
    covered = {s[:2] for s in last.get("notebooks", [])}
    whole = not missing and bool(ran_rows) and set(NOTEBOOKS) <= covered
    lanes = int(last.get("lanes", 1)) if whole else 1
    wall = last["elapsed_s"] / 60 if whole else total  # one run's wall time (lanes overlap)
    unique: dict[str, float] = {}  # each reused run once, however many notebooks load it
    for r in ran_rows:
        unique |= r["reused_hashes"]
    cold = wall + sum(unique.values()) / 60 / lanes
    training = sum(r["training_minutes"] for r in ran_rows)
    n_reused = len(unique)
    n_trained = sum(r["trained_runs"] for r in ran_rows)
    longest = max(ran_rows, key=lambda r: r["minutes"]) if ran_rows else None
    bounds = [g for r in ran_rows if r["gflops"] for g in r["gflops"]]
    speed = [min(bounds), max(bounds)] if bounds else None
    checks = [
        check(
            "all notebooks, wall time of one run (minutes)",
            wall if not missing else None,
            TARGET_MINUTES,
        ),
        check("all notebooks, sum of their minutes", total if not missing else None, None),
        check("longest notebook (minutes)", longest["minutes"] if longest else None, None),
        check(
            "all notebooks, cold estimate (minutes)", cold if not missing else None, TARGET_MINUTES
        ),
    ]
    warm = sec.get("warm")
    warm_whole = bool(warm) and set(NOTEBOOKS) <= {s[:2] for s in warm["notebooks"]}
    if warm is not None:
        checks.append(check("all notebooks, warm rerun on the caches (minutes)",
                            warm["minutes"] if warm_whole else None, TARGET_WARM_MINUTES))  # fmt: skip
    longest_text = (
        f"; the longest, {longest['notebook']}, takes {longest['minutes']:.1f} min"
        if longest
        else ""
    )
    summary = (
        (
            f"{len(ran_rows)} notebook(s) ran in {wall:.1f} min in one run of {lanes} lane(s) "
            f"({total:.1f} notebook-minutes)"
            if whole
            else f"{len(ran_rows)} notebook(s) with results take {total:.1f} min in all"
        )
        + f" in profile {sec.get('profile', 'default')}{longest_text}, as last recorded"
        + (
            f"; the {n_trained} run(s) trained as they ran took {training:.1f} min of training "
            "in all (summed over the runs: worker processes train side by side, so this can "
            "exceed the wall time)"
            if n_trained
            else ""
        )
        + (
            f"; {n_reused} training run(s) were reused from the cache; retrained at their "
            f"recorded wall times, a cold run takes about {cold:.1f} min"
            if n_reused
            else ""
        )
        + (f"; no results yet for notebook(s) {', '.join(missing)}" if missing else "")
        + (
            f"; the machine's fp32 matmul speed around them was {speed[0]:.0f} to "
            f"{speed[1]:.0f} GFLOPS"
            if speed
            else "; the machine's speed was not recorded with these minutes"
        )
        + _warm_text(warm, warm_whole)
        + _cells_text(ran_rows)
    )
    return sec | {
        "total_minutes": total,
        "wall_minutes": wall,
        "lanes": lanes,
        "cold_minutes": cold,
        "training_minutes": training,
        "gflops": speed,
        "target": TARGET_MINUTES,
        "checks": checks,
        "met": section_met(checks),
        "summary": summary,
    }
