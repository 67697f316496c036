"""Results files: provenance recorded, strict JSON, profiles kept apart."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ran.util.results import Outputs, load_results, save_results, strip_volatile, to_jsonable


def test_profiles_write_to_separate_roots(tmp_path):
    assert Outputs("default", root=tmp_path).results == tmp_path / "data" / "results"
    assert Outputs("smoke", root=tmp_path).results == tmp_path / "build/smoke/data/results"
    assert Outputs("smoke", root=tmp_path).figures == tmp_path / "build/smoke/figures"
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        Outputs("fast")


def test_save_records_provenance_and_is_strict_json(tmp_path):
    out = Outputs("smoke", root=tmp_path)
    payload = {"acc": np.float32(0.5), "curve": torch.tensor([1.0, math.nan]), "n": np.int64(4)}
    path = save_results("x", payload, out, seed=7, model_name="tiny-llama", wall_time_s=1.5)
    doc = json.loads(path.read_text())  # strict JSON: NaN became null
    assert doc["results"] == {"acc": 0.5, "curve": [1.0, None], "n": 4}
    meta = doc["meta"]
    assert meta["seed"] == 7 and meta["model_name"] == "tiny-llama"
    assert meta["versions"]["torch"].startswith("2.13")
    assert load_results("x", out) == doc
    assert "wall_time_s" not in strip_volatile(doc)["meta"]
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        load_results("missing", out)


def test_to_jsonable_rejects_nothing_silently():
    assert to_jsonable({"a": (1, 2.0)}) == {"a": [1, 2.0]}
    assert to_jsonable(float("inf")) is None


def test_parse_list_is_the_one_list_helper():
    from ran.util.results import parse_list

    assert parse_list("0, 2,8") == [0, 2, 8]
    assert parse_list("0.9,1.1", float) == [0.9, 1.1]
    assert parse_list("a,b", str) == ["a", "b"]
    assert parse_list("", str, allow_empty=True) == [] and parse_list(" ", allow_empty=True) == []
    with pytest.raises(ValueError, match="comma-separated"):
        parse_list("")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_list("a,,b", str, allow_empty=True)
    with pytest.raises(ValueError, match="as a list of int"):
        parse_list("1,x")
