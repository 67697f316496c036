"""FINDINGS.md's generated sections and its typeset PDF.

FINDINGS.md is hand-written prose around marker pairs::

    <!-- BEGIN GENERATED: 01_esn_dynamics -->
    ... (replaced on every ``python -m ran report``) ...
    <!-- END GENERATED: 01_esn_dynamics -->

Each marker names a results file (``<results>/01_esn_dynamics.json``); the block
between the markers is rendered from that file's ``findings`` (tables, figures
and sentences whose numbers the notebook computed). Nothing between markers is
typed by hand. Three blocks collect from every results file instead (:data:`COLLECTED`):
``abstract`` (:mod:`ran.report.abstract`), ``targets`` (every target block in one table,
:mod:`ran.report.targets`) and ``appendix`` (the training runs by config hash,
:mod:`ran.report.appendix`); a section's target blocks are not rendered in it. The PDF goes pandoc (markdown -> typst source, from the
``pypandoc_binary`` wheel) -> typst (the ``typst`` wheel) -> PDF, offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ran.report.abstract import abstract
from ran.report.appendix import runs_table
from ran.report.diagram import FILENAME as ARCHITECTURE_PNG
from ran.report.diagram import save_architecture
from ran.report.render import (  # noqa: F401  (format_value, MAX_COLUMNS, column_groups: named here)
    MAX_COLUMNS,
    column_groups,
    format_value,
    render_figure,
    render_table,
    render_text,
    tidy_numbers,
)
from ran.report.targets import render_targets
from ran.util.results import REPO_ROOT, Outputs, check_profile

FINDINGS = REPO_ROOT / "FINDINGS.md"
MARKER_RE = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def render_findings(doc: dict, md_dir: Path = REPO_ROOT, root: Path = REPO_ROOT) -> str:
    """Markdown for one results document's findings, in order."""
    parts = []
    for block in doc.get("findings", []):
        kind = block.get("kind")
        if kind == "table":
            parts.append(render_table(block))
        elif kind == "figure":
            parts.append(render_figure(block, md_dir, root))
        elif kind == "text":
            parts.append(render_text(block))
        elif kind == "target":
            continue  # rendered once, in the Targets table (ran.report.targets)
        else:
            raise ValueError(
                f"unknown findings block kind {kind!r} in {doc.get('meta', {}).get('name')}"
            )
    meta = doc.get("meta", {})
    prov = [f"profile `{meta.get('profile')}`"]
    if meta.get("model_name"):
        prov.append(f"model `{meta['model_name']}`")
    if meta.get("seed") is not None:
        prov.append(f"seed {meta['seed']}")
    if meta.get("wall_time_s") is not None:
        prov.append(f"wall time {meta['wall_time_s']:.0f} s")
    parts.append(f"*Source: `data/results/{meta.get('name')}.json` ({', '.join(prov)}).*\n")
    return "\n".join(parts)


# README's generated summary: one headline per results file, in this order.
SUMMARY_ORDER = (  # the realistic held-out probe first (issue 18), then the notebooks in order
    "06_retention",
    "01_esn_dynamics",
    "02_surgery",
    "03_h1_nondestruction",
    "04_qwen_scaling",
    "05_seed_selection",
    "07_agent",
    "bench",
)
HEADLINE_FIGURES = (
    "figures/06_retention.png",
    "figures/03_capacity.png",
    "figures/01_metrics_vs_sr.png",
)


def headline(doc: dict) -> str | None:
    """The sentence a results file leads with: a text block flagged ``headline``, else
    its first text block."""
    texts = [b for b in doc.get("findings", []) if b.get("kind") == "text"]
    flagged = [b for b in texts if b.get("headline")]
    chosen = (flagged or texts or [None])[0]
    return chosen["text"].strip() if chosen else None


def readme_summary(outputs: Outputs, root: Path) -> str:
    """The README's summary table (from results) and its headline figure."""
    rows = []
    for name in SUMMARY_ORDER:
        path = outputs.results / f"{name}.json"
        if path.exists():
            line = headline(json.loads(path.read_text()))
            if line:
                rows.append(f"| `{name}` | {tidy_numbers(line).replace('|', '/')} |")
    parts = ["| result | headline (generated from `data/results`) |", "|---|---|", *rows, ""]
    fig = next((f for f in HEADLINE_FIGURES if (root / f).exists()), None)
    if fig:
        parts.append(f"![headline figure]({fig})\n")
    return "\n".join(parts)


def fill_readme(outputs: Outputs, root: Path) -> bool:
    """Fill README.md's ``summary`` block (default profile only)."""
    readme = root / "README.md"
    if not readme.exists():
        return False
    text = readme.read_text(encoding="utf-8")
    pat = re.compile(
        r"(<!-- BEGIN GENERATED: summary -->\n).*?(<!-- END GENERATED: summary -->)", re.S
    )
    if not pat.search(text):
        return False
    new = pat.sub(
        lambda m: m.group(1) + "\n" + readme_summary(outputs, root) + "\n" + m.group(2), text
    )
    readme.write_text(new, encoding="utf-8")
    return True


# Results files that `make all` does not write, and the options of `ran run` that do.
RUN_OPTIONS = {
    "04_extended": " --only 04 -p extended true",
    "06_extended": " --only 06 -p extended true",
}


# Generated blocks that are not one results file's findings: name -> body from all results.
COLLECTED = {"abstract": abstract, "targets": render_targets, "appendix": runs_table}


def fill_markers(text: str, outputs: Outputs, md_dir: Path, root: Path) -> tuple[str, list[str]]:
    """Replace every generated block; returns the new text and the names filled."""
    filled = []

    def repl(m: re.Match) -> str:
        name = m.group("name")
        path = outputs.results / f"{name}.json"
        if name in COLLECTED:
            body = COLLECTED[name](outputs)
            filled.append(name)
        elif path.exists():
            body = render_findings(json.loads(path.read_text()), md_dir, root)
            filled.append(name)
        else:
            run = f"python -m ran run --profile {outputs.profile}{RUN_OPTIONS.get(name, '')}"
            body = f"*No results yet for `{name}`: run `{run}` and then `python -m ran report`.*\n"
        return m.group(1) + "\n" + body + "\n" + m.group(4)

    return MARKER_RE.sub(repl, text), filled


# A long table (the Targets table, the runs appendix) continues on the next page instead of
# running off this one: pandoc wraps every table in a figure, which typst keeps on one page.
BREAKABLE_TABLES = "#show figure.where(kind: table): set block(breakable: true)\n"


def build_pdf(md_path: Path, pdf_path: Path, root: Path = REPO_ROOT) -> Path:
    """Typeset a markdown file: pandoc -> typst source -> PDF (both from wheels, offline)."""
    import pypandoc
    import typst

    typ_path = pdf_path.with_suffix(".typ")
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    pypandoc.convert_file(
        str(md_path),
        "typst",
        outputfile=str(typ_path),
        extra_args=["--standalone", f"--resource-path={md_path.parent}"],
    )
    # typst resolves image paths against the .typ file's folder: rewrite them to root-absolute.
    src = typ_path.read_text(encoding="utf-8")
    md_dir = md_path.parent.resolve()

    def absolutise(m: re.Match) -> str:
        target = (md_dir / m.group(1)).resolve()
        return f'image("/{target.relative_to(root.resolve())}"'

    src = re.sub(r'image\("([^"/][^"]*)"', absolutise, src)
    typ_path.write_text(BREAKABLE_TABLES + src, encoding="utf-8")
    typst.compile(str(typ_path), output=str(pdf_path), root=str(root))
    return pdf_path


def report(profile: str = "default", pdf: bool = True, root: Path = REPO_ROOT) -> dict:
    """Fill FINDINGS.md from the results of ``profile`` and build the PDF.

    The default profile rewrites the committed FINDINGS.md in place; other
    profiles write a filled copy to ``build/<profile>/FINDINGS.md`` and never
    touch the committed one. The architecture schematic is redrawn into the
    profile's ``figures/`` first (see :mod:`ran.report.diagram`).
    """
    outputs = Outputs(check_profile(profile), root=root)
    template = root / "FINDINGS.md"
    if not template.exists():
        raise FileNotFoundError(
            f"{template} is missing; it holds the prose and the markers to fill"
        )
    target = template if profile == "default" else outputs.build / "FINDINGS.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    # the hand-placed architecture figure (no numbers): figures/ next to the filled FINDINGS
    save_architecture(outputs.figure_path(ARCHITECTURE_PNG))
    text, filled = fill_markers(template.read_text(encoding="utf-8"), outputs, target.parent, root)
    target.write_text(text, encoding="utf-8")
    out = {"findings": str(target), "filled": filled}
    if profile == "default":
        out["readme"] = fill_readme(outputs, root)
    if pdf:
        out["pdf"] = str(build_pdf(target, outputs.build / "FINDINGS.pdf", root))
    return out


def check_findings(profile: str = "default", root: Path = REPO_ROOT) -> list[str]:
    """Names of the generated blocks in FINDINGS.md that differ from their results files.

    Every block is re-rendered from ``data/results`` and compared with the text
    between its markers; an empty list means every number in the generated
    sections is the one stored in the results.
    """
    outputs = Outputs(check_profile(profile), root=root)
    md = root / "FINDINGS.md" if profile == "default" else outputs.build / "FINDINGS.md"
    current = md.read_text(encoding="utf-8")
    expected, _ = fill_markers(current, outputs, md.parent, root)
    have = {m.group("name"): m.group("body") for m in MARKER_RE.finditer(current)}
    want = {m.group("name"): m.group("body") for m in MARKER_RE.finditer(expected)}
    return sorted(name for name in want if have.get(name) != want[name])
