"""The merged table of a sweep (:mod:`ran.sweeps.sweep`): tidy rows, JSON with provenance, CSV.

One row per job x evaluation x control (``status`` ok) with the axis values as columns;
a failed job is one row with ``status`` failed, its error and log, and an unfinished one
(an interrupted sweep) one row with ``status`` pending. Both files are written
atomically (:mod:`ran.util.atomic`) every time a job ends.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

JOB_COLUMNS = ("loaded", "train_wall_s", "steps_run", "best_val_acc", "final_loss")
EVAL_COLUMNS = ("label", "probe", "split", "k", "control", "acc", "ci_low", "ci_high",
                "correct", "n", "chance")  # fmt: skip


def tidy_rows(sweep, specs: list[dict], rows: dict, failures: dict) -> list[dict]:
    """One row per job x evaluation x control; a failed or unfinished job is one row
    with its ``status`` (``failed``, ``pending``) and ``error``."""
    out = []
    for spec in specs:
        head = {"sweep": sweep.name, "hash": spec["key"], **spec["tag"]}
        row = rows.get(spec["key"])
        if row is None:
            fail = failures.get(spec["key"])
            status = "failed" if fail else "pending"
            out.append(head | {"status": status, "error": fail["error"] if fail else None,
                               "log": fail["log"] if fail else None})  # fmt: skip
            continue
        job = {k: row.get(k) for k in JOB_COLUMNS}
        for ev in row["evaluations"]:
            for control, r in ev["controls"].items():
                cells = {"label": ev["label"], "probe": ev["probe"], "split": ev["split"],
                         "k": ev["k"], "control": control, **r, "n": ev["n"],
                         "chance": ev["chance"]}  # fmt: skip
                out.append(head | {"status": "ok"} | cells | job)
    return out


def write_table(sweep, specs, rows, failures, outputs, executor, wall_s,
                history=()) -> tuple[Path, Path]:  # fmt: skip
    """Write ``<results>/sweeps/<name>.json`` (with provenance) and ``.csv`` atomically."""
    from ran.util.atomic import atomic_write
    from ran.util.results import save_results

    tidy = tidy_rows(sweep, specs, rows, failures)
    columns = ["sweep", "hash", *sweep.axes, "status", *EVAL_COLUMNS, *JOB_COLUMNS, "error", "log"]
    n_ok = sum(s["key"] in rows for s in specs)
    payload = {
        "name": sweep.name,
        "axes": sweep.axes,
        "base": sweep.base,
        "evaluate": sweep.evaluate,
        "jobs": len(specs),
        "finished": n_ok,
        "history": list(history),  # every invocation: started, executor, skipped, ran, outcome
        "failed": [failures[k] | {"tag": _tag(specs, k)} for k in failures],
        "pending": [s["key"] for s in specs if s["key"] not in rows and s["key"] not in failures],
        "columns": columns,
        "rows": tidy,
    }
    model = sweep.base.get("model_name", "tiny-llama")
    path = save_results(f"sweeps/{sweep.name}", payload, outputs, seed=None, model_name=model,
                        wall_time_s=wall_s, extra_meta={"executor": executor})  # fmt: skip
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(tidy)
    csv_path = atomic_write(path.with_suffix(".csv"), buf.getvalue())
    return path, csv_path


def _tag(specs, key):
    return next(s["tag"] for s in specs if s["key"] == key)
