"""Benchmarks, measured within one run and saved to one file, ``<results>/bench.json``.

``python -m ran bench all`` (= ``make bench``) measures every section in order;
``python -m ran bench <which>`` re-measures one section and keeps the others.
"""

from __future__ import annotations

import importlib

from ran.util.results import Outputs

# CLI name -> (section in bench.json, module with ``run(outputs) -> section``)
BENCHES = {
    "overhead": ("overhead", "ran.bench.overhead"),
    "passcost": ("pass_cost", "ran.bench.passcost"),
    "sweep": ("sweep", "ran.bench.sweep"),
    "lowercache": ("lowercache", "ran.bench.lowercache"),
    "notebooks": ("notebooks", "ran.bench.notebooks"),
    "training": ("training", "ran.bench.training"),
    "agent": ("agent", "ran.bench.agent"),
}


def run_benches(which: str, outputs: Outputs, progress=print) -> dict:
    """Measure ``which`` (a key of :data:`BENCHES` or ``"all"``); return the stored sections.

    Each section is saved as soon as it is measured, so an interrupted ``all`` keeps
    the sections it finished.
    """
    from ran.bench.store import update

    if which != "all" and which not in BENCHES:
        raise ValueError(f"unknown benchmark {which!r}; choose one of {', '.join(BENCHES)}, all.")
    names = list(BENCHES) if which == "all" else [which]
    sections = {}
    for name in names:
        section, module = BENCHES[name]
        result = importlib.import_module(module).run(outputs)
        sections = update(outputs, {section: result})
        if progress:
            progress(f"bench {name} ({result['wall_time_s']:.0f} s): {result['summary']}")
    return sections
