"""The evaluation cache: hits only on the same name, key, code (and parameters)."""

from __future__ import annotations

import pytest
import torch

from ran.util import memo as memo_mod
from ran.util.memo import memo, tensor_digest
from ran.util.results import Outputs


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, scale=1):
        self.calls += 1
        return {"value": x * scale, "t": torch.arange(3) * x}


def test_memo_hits_on_the_same_key_and_recomputes_on_another(tmp_path):
    out, f = Outputs(root=tmp_path), Counter()
    a = memo(out, "thing", {"x": 2}, f, 2, scale=3)
    b = memo(out, "thing", {"x": 2}, f, 2, scale=3)
    assert f.calls == 1 and a["value"] == b["value"] == 6 and torch.equal(a["t"], b["t"])
    memo(out, "thing", {"x": 5}, f, 5)
    memo(out, "other", {"x": 2}, f, 2)
    assert f.calls == 3
    assert len(list((tmp_path / "build/cache/memo").glob("*.pt"))) == 3


def test_memo_key_includes_the_source_digest(tmp_path, monkeypatch):
    out, f = Outputs(root=tmp_path), Counter()
    memo(out, "thing", {"x": 1}, f, 1)
    monkeypatch.setattr(memo_mod, "source_digest", lambda: "edited-code")
    memo(out, "thing", {"x": 1}, f, 1)
    assert f.calls == 2


def test_memo_can_be_switched_off_and_rejects_bad_names(tmp_path, monkeypatch):
    out, f = Outputs(root=tmp_path), Counter()
    monkeypatch.setenv("RAN_MEMO", "0")
    memo(out, "thing", {"x": 1}, f, 1)
    memo(out, "thing", {"x": 1}, f, 1)
    assert f.calls == 2 and not (tmp_path / "build/cache/memo").exists()
    monkeypatch.delenv("RAN_MEMO")
    memo(None, "thing", {"x": 1}, f, 1)  # no outputs: nowhere to cache, computes each time
    memo(None, "thing", {"x": 1}, f, 1)
    assert f.calls == 4
    with pytest.raises(ValueError, match="memo name"):
        memo(out, "../escape", {}, f, 1)


def test_tensor_digest_sees_values_shapes_and_dtypes():
    a = torch.zeros(4)
    assert tensor_digest([a]) == tensor_digest([a.clone()])
    assert tensor_digest([a]) != tensor_digest([a + 1e-7])
    assert tensor_digest([a]) != tensor_digest([a.view(2, 2)])
    assert tensor_digest([a]) != tensor_digest([a.double()])


def test_train_result_evaluate_is_cached_until_its_parameters_change(tmp_path, monkeypatch):
    from conftest import TINY_RUN

    from ran.training import train as T

    res = T.train(T.TrainConfig(**TINY_RUN), Outputs(root=tmp_path), progress=False)
    calls = []
    real = T.evaluate
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = res.evaluate("test", ("reservoir",))
    again = res.evaluate("test", ("reservoir",))
    assert len(calls) == 1 and first == again
    res.handle.set_gate(0.0)  # a changed readout is a different computation
    res.evaluate("test", ("reservoir",))
    assert len(calls) == 2


def test_the_digest_covers_computing_modules_only():
    rel = {p.relative_to(memo_mod.PACKAGE_DIR).as_posix() for p in memo_mod.computing_files()}
    assert {"training/train.py", "tasks/episodes.py", "mechanisms/registry.py"} <= rel
    assert not any(r.startswith(("report/", "bench/", "cli/", "agent/")) for r in rel)
    assert "pipeline.py" not in rel and "__main__.py" not in rel


def test_moving_a_plotting_file_changes_no_digest_and_moving_code_does(tmp_path, monkeypatch):
    """The digest is the content of the computing folders: a figure module moved inside
    ran/report leaves it alone; a computing module moved between subpackages changes it."""
    import shutil

    root = tmp_path / "ran"
    shutil.copytree(memo_mod.PACKAGE_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))

    def digest():
        monkeypatch.setattr(memo_mod, "PACKAGE_DIR", root)
        memo_mod.source_digest.cache_clear()
        try:
            return memo_mod.source_digest()
        finally:
            memo_mod.source_digest.cache_clear()

    before = digest()
    (root / "report" / "figures" / "compare.py").rename(root / "report" / "compare_plots.py")
    assert digest() == before
    (root / "study" / "claims.py").rename(root / "evaluation" / "claims.py")
    assert digest() != before


def test_tensor_digest_takes_scalars_and_tells_values_apart():
    """0-dim parameters (the decoded readout's log-gain) digest like any other tensor."""
    a = tensor_digest([torch.tensor(1.0), torch.ones(2)])
    assert a == tensor_digest([torch.tensor(1.0), torch.ones(2)])
    assert a != tensor_digest([torch.tensor(2.0), torch.ones(2)])
    assert a != tensor_digest([torch.tensor([1.0]), torch.ones(2)])  # the shape counts
