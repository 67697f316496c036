"""FINDINGS' Targets table: every target of every results file, in one table.

The notebooks and ``make bench`` save each target a result is held to as a
:func:`ran.util.results.target` block (claim, value, target expression, met, note); the
sentences of their sections state the measured values only. :func:`targets_table` collects
those blocks from every results file, in file order (the notebooks by number, then the
benchmarks), into one table: claim, value, target, met / NOT met, note ("within noise" for a
time ratio whose CI contains 1), source.
"""

from __future__ import annotations

import json

from ran.report.notebooks import RECORDS
from ran.report.render import format_value, render_table
from ran.util.results import Outputs

TARGET_COLUMNS = ["claim", "value", "target", "met", "note", "source"]
SKIP = RECORDS  # results files that are not findings: the pipeline's timing records


def verdict(met: bool | None) -> str:
    """``"met"``, ``"NOT met"`` or ``"not measured"``."""
    return "not measured" if met is None else ("met" if met else "NOT met")


def value_text(block: dict) -> str:
    """The measured value of a target block, with its interval when it has one."""
    v, ci = block["value"], block.get("ci")
    if isinstance(v, str):
        return v
    out = format_value(v, ".4g")
    if ci:
        out += f" [{format_value(ci[0], '.4g')}, {format_value(ci[1], '.4g')}]"
    return out


def result_docs(outputs: Outputs) -> dict[str, dict]:
    """Every results document of ``outputs`` (name -> doc): notebooks by name, bench last."""
    paths = sorted(  # a variant (04_extended) after its notebook's own file (04_qwen_scaling)
        outputs.results.glob("*.json"),
        key=lambda p: (p.stem == "bench", p.stem.split("_")[0], "extended" in p.stem, p.stem),
    )
    return {p.stem: json.loads(p.read_text()) for p in paths if p.stem not in SKIP}


def target_rows(docs: dict[str, dict]) -> list[list]:
    """One row per target block of ``docs`` (name -> results document), in order."""
    rows = []
    for name, doc in docs.items():
        for b in doc.get("findings", []):
            if b.get("kind") == "target":
                rows.append(
                    [b["claim"], value_text(b), b["target"], verdict(b.get("met")),
                     b.get("note") or "", f"`{b.get('source') or name}`"]
                )  # fmt: skip
    return rows


def targets_table(docs: dict[str, dict]) -> str:
    """The Targets table of ``docs`` and a count of the targets not met, or a placeholder."""
    rows = target_rows(docs)
    if not rows:
        return (
            "*No targets recorded yet: no results file holds a target block (results saved "
            "before targets became blocks state them in their sentences; rerun the notebooks "
            "and `make bench`, then `python -m ran report`).*\n"
        )
    n_not = sum(r[3] == "NOT met" for r in rows)
    n_noise = sum(r[4] == "within noise" for r in rows)
    lead = (
        f"{len(rows)} targets, {len(rows) - n_not} met and {n_not} NOT met"
        + (
            f"; {n_noise} of the ratios are within noise of 1 (their CI contains 1)"
            if n_noise
            else ""
        )
        + ".\n\n"
    )
    table = {
        "caption": "Targets: every target a notebook or `make bench` holds a result to, the "
        "measured value (95% CI where measured), the target, whether the value meets it, and "
        "the results file it comes from; within noise: a time ratio whose CI contains 1",
        "columns": TARGET_COLUMNS,
        "rows": rows,
    }
    return lead + render_table(table)


def render_targets(outputs: Outputs) -> str:
    """The ``targets`` generated block of FINDINGS.md."""
    return targets_table(result_docs(outputs))
