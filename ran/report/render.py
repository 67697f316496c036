"""Markdown for the findings blocks of :mod:`ran.util.results`: table cells, tables, figures.

Every number the report prints goes through :func:`format_value` (table cells) or
:func:`tidy_numbers` (sentences, captions and text cells), so no rendered number has more
than :data:`MAX_SIG` significant digits whatever a results file stores (a float printed
with ``repr`` in a sentence, a table saved with a wide format).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ran.util.wording import round_sig

MAX_SIG = 6  # significant digits of any rendered number
MAX_COLUMNS = 8  # a wider table is typeset as several, each repeating the first column
# a decimal literal standing alone (not part of a word, a version "3.11.7" or an exponent)
DECIMAL_RE = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")


def significant_digits(literal: str) -> int:
    """Significant digits of a plain decimal or integer literal (``"0.0120"`` -> 3)."""
    digits = literal.replace(".", "").lstrip("+-").lstrip("0")
    return len(digits)


def tidy_numbers(text: str, max_sig: int = MAX_SIG) -> str:
    """``text`` with every decimal literal of more than ``max_sig`` significant digits
    rounded to ``max_sig`` (``"4.058846033465747"`` -> ``"4.05885"``)."""

    def repl(m: re.Match) -> str:
        lit = m.group(1)
        if significant_digits(lit) <= max_sig:
            return lit
        return round_sig(float(lit), max_sig)

    return DECIMAL_RE.sub(repl, text)


def format_value(value, fmt: str = ".3g") -> str:
    """Format one table cell: numbers with ``fmt`` (at most :data:`MAX_SIG` significant
    digits; integers of a million or more in millions, ``"1.58M"``), pairs as ``[lo, hi]``,
    None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value / 1e6:.3g}M" if abs(value) >= 10**MAX_SIG else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return tidy_numbers(format(value, fmt))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v, fmt) for v in value) + "]"
    return tidy_numbers(str(value)).replace("|", "\\|")


def column_groups(n_cols: int, max_cols: int = MAX_COLUMNS) -> list[list[int]]:
    """Column indices of each part of a table of ``n_cols`` columns: one part if it fits,
    else the other columns shared out evenly, each part led by column 0."""
    if n_cols <= max_cols:
        return [list(range(n_cols))]
    rest = list(range(1, n_cols))
    parts = math.ceil(len(rest) / (max_cols - 1))
    size = math.ceil(len(rest) / parts)
    return [[0, *rest[i : i + size]] for i in range(0, len(rest), size)]


def column_width(header: str, cells: list[str], lo: int = 6, hi: int = 40) -> int:
    """Dashes of a column's rule: its widest cell (or header word) within [lo, hi], plus the
    cell padding. Pandoc
    sizes the columns of a wide table by these counts, so a long claim gets a wide column
    and a verdict a narrow one."""
    words = max((len(w) for w in header.split()), default=0)
    return max(lo, min(hi, max([words, *(_print_width(c) for c in cells)]))) + 2  # + padding


def _print_width(cell: str) -> int:
    """A cell's width in proportional characters: monospace code spans (hashes, file names)
    count 1.6 each, as they neither shrink nor wrap."""
    code = sum(len(m) for m in re.findall(r"`([^`]*)`", cell))
    return round(len(cell) + 0.6 * code)


def render_table(block: dict) -> str:
    fmt = block.get("fmt", ".3g")
    cols = block["columns"]
    for row in block["rows"]:
        if len(row) != len(cols):
            raise ValueError(
                f"table {block['caption']!r} has a row of {len(row)} cells for {len(cols)} columns"
            )
    cells = [[format_value(row[i], fmt) for i in range(len(cols))] for row in block["rows"]]
    out = []
    for part, idx in enumerate(column_groups(len(cols))):
        header = [str(cols[i]).replace("|", "\\|") for i in idx]
        rule = "|".join(
            "-" * column_width(header[j], [c[i] for c in cells]) for j, i in enumerate(idx)
        )
        lines = ["| " + " | ".join(header) + " |", f"|{rule}|"]
        for row in cells:
            lines.append("| " + " | ".join(row[i] for i in idx) + " |")
        caption = tidy_numbers(block["caption"])
        if part:
            caption = f"(continued) {caption.split(':')[0]}"
        out.append("\n".join(lines) + f"\n\nTable: {caption}\n")
    return "\n".join(out)


def render_figure(block: dict, md_dir: Path, root: Path) -> str:
    path = Path(block["path"])
    target = path if path.is_absolute() else root / path
    rel = os.path.relpath(target, md_dir)
    return f"![{tidy_numbers(block['caption'])}]({rel}){{width=90%}}\n"


def render_text(block: dict) -> str:
    return tidy_numbers(block["text"].strip()) + "\n"
