"""The results diff: timing and provenance skipped, every other difference sorted by kind."""

import json

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
