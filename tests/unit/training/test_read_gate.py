"""The read gate fitted before training (ran.training.read_gate): options, the hash rule,
features and labels, the fit opening on questions and not on text, frozen during training."""

from __future__ import annotations

import glob
import json

import pytest
import torch

from ran.injection.config import InjectionConfig
from ran.reservoir import ReservoirConfig
from ran.tasks import wordlists as WL
from ran.training import read_gate as RG
from ran.training import train as T
from ran.training.config import HASH_OPTIONAL, TrainConfig
from ran.util.results import Outputs
from ran.util.stats import fit_logistic

DECODED = InjectionConfig(
    reservoir=ReservoirConfig(units=64, lr=0.05, input_scaling=0.1), n_slots=1,
    drive_source="input", readout="decoded", pooling="token", write_gate=True, query_gate=True,
)  # fmt: skip
CFG = dict(
    model_name="tiny-llama", injection=DECODED, probe="fact_in_text",
    probe_params=dict(k=4, n_train=48, n_val=8, n_test=8), steps=2, batch_size=4,
    eval_every=0, patience=0, learning_rate=0.05,
)  # fmt: skip
SMALL_FIT = dict(n_episodes=12, n_blocks=2, steps=50)


def test_options_reject_unknown_keys_and_bad_values():
    assert RG.options({}) == RG.DEFAULTS
    with pytest.raises(ValueError, match="no option"):
        RG.options({"tails": 3})
    with pytest.raises(ValueError, match="tail"):
        RG.options({"tail": 0})
    with pytest.raises(ValueError, match="query_gate"):
        TrainConfig(**(CFG | dict(injection=InjectionConfig(), read_gate={"tail": 2})))


def test_read_gate_counts_in_the_hash_only_when_set():
    plain = TrainConfig(**CFG)
    assert "read_gate" in HASH_OPTIONAL and plain.read_gate == {}
    fitted = TrainConfig(**CFG, read_gate={"tail": 2})
    assert fitted.config_hash() != plain.config_hash()
    assert TrainConfig(**CFG, read_gate={"tail": 3}).config_hash() != fitted.config_hash()
    # the defaults are spelled out (a changed default is a new hash), types normalised
    assert fitted.read_gate == RG.DEFAULTS | {"tail": 2}
    same = TrainConfig(
        **CFG, read_gate=RG.DEFAULTS | {"tail": 2.0, "shift": int(RG.DEFAULTS["shift"])}
    )
    assert same.config_hash() == fitted.config_hash()
    assert TrainConfig.from_dict(fitted.to_dict()).config_hash() == fitted.config_hash()
    # every committed run record still hashes to its own name (saved before the field existed)
    records = [json.load(open(p)) for p in glob.glob("data/results/runs/*.json")]
    assert records and all(
        TrainConfig.from_dict(r["config"]).config_hash() == r["hash"] for r in records
    )


def test_gate_questions_are_disjoint_from_every_heldout_question():
    heldout = set(WL.QUESTION["val"]) | set(WL.QUESTION["test"])
    named = set(WL.NAMED_QUESTION["val"]) | set(WL.NAMED_QUESTION["test"])
    assert WL.GATE_QUESTIONS and not set(WL.GATE_QUESTIONS) & (heldout | named)
    assert not set(WL.GATE_QUESTIONS) & set(WL.QUESTION["train"])


def test_fit_logistic_separates_and_weights_the_positives():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 5, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] > 1.0).double()
    w, b, mean, std = fit_logistic(X, y, 1e-4, 100)
    pred = (((X - mean) / std) @ w + b) > 0
    assert (pred == y.bool()).double().mean() > 0.97 and w.dtype == torch.float64
    _, b_heavy, _, _ = fit_logistic(X, y, 1e-2, 100, pos_weight=10.0)
    _, b_light, _, _ = fit_logistic(X, y, 1e-2, 100)
    assert b_heavy > b_light  # weighting the positives opens the gate more


def _build(cfg):
    model, tok, handle = T._build(cfg)
    return model, tok, handle


def test_features_label_the_tail_of_question_passes_only():
    cfg = TrainConfig(**CFG, read_gate=SMALL_FIT)
    model, tok, handle = _build(cfg)
    eps = cfg.make_probe().splits()["train"][:3]
    X, y = RG.features(handle, tok, eps, tail=2, n_blocks=1, extra=("Say it:",))
    lens = [len(tok(p)["input_ids"]) for e in eps for p in e.passes]
    assert X.shape == (sum(lens) + len(tok("Say it:")["input_ids"]) + 128, model.config.hidden_size)
    assert int(y.sum()) == 2 * (len(eps) + 1)
    # the layer input of one text is that of a full forward pass (the state left as it was)
    handle.reset_state()
    (x,) = RG.layer_inputs(handle, tok, [eps[0].passes[0]])
    assert handle.state is None and x.shape[0] == lens[0]


def test_layer_inputs_batch_equal_lengths_and_reuse_the_lower_layers():
    from ran.injection import lowercache as LC

    cfg = TrainConfig(**CFG)
    model, tok, handle = _build(cfg)
    texts = ["The word is castle.", "The word is garden.", "A much longer line of text, here.",
             "Say it:"]  # fmt: skip
    LC.clear()
    batched = RG.layer_inputs(handle, tok, texts, batch_rows=4)
    alone = [RG.layer_inputs(handle, tok, [t], batch_rows=1)[0] for t in texts]
    for x, y, t in zip(batched, alone, texts, strict=True):
        assert x.shape == (len(tok(t)["input_ids"]), model.config.hidden_size)
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)  # a row is the text's own pass
    hits = LC.STATS.hits
    again = RG.layer_inputs(handle, tok, texts, batch_rows=4)  # the same batches: from the store
    assert LC.STATS.hits > hits and all(
        torch.equal(a, b) for a, b in zip(again, batched, strict=True)
    )
    LC.clear()


def test_fit_opens_on_questions_and_is_frozen_while_training(tmp_path):
    cfg = TrainConfig(**CFG, read_gate=SMALL_FIT | dict(shift=0.0))
    model, tok, handle = _build(cfg)
    stats = RG.fit_read_gate(handle, tok, cfg.make_probe().splits()["train"], cfg.read_gate)
    assert stats["open_pos"] > 0.5 > stats["open_neg"] and stats["n_pos"] == 3 * (12 + 12)
    gate = handle.slots.query_gate
    assert torch.equal(gate.weight, gate.weight[:1].expand_as(gate.weight))  # every head alike
    # training: the fitted gate is kept bit for bit, the rest of the read side moves
    run = T.train(cfg, Outputs(profile="smoke", root=tmp_path), progress=False)
    assert run.history["read_gate"]["n_pos"] == stats["n_pos"]
    g2 = run.handle.slots.query_gate
    assert torch.equal(g2.weight, gate.weight) and torch.equal(g2.bias, gate.bias)
    assert not torch.equal(run.handle.slots.log_gain, handle.slots.log_gain) or not torch.equal(
        run.handle.slots.bias, handle.slots.bias
    )
    with pytest.raises(ValueError, match="query gate"):
        plain = TrainConfig(**(CFG | dict(injection=InjectionConfig(
            reservoir=DECODED.reservoir, n_slots=1, drive_source="input", readout="decoded"))))  # fmt: skip
        RG.fit_read_gate(_build(plain)[2], tok, [], {})
