"""The results diff: timing and provenance skipped, every other difference sorted by kind."""

import json

import pytest

from ran.report import resdiff as R


def _doc(acc=0.5, wall=10.0, sentence="recall 0.500", extra=None):
    doc = {
        "meta": {"git_commit": "abc", "created": "today", "wall_time_s": wall,
                 "versions": {"torch": "x"}},
        "results": {"acc": acc, "curve": [1.0, 2.0], "overhead": {"median_ratio": wall},
                    "train_min": wall},
        "findings": [{"text": sentence}],
    }  # fmt: skip
    if extra:
        doc["results"] |= extra
    return doc


def _write(folder, name, doc):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(doc))


def test_timing_and_provenance_alone_are_no_difference(tmp_path):
    _write(tmp_path / "a", "03_x.json", _doc(wall=10.0))
    _write(tmp_path / "b", "03_x.json", _doc(wall=99.0) | {"meta": {"git_commit": "def"}})
    _write(tmp_path / "a", "bench.json", {"x": 1})  # a timing file: never compared
    _write(tmp_path / "b", "bench.json", {"x": 2})
    rep = R.diff_dirs(tmp_path / "a", tmp_path / "b")
    assert list(rep) == ["03_x.json"]
    assert all(rep["03_x.json"][k] == 0 for k in R.KINDS)


def test_each_kind_of_difference_is_counted(tmp_path):
    _write(tmp_path / "a", "03_x.json", _doc(acc=0.5, sentence="recall 0.500"))
    b = _doc(acc=0.5000001, sentence="recall 0.600", extra={"new": 1})
    b["results"]["curve"] = [1.0, 3.0]
    _write(tmp_path / "b", "03_x.json", b)
    _write(tmp_path / "b", "04_y.json", _doc())
    rep = R.diff_dirs(tmp_path / "a", tmp_path / "b")
    r = rep["03_x.json"]
    assert (r["rounding"], r["numeric"], r["text"], r["structure"]) == (1, 1, 1, 1)
    assert r["first"]["numeric"] == ["/results/curve[1]"]
    assert rep["04_y.json"] == {"missing": "first"}
    table = R.render(rep)
    assert "| 03_x.json | 1 | 1 | 1 | 1 |" in table and "missing on the first side" in table


def test_type_changes_and_list_lengths_are_structure():
    assert R.diff_values({"a": [1, 2]}, {"a": [1]}) == [("structure", "/a[2!=1]")]
    assert R.diff_values({"a": 1}, {"a": "1"}) == [("structure", "/a")]
    assert R.diff_values(True, 1) == [("structure", "")]


def test_run_records_are_compared_and_timing_blocks_skipped(tmp_path):
    """Files under runs/ are compared by their path; a findings block marked as stating a
    time (ran.util.results.text(..., timing=True)) is no difference, an unmarked one is."""
    from ran.util.results import target, text

    for side, secs, loss in (("a", 10.0, 1.0), ("b", 12.0, 1.5)):
        doc = _doc() | {"findings": [text(f"took {secs} s", timing=True),
                                     target("speed-up", secs, ">= 1", True, ratio=True),
                                     text(f"loss {loss}")]}  # fmt: skip
        _write(tmp_path / side, "03_x.json", doc)
        _write(tmp_path / side / "runs", "abc.json", {"history": {"loss": [2.0, loss]}})
    rep = R.diff_dirs(tmp_path / "a", tmp_path / "b")
    assert sorted(rep) == ["03_x.json", "runs/abc.json"]
    assert rep["runs/abc.json"]["numeric"] == 1
    r = rep["03_x.json"]
    assert r["text"] == 1 and r["first"]["text"] == ["/findings[2]/text"]


def test_timing_cells_of_a_table_are_skipped_the_others_compared():
    from ran.util.results import table

    def doc(wall, acc, ovh_row):
        rows = [["a", acc, wall], ["overhead", ovh_row, 0.0]]
        return table("t", ["name", "acc", "wall (min)"], rows, timing_columns=["wall (min)"],
                     timing_rows=[1])  # fmt: skip

    assert R.diff_values(doc(1.0, 0.5, "+3%"), doc(2.0, 0.5, "-1%")) == []
    assert R.diff_values(doc(1.0, 0.5, "+3%"), doc(2.0, 0.6, "+3%")) == [("numeric", "/rows[0][1]")]
    unmarked = table(
        "t", ["name", "acc", "wall (min)"], [["a", 0.5, 1.0], ["overhead", "+3%", 0.0]]
    )
    assert R.diff_values(unmarked, doc(2.0, 0.5, "-1%")) == []  # one marked side is enough
    with pytest.raises(ValueError, match="not columns"):
        table("t", ["a"], [[1]], timing_columns=["b"])
