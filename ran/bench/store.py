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

from ran.util.results import Outputs, figure, save_results, table, target, text
from ran.util.stats import bootstrap_median_ci  # noqa: F401  (used by the benchmarks)
from ran.util.wording import ratio_text

NAME = "bench"
SECTIONS = ("overhead", "pass_cost", "sweep", "lowercache", "notebooks", "training", "eval_jobs",
            "mixed_writes", "agent")  # fmt: skip
OPS = ("<=", ">=")
SEED = 0


def check(
    measure: str,
    value: float | None,
    target: float | None,
    op: str = "<=",
    ci: list | tuple | None = None,
    ratio: bool = False,
) -> dict:
    """One row of the benchmark table: ``met`` is computed here, never passed in.

    ``target=None`` records a measure without a target (``met`` is None). ``ci`` is the
    value's 95% CI when measured; ``ratio`` marks a time ratio (a CI that contains 1 is
    "within noise", :mod:`ran.util.wording`).
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}.")
    if value is None or target is None or not math.isfinite(value):
        met = None if target is None else False
    else:
        met = bool(value <= target) if op == "<=" else bool(value >= target)
    return {"measure": measure, "value": value, "target": target, "op": op, "met": met,
            "ci": None if ci is None else [float(v) for v in ci], "ratio": ratio}  # fmt: skip


def measured(describe, measure, **settings) -> dict:
    """A benchmark section: ``describe(measure(**settings))`` with the wall time of both as
    ``wall_time_s``."""
    t0 = time.perf_counter()
    res = describe(measure(**settings))
    res["wall_time_s"] = time.perf_counter() - t0
    return res


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
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return save_sections(outputs, sections, {k: stamp for k in new})


def save_sections(outputs: Outputs, sections: dict, updated: dict) -> dict:
    """Save ``sections`` (in :data:`SECTIONS` order) with their findings; ``updated``
    (section -> when it was measured) goes to the file's meta. Returns the sections."""
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
        extra_meta={"updated": updated},
    )
    return ordered


def _timed_by(source: str) -> str:
    return "papermill" if source.startswith("pipeline") else source.split(" (")[0]


def _gflops(bounds) -> str:
    return "" if not bounds else f"{bounds[0]:.0f}-{bounds[1]:.0f}"


def _target_text(c: dict) -> str:
    return "none" if c["target"] is None else f"{c['op']} {c['target']:g}"


def _value_text(c: dict) -> str:
    """A check's value for a sentence: a time ratio with its CI and "within noise of 1"
    when the CI contains 1 (:func:`ran.util.wording.ratio_text`)."""
    if c.get("ratio") and c.get("ci"):
        return ratio_text(c["value"], c["ci"])
    return f"{c['value']:.3g}"


def target_blocks(sections: dict) -> list[dict]:
    """One target block per check with a target (met / NOT met, within noise for a ratio
    whose CI contains 1), for FINDINGS' Targets table."""
    return [
        target(
            f"Bench {name}: {c['measure']}",
            c["value"],
            _target_text(c),
            c["met"],
            ci=c.get("ci"),
            ratio=bool(c.get("ratio")),
        )  # fmt: skip
        for name, sec in sections.items()
        for c in sec["checks"]
        if c["target"] is not None
    ]


def findings(sections: dict, outputs: Outputs) -> list[dict]:
    """The FINDINGS blocks: a headline, the measures table, the targets, the figure and
    per-section text."""
    rows = [
        [f"{name}: {c['measure']}", c["value"], c.get("ci") or ""]
        for name, sec in sections.items()
        for c in sec["checks"]
    ]
    heads = []
    for name, sec in sections.items():
        c = next((c for c in sec["checks"] if c["target"] is not None), None)
        if c is not None and c["value"] is not None:
            heads.append(f"{name}, {c['measure']}: {_value_text(c)}")
    blocks = [
        {**text(f"`make bench`: {'; '.join(heads)}."), "headline": True},
        table(
            "Benchmarks: each measure and its value, with its 95% CI where measured (one `make "
            "bench` run on the shared 2-core CPU, 1 torch thread); the targets are in the Targets "
            "table below",
            ["measure", "value", "95% CI"],
            rows,
            fmt=".4g",
        ),
        *target_blocks(sections),
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
