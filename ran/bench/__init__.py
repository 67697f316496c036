"""Benchmarks, measured within one run and saved to one file, ``<results>/bench.json``.

``python -m ran bench all`` (= ``make bench``) measures every section in order;
``python -m ran bench <which>`` re-measures one section and keeps the others;
``python -m ran bench refresh`` rebuilds the checks, sentences and findings of the stored
sections from their measurements (:func:`ran.bench.store.refresh`), measuring nothing.
"""

from __future__ import annotations

import importlib
import json

from ran.util.results import Outputs

# CLI name -> (section in bench.json, module with ``run(outputs) -> section``)
BENCHES = {
    "overhead": ("overhead", "ran.bench.overhead"),
    "passcost": ("pass_cost", "ran.bench.passcost"),
    "sweep": ("sweep", "ran.bench.sweep"),
    "lowercache": ("lowercache", "ran.bench.lowercache"),
    "notebooks": ("notebooks", "ran.bench.notebooks"),
    "training": ("training", "ran.bench.training"),
    "evaljobs": ("eval_jobs", "ran.bench.evaljobs"),
    "mixedwrites": ("mixed_writes", "ran.bench.mixedwrites"),
    "agent": ("agent", "ran.bench.agent"),
}


def run_benches(which: str, outputs: Outputs, progress=print) -> dict:
    """Measure ``which`` (a key of :data:`BENCHES` or ``"all"``); return the stored sections.

    Each section is saved as soon as it is measured, so an interrupted ``all`` keeps
    the sections it finished.
    """
    from ran.bench.store import update

    if which == "refresh":  # the stored measurements' checks, sentences and findings, rebuilt
        return refresh(outputs)
    if which != "all" and which not in BENCHES:
        raise ValueError(
            f"unknown benchmark {which!r}; choose one of {', '.join(BENCHES)}, all, refresh."
        )
    names = list(BENCHES) if which == "all" else [which]
    sections = {}
    for name in names:
        section, module = BENCHES[name]
        result = importlib.import_module(module).run(outputs)
        sections = update(outputs, {section: result})
        if progress:
            progress(f"bench {name} ({result['wall_time_s']:.0f} s): {result['summary']}")
    return sections


def refresh(outputs: Outputs) -> dict:
    """Rebuild every stored section's checks and summary from its stored measurements (each
    module's ``describe``; the ``notebooks`` section, which only reads results files, is
    read again), then the findings, measuring nothing; return the sections."""
    from ran.bench.store import NAME, load_sections, save_sections

    stored = load_sections(outputs)
    if not stored:
        raise FileNotFoundError(f"no {NAME}.json under {outputs.results}; run `make bench` first")
    modules = dict(BENCHES.values())
    new = {}
    for name, sec in stored.items():
        mod = importlib.import_module(modules[name])
        wall = sec["wall_time_s"]
        new[name] = mod.run(outputs) if name == "notebooks" else mod.describe(sec)
        new[name]["wall_time_s"] = wall  # the measurement's, not the refresh's
    meta = json.loads((outputs.results / f"{NAME}.json").read_text())["meta"]
    return save_sections(outputs, new, meta.get("updated", {}))
