"""The library's fact-memory recipe is notebook 06's measured best configuration."""

import json

import pytest

import ran
from ran.study import retention as RT
from ran.training.config import TrainConfig
from ran.training.recipes import FACT_MEMORY_SIDE, fact_memory
from ran.util.results import REPO_ROOT

RESULTS = REPO_ROOT / "data" / "results" / "06_retention.json"


def test_recipe_is_notebook_06_best():
    """The default-profile best configuration saved by notebook 06 hashes like the recipe
    (fails when either the recipe or notebook 06's best changes without the other)."""
    saved = json.loads(RESULTS.read_text())["results"]["configs"]
    label, best = next(iter(saved.items()))  # the best configuration comes first
    assert label.split(" ")[0] == "decoded+asked"
    cfg = fact_memory()
    assert cfg.config_hash() == best["hash"]
    saved_cfg = TrainConfig.from_dict({k: v for k, v in best.items() if k != "hash"})
    assert saved_cfg.to_dict() == cfg.to_dict()


def test_recipe_shares_notebook_06_write_side():
    assert RT.WRITE_SIDES["decoded+asked"] is FACT_MEMORY_SIDE
    assert ran.fact_memory is fact_memory


def test_recipe_overrides_and_errors():
    cfg = fact_memory("tiny-llama", k=4, layer=1, seed=3, steps=2,
                      injection={"reservoir": {"units": 64}})  # fmt: skip
    assert (cfg.model_name, cfg.probe_params["k"], cfg.injection.layer) == ("tiny-llama", 4, 1)
    assert (cfg.seed, cfg.steps, cfg.injection.reservoir.units) == (3, 2, 64)
    assert cfg.injection.reservoir.lr == 0.01  # the rest of the regime stays
    assert cfg.read_gate["tail"] == 3 and cfg.injection.readout == "decoded"
    assert cfg.config_hash() != fact_memory().config_hash()
    with pytest.raises(ValueError, match="k must be"):
        fact_memory(k=1)
    small = fact_memory("tiny-llama", k=4, layer=None, probe_params={"n_train": 96})
    assert small.probe_params["n_train"] == 96 and small.probe_params["distractors"] == (0, 1, 2, 4)
    assert small.injection.layer is None
    with pytest.raises(ValueError, match="k argument"):
        fact_memory(probe_params={"k": 8})
    with pytest.raises(TypeError, match="not_a_field"):
        fact_memory(not_a_field=1)
