"""The single benchmark results file ``<results>/bench.json``: its sections and findings.

``python -m ran bench all`` measures every section; ``python -m ran bench <section>``
re-measures one and keeps the others. Each section is a dict holding its numbers,
a ``checks`` list (measure, value, target, comparison, met), ``met`` (every targeted
check met), ``summary`` (one generated sentence) and ``wall_time_s``. The findings
(one table of every check, the pass-cost figure, the notebook wall-time table and
generated sentences) are rebuilt from all stored sections on every update.
"""

from __future__ import annotations

import json
import math
import time

from ran.util.results import Outputs, figure, save_results, table, text
from ran.util.stats import bootstrap_median_ci  # noqa: F401  (used by the benchmarks)

NAME = "bench"
SECTIONS = ("overhead", "pass_cost", "sweep", "lowercache", "notebooks", "training", "agent")
OPS = ("<=", ">=")
SEED = 0


def check(measure: str, value: float | None, target: float | None, op: str = "<=") -> dict:
    """One row of the benchmark table: ``met`` is computed here, never passed in.

    ``target=None`` records a measure without a target (``met`` is None).
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}.")
    if value is None or target is None or not math.isfinite(value):
        met = None if target is None else False
    else:
        met = bool(value <= target) if op == "<=" else bool(value >= target)
    return {"measure": measure, "value": value, "target": target, "op": op, "met": met}


def verdict(met: bool | None) -> str:
    """``"met"``, ``"NOT met"`` or ``"no target"``."""
    return "no target" if met is None else ("met" if met else "NOT met")


def section_met(checks: list[dict]) -> bool:
    """Whether every check that has a target is met."""
    return all(c["met"] for c in checks if c["target"] is not None)


def load_sections(outputs: Outputs) -> dict:
    """The sections stored in ``bench.json`` (empty when there is no file yet)."""
    path = outputs.results / f"{NAME}.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return {k: v for k, v in doc.get("results", {}).items() if k in SECTIONS}


def update(outputs: Outputs, new: dict) -> dict:
    """Store the sections in ``new`` (name -> section) over the stored ones; save; return all."""
    unknown = sorted(set(new) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown bench section(s) {unknown}; choose from {', '.join(SECTIONS)}.")
    for name, sec in new.items():
        missing = [k for k in ("checks", "met", "summary", "wall_time_s") if k not in sec]
        if missing:
            raise ValueError(f"bench section {name!r} lacks {missing}.")
    sections = load_sections(outputs) | new
    ordered = {k: sections[k] for k in SECTIONS if k in sections}
    models = sorted({s["model"] for s in ordered.values() if s.get("model")})
    wall = sum(s["wall_time_s"] for s in ordered.values())
    save_results(
        NAME,
        ordered,
        outputs,
        seed=SEED,
        model_name=", ".join(models) or None,
        wall_time_s=max(wall, 1e-3),
        findings=findings(ordered, outputs),
        extra_meta={"updated": {k: time.strftime("%Y-%m-%dT%H:%M:%S%z") for k in new}},
    )
    return ordered


def _timed_by(source: str) -> str:
    return "papermill" if source.startswith("pipeline") else source.split(" (")[0]


def _gflops(bounds) -> str:
    return "" if not bounds else f"{bounds[0]:.0f}-{bounds[1]:.0f}"


def _target_text(c: dict) -> str:
    return "none" if c["target"] is None else f"{c['op']} {c['target']:g}"


def findings(sections: dict, outputs: Outputs) -> list[dict]:
    """The FINDINGS blocks: the checks table, a headline, the figure and per-section text."""
    rows = [
        [f"{name}: {c['measure']}", c["value"], _target_text(c), verdict(c["met"])]
        for name, sec in sections.items()
        for c in sec["checks"]
    ]
    heads = []
    for name, sec in sections.items():
        c = next((c for c in sec["checks"] if c["target"] is not None), None)
        if c is not None and c["value"] is not None:
            heads.append(f"{name} {c['value']:.3g} ({_target_text(c)}: {verdict(c['met'])})")
    blocks = [
        {**text(f"`make bench` against its targets: {'; '.join(heads)}."), "headline": True},
        table(
            "Benchmarks: each measure, its value, its target and whether the value meets it "
            "(one `make bench` run on the shared 2-core CPU, 1 torch thread)",
            ["measure", "value", "target", "met"],
            rows,
            fmt=".4g",
        ),
    ]
    for name, sec in sections.items():
        blocks.append(text(f"**{name}.** {sec['summary'].rstrip('.')}."))
        if name == "pass_cost" and sec.get("figure"):
            blocks.append(figure(sec["figure"], sec["caption"]))
        if name == "notebooks" and sec.get("rows"):
            blocks.append(
                table(
                    "Wall time of each notebook (by number) in the default profile (minutes): papermill's "
                    "(pipeline.json) or, when absent, the notebook's own (results meta); "
                    "training: minutes of the runs trained while it ran (part of its minutes); "
                    "reused runs: training runs loaded from the cache; cold estimate: minutes "
                    "plus their recorded training minutes; GFLOPS: the machine's fp32 matmul speed "
                    "measured before and after the notebook (lowest, highest; empty: not recorded)",
                    [
                        "notebook",
                        "minutes",
                        "training",
                        "reused runs",
                        "their minutes",
                        "cold estimate",
                        "timed by",
                        "GFLOPS",
                    ],
                    [
                        [
                            r["notebook"].split("_")[0],  # the number: the PDF table is narrow
                            r["minutes"],
                            r.get("training_minutes"),
                            r.get("reused_runs"),
                            r.get("reused_minutes"),
                            r.get("cold_minutes"),
                            _timed_by(r["source"]),
                            _gflops(r.get("gflops")),
                        ]
                        for r in sec["rows"]
                    ]
                    + [
                        [
                            "total",
                            sec["total_minutes"],
                            sec.get("training_minutes"),
                            "",
                            "",
                            sec.get("cold_minutes"),
                            "",
                            _gflops(sec.get("gflops")),
                        ]
                    ],
                    fmt=".1f",
                )
            )
    return blocks
