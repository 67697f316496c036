"""FINDINGS' appendix: the training runs behind the results, by config hash.

Every trained run is recorded in ``<results>/runs/<hash>.json`` (its TrainConfig, wall
time and training curve). :func:`runs_table` lists the runs the current results files name
(any 16-hex-digit string in a payload that has such a record), with the notebooks that use
each, the path of the payload key that names it, and the run's key settings; prose and
notebook tables need not carry hashes.
"""

from __future__ import annotations

import json
import re

from ran.report.render import render_table
from ran.report.targets import result_docs
from ran.util.results import Outputs

HASH_RE = re.compile(r"^[0-9a-f]{16}$")
# payload keys that only hold runs (left out of a run's label) and keys renamed in it
GENERIC = {"runs", "run", "hash", "configs", "measured", "comparison", "settings"}
RENAME = {"per_seed": "seed", "run_hashes": "seed", "points": "point", "tradeoff": "trade-off",
          "h1_hash": "H1 run"}  # fmt: skip
RUN_COLUMNS = ["config hash", "used by", "run", "probe", "settings", "steps", "wall (min)"]


def short(name: str) -> str:
    """A results file as its notebook number (``04_extended`` -> ``04 ext.``)."""
    return name.split("_")[0] + (" ext." if "extended" in name else "")


def hash_paths(obj, path=()) -> list[tuple[str, tuple]]:
    """Every ``(hash, key path)`` of a payload (a hash: a 16-hex-digit string)."""
    if isinstance(obj, dict):
        return [hp for k, v in obj.items() for hp in hash_paths(v, (*path, k))]
    if isinstance(obj, list):
        return [hp for i, v in enumerate(obj) for hp in hash_paths(v, (*path, i))]
    return [(obj, path)] if isinstance(obj, str) and HASH_RE.match(obj) else []


def label(path: tuple) -> str:
    """A run's name from the payload path that holds its hash (``comparison/reservoir/runs/
    recall/hash`` -> ``reservoir recall``; ``per_seed/hash/3`` -> ``seed 3``)."""
    words = []
    for key in path:
        if isinstance(key, int):
            words.append(str(key) if words and words[-1] in RENAME.values() else f"#{key}")
        elif key not in GENERIC:
            words.append(RENAME.get(key, key))
    words = [w for i, w in enumerate(words) if not (w == "seed" and "seed" in words[:i])]
    return " ".join(words) or "run"


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, int | float) else str(x)


def settings_text(cfg: dict) -> str:
    """The settings that tell runs apart: mechanism and read side, reservoir, optimiser
    (the injection's fields nested under ``injection``, or flat in older records)."""
    inj = cfg.get("injection", cfg)
    r = inj.get("reservoir", {})
    parts = [cfg.get("kind", "?")]
    if inj.get("readout") not in (None, "kv"):
        parts[0] += f" ({inj['readout']} read)"
    parts += [f"N {r.get('units')}", f"sr {_num(r.get('sr'))}", f"leak {_num(r.get('lr'))}",
              f"input {_num(r.get('input_scaling'))}", f"seed {r.get('seed')}"]  # fmt: skip
    opt = [f"peak lr {_num(cfg.get('learning_rate'))}", f"batch {cfg.get('batch_size')}"]
    if cfg.get("kl_weight"):
        opt.append(f"KL {_num(cfg['kl_weight'])}")
    opt += [name for key, name in (("query_gate", "query gate"), ("write_gate", "write gate"))
            if inj.get(key)]  # fmt: skip
    return ", ".join(parts) + "; " + ", ".join(opt)


def probe_text(cfg: dict) -> str:
    p = cfg.get("probe_params", {})
    size = f" K={p['k']}" if "k" in p else (f" k_max={p['k_max']}" if "k_max" in p else "")
    return f"{cfg.get('probe', '?')}{size}"


def runs_used(docs: dict[str, dict]) -> dict[str, dict[str, list[str]]]:
    """hash -> {results name: its labels of the run} over ``docs``, in payload order."""
    used: dict[str, dict[str, list[str]]] = {}
    for name, doc in docs.items():
        for h, path in hash_paths(doc.get("results", {})):
            labels = used.setdefault(h, {}).setdefault(name, [])
            if label(path) not in labels:
                labels.append(label(path))
    return used


def runs_table(outputs: Outputs) -> str:
    """The appendix block: a sentence counting the run records, and the table of the used ones."""
    docs = result_docs(outputs)
    folder = outputs.results / "runs"
    records = {p.stem: p for p in folder.glob("*.json")} if folder.exists() else {}
    used = runs_used(docs)
    listed = [h for h in used if h in records]
    no_record = [h for h in used if h not in records]
    if not listed:
        return (
            "*No training runs recorded yet: no results file names a run of `data/results/runs`.*\n"
        )
    rows, models = [], []
    for h in listed:
        rec = json.loads(records[h].read_text())
        cfg, hist = rec.get("config", {}), rec.get("history", {})
        wall = rec.get("wall_time_s")
        models.append(cfg.get("model_name"))
        other = "" if models[-1] == models[0] else f", {models[-1]}"
        labels = dict.fromkeys(lab for labs in used[h].values() for lab in labs)
        rows.append(
            [f"`{h}`", ", ".join(short(n) for n in used[h]), "; ".join(labels),
             probe_text(cfg) + other, settings_text(cfg),
             f"{len(hist.get('step', []))}/{cfg.get('steps')}", None if wall is None else round(wall / 60, 1)]
        )  # fmt: skip
    unused = len(records) - len(listed)
    lead = (
        f"{len(listed)} training runs are named by the current results (listed below); "
        f"`data/results/runs` holds {len(records)} run records"
        + (
            f", {unused} of them from earlier configurations no results file names"
            if unused
            else ""
        )
        + (
            f"; {len(no_record)} hashes in the results have no record there (throwaway runs "
            "of the benchmarks)"
            if no_record
            else ""
        )  # fmt: skip
        + f"; every run is on {models[0]} unless its probe column names another model.\n\n"
    )
    caption = (
        "Training runs by config hash (the name of the run's cache entry `build/cache/runs/<hash>` "
        "and of its record `data/results/runs/<hash>.json`, which holds the full TrainConfig and "
        "the training curve): the notebooks that use it (by number; ext.: the extended comparison) "
        "and the payload key that names it, "
        "the probe, the reservoir and optimiser settings, steps run / maximum, wall time as "
        "recorded"
    )
    return lead + render_table(
        {"caption": caption, "columns": RUN_COLUMNS, "rows": rows, "fmt": ".3g"}
    )
