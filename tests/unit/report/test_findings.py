"""FINDINGS.md's generated sections hold exactly the numbers stored in data/results."""

from __future__ import annotations

import json
import shutil

from ran.report.findings import MARKER_RE, check_findings
from ran.util.results import REPO_ROOT


def _copy_repo_outputs(tmp_path):
    shutil.copy(REPO_ROOT / "FINDINGS.md", tmp_path / "FINDINGS.md")
    shutil.copytree(REPO_ROOT / "data" / "results", tmp_path / "data" / "results")
    return tmp_path


def test_committed_findings_match_results():
    stale = check_findings("default")
    assert not stale, f"FINDINGS.md is out of date for {stale}: run `python -m ran report`"


def test_editing_a_result_is_detected(tmp_path):
    root = _copy_repo_outputs(tmp_path)
    filled = [m.group("name") for m in MARKER_RE.finditer((root / "FINDINGS.md").read_text())]
    changed = None
    for name in filled:
        path = root / "data" / "results" / f"{name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        for block in doc["findings"]:
            if block["kind"] == "table" and block["rows"]:
                row = block["rows"][0]
                idx = next((i for i, v in enumerate(row) if isinstance(v, float)), None)
                if idx is not None:
                    row[idx] = row[idx] * 1.5 + 1.0
                    changed = name
                    break
        if changed:
            path.write_text(json.dumps(doc))
            break
    assert changed, "no generated table with a float to edit"
    assert check_findings("default", root=root) == [changed]


def test_wide_tables_are_typeset_in_parts_that_each_lead_with_the_first_column():
    from ran.report.findings import MAX_COLUMNS, column_groups, render_table

    assert column_groups(MAX_COLUMNS) == [list(range(MAX_COLUMNS))]
    groups = column_groups(11)
    assert [g[0] for g in groups] == [0, 0] and sorted(sum((g[1:] for g in groups), [])) == list(
        range(1, 11)
    )
    assert all(len(g) <= MAX_COLUMNS for g in column_groups(40))
    cols = ["name", *(f"c{i}" for i in range(10))]
    md = render_table({"caption": "Wide: ten", "columns": cols, "rows": [["a", *range(10)]]})
    assert md.count("Table: ") == 2 and "Table: (continued) Wide" in md
    assert md.count("| a |") == 2  # the first column in both parts
