"""Notebook 06's retention half-life (ran.study.retention.half_life) and its text."""

from __future__ import annotations

import math

import pytest

from ran.study.retention import half_life
from ran.study.retention_findings import fmt_half


def test_half_life_interpolates_to_halfway_between_start_and_chance():
    # start 0.9, chance 0.1: halfway is 0.5, crossed between d = 2 (0.7) and d = 4 (0.3)
    assert half_life([0, 1, 2, 4], [0.9, 0.8, 0.7, 0.3], 0.1) == pytest.approx(3.0)


def test_half_life_beyond_the_range_and_without_signal():
    assert math.isinf(half_life([0, 8, 32], [0.9, 0.8, 0.7], 0.1))
    assert fmt_half(half_life([0, 8, 32], [0.9, 0.8, 0.7], 0.1), 32) == "> 32"
    assert half_life([0, 1], [0.05, 0.05], 0.0625) is None  # nothing above chance to retain
    assert fmt_half(None, 8) == "n/a"
    with pytest.raises(ValueError):
        half_life([0, 1], [0.5], 0.1)


def _esn_doc(edge=1.2, mc=8.9):
    return {
        "results": {
            "memory": {
                "50": {"max_mean": 6.0, "sr_at_max": 1.4},
                "400": {"max_mean": mc, "sr_at_max": 1.5},
            },
            "chaos": {"autonomous": {"50": 1.7, "400": edge}},
            "settings": {"lr": 1.0},
        }
    }


def test_esn_context_reads_the_largest_reservoir_and_tolerates_gaps():
    from ran.study.retention_findings import esn_context

    s = esn_context(_esn_doc())["sentence"]
    assert "N = 400" in s and "8.9" in s and "sr ~ 1.2" in s
    assert esn_context(_esn_doc(edge=None)) is None  # no boundary inside the sr grid (smoke)
    assert esn_context(None) is None and esn_context({"results": {}}) is None


def test_regime_sentence_names_the_leak_rates_from_the_grid():
    import pandas as pd

    from ran.study.retention_findings import regime_sentence

    grid = pd.DataFrame(
        [dict(lr=lr, sr=sr, distractors=8, idle_steps=32, n=8, d0=0.9, d=d, idle=i)
         for lr, d, i in ((1.0, 0.1, 0.0), (0.01, 0.9, 0.95)) for sr in (0.5, 0.9)]
    )  # fmt: skip
    s = regime_sentence(grid)
    assert "lr = 0.01: 0.900 / 0.900 / 0.950" in s and "lr = 1: 0.900 / 0.100 / 0.000" in s
    assert "best cell lr = 0.01" in s


def _acc(a, n=96):
    return dict(acc=a, ci_low=max(0.0, a - 0.05), ci_high=min(1.0, a + 0.05), n=n)


def _point(w, d0, d8, dppl, q_open=0.9, t_open=0.5):
    cond = lambda a: {"reservoir": _acc(a), "reset": _acc(0.07), "stateless": _acc(0.06), "n": 96}  # noqa: E731
    return dict(
        kl_weight=w, hash=f"h{w}", train_min=5.0, d0=cond(d0), d=cond(d8), distractors=8,
        h1=dict(dppl_pct=dppl, n_blocks=16, block_len=128),
        openness=dict(text_mean=t_open, text_p99=t_open + 0.1, question_mean=q_open,
                      question_p05=q_open - 0.1, n_tokens=2048, n_questions=96),
    )  # fmt: skip


def test_tradeoff_findings_state_results_and_hold_them_to_targets():
    from ran.study.h1_tradeoff import tradeoff_findings, tradeoff_rows

    miss = [_point(3, 0.95, 0.9, 40.0), _point(10, 0.5, 0.45, 5.0, q_open=0.2, t_open=0.1)]
    tab, sent, *targets = tradeoff_findings(miss, "decoded", dict(dppl_pct=4000.0))
    assert "+5.00% at KL weight 10" in sent["text"] and " met" not in sent["text"]
    assert "highest recall at d = 0, 0.950" in sent["text"] and "+40.00%" in sent["text"]
    assert "hardly tells" in sent["text"]  # 0.2 at the questions vs 0.1 on text: < 3x
    assert [r[0] for r in tab["rows"]] == ["0 (decoded)", 3, 10] and tab["rows"][0][4] == "+4000.00"
    assert "within 1%" not in tab["columns"]
    # one H1 target per weight, then recall and H1 together: all NOT met
    assert [t["kind"] for t in targets] == ["target"] * 3
    assert [t["met"] for t in targets] == [False, False, False]
    hit = [*miss, _point(30, 0.93, 0.91, 0.5, q_open=0.9, t_open=0.01)]
    blocks = tradeoff_findings(hit)
    sent, together = blocks[1]["text"], blocks[-1]
    assert "+0.50% at KL weight 30" in sent and "tells the held-out questions" in sent
    assert "hardly" not in sent
    assert together["met"] is True and together["value"].startswith("KL 30:")
    assert [t["met"] for t in blocks[2:-1]] == [False, False, True]
    rows = tradeoff_rows(hit)
    assert len(rows) == 6 and {r["condition"] for r in rows} == {"d=0", "d=8"}
    assert tradeoff_findings([]) == []


def test_kl_plan_keeps_the_last_step_and_sets_each_weight():
    from ran.study.h1_tradeoff import kl_plan
    from ran.training.config import TrainConfig

    base = TrainConfig(model_name="tiny-llama", probe="fact_in_text", probe_params=dict(k=4))
    plan = kl_plan(base, 0.01, 0.9, [3, 10])
    assert list(plan) == ["decoded+kl w=3", "decoded+kl w=10"]
    for w, cfg in zip((3.0, 10.0), plan.values(), strict=True):
        assert cfg.kl_weight == w and cfg.select == "last" and cfg.injection.query_gate
        assert cfg.injection.reservoir.lr == 0.01 and cfg.injection.readout == "decoded"
    assert len({c.config_hash() for c in plan.values()}) == 2


def test_gate_openness_reads_the_handles_read_gate_record():
    """On a tiny query-gated model: the openness from the handle's ``read_gate`` record is
    the product of the query gate and tanh(g) at every token (captured here around the
    query gate's ``select``), and recording is off again afterwards."""
    from types import SimpleNamespace

    import torch

    from ran.injection.models import load_model
    from ran.mechanisms.registry import make
    from ran.study.h1_tradeoff import gate_openness
    from ran.training.config import TrainConfig

    cfg = TrainConfig(probe="fact_in_text", probe_params=dict(k=4),
                      injection=dict(query_gate=True, gate_init=1.0, reservoir={"units": 32}))  # fmt: skip
    model, tok = load_model("tiny-llama")
    h = make("reservoir", model, cfg.injection_config())
    try:
        with torch.no_grad():
            w = h.slots.query_gate.weight
            w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
        run = SimpleNamespace(handle=h, model=model, tokenizer=tok, config=cfg)
        got = gate_openness(run, n_test=4, n_blocks=2, block_len=16)
        assert not h.record_read_gate and h.read_gate is None
        seen, select = [], h.slots.select

        def spy(x):  # the query gate's openness of each pass, as it is computed
            seen.append(select(x))
            return seen[-1]

        h.slots.select = spy
        gate_openness(run, n_test=4, n_blocks=2, block_len=16)
        del h.slots.select
        text, question = ((s * torch.tanh(h.slots.gate)).mean(-1).float() for s in seen)
        assert got["n_tokens"] == 2 * 16 and got["n_questions"] == 4
        assert got["text_mean"] == text.mean().item() and text.std() > 0.01
        assert got["question_mean"] == question[:, -1].mean().item()
    finally:
        h.remove()


def test_asked_write_side_fits_the_read_gate_and_merges_its_curriculum():
    """decoded+asked: the query gate on and fitted (read_gate), lr 0.05, and its distractor
    curriculum merged into the base probe parameters (k and sizes kept)."""
    from ran.study.retention import config_for
    from ran.training.config import TrainConfig

    base = TrainConfig(model_name="tiny-llama", probe="fact_in_text",
                       probe_params=dict(k=4, n_train=64))  # fmt: skip
    cfg = config_for(base, "decoded+asked", 0.01, 0.9)
    assert cfg.read_gate and cfg.injection.query_gate and cfg.injection.readout == "decoded"
    assert cfg.probe_params == dict(k=4, n_train=64, distractors=(0, 1, 2, 4))
    assert base.probe_params == dict(k=4, n_train=64)  # the base is not changed
    plain = config_for(base, "decoded", 0.01, 0.9)
    assert not plain.read_gate and plain.probe_params == base.probe_params


class _Run:
    """A run stand-in for the regime grid: counts how often its model is asked for."""

    def __init__(self, cfg, hash_="abc", allow_model=True):
        self.config, self.hash, self.allow, self.asked, self.tokenizer = (
            cfg,
            hash_,
            allow_model,
            0,
            None,
        )
        self.handle = self

    @property
    def model(self):
        self.asked += 1
        if not self.allow:
            raise AssertionError("the model was built although every cell is cached")
        return object()

    def remove(self):
        pass


def _fake_episodes(cfg, n_test, **override):
    """Four episodes per condition, their passes naming the condition (idle: the ticks)."""
    from ran.tasks.probes import Episode

    d = override.get("distractors", (0,))[0]
    n_idle = override.get("idle_steps", (0,))[0]
    passes = ("fact", *[f"filler {i}" for i in range(d)], "question")
    idle = (0,) * (len(passes) - 1) + (n_idle,)
    return [Episode(passes, idle, ("a", "b", "c", "d"), i, "fact_in_text", ()) for i in range(4)]


def test_regime_grid_reads_cached_cells_without_building_the_model(tmp_path, monkeypatch):
    from ran.study import retention as RT
    from ran.training.config import TrainConfig
    from ran.util.results import Outputs

    calls = []

    def fake_evaluate(handle, tok, eps, controls, batch_size):
        calls.append(controls)
        return {c: {"acc": 0.25 * len(calls), "pred": []} for c in controls} | {
            "chance": 0.25,
            "n": 4,
        }

    monkeypatch.setattr(RT, "evaluate", fake_evaluate)
    monkeypatch.setattr(RT, "test_episodes", _fake_episodes)
    monkeypatch.setattr(RT, "_reinject", lambda model, cfg, old: old)
    cfg = TrainConfig(model_name="tiny-llama", probe="fact_in_text", probe_params=dict(k=4))
    out = Outputs(profile="smoke", root=tmp_path)
    first = _Run(cfg)
    rows = RT.regime_grid(first, out, [1.0, 0.1], [0.9], n_test=4, idle=2, distractors=3)
    assert len(calls) == 6 and first.asked > 0  # 2 cells x (d0, d, idle), swapped
    assert [r["lr"] for r in rows] == [1.0, 0.1] and rows[0]["d0"] != rows[1]["d0"]
    again = RT.regime_grid(_Run(cfg, allow_model=False), out, [1.0, 0.1], [0.9], 4, 2, 3)
    assert again == rows and len(calls) == 6  # every cell from the memo, no model
    with pytest.raises(AssertionError, match="cached"):  # a new cell needs the model
        RT.regime_grid(_Run(cfg, allow_model=False), out, [0.01], [0.9], 4, 2, 3)


def test_adapter_is_written_again_only_when_not_current(tmp_path):
    import json
    import os

    from ran.study.retention import adapter_current

    params = tmp_path / "params.safetensors"
    params.write_bytes(b"x")
    run = type("R", (), {"hash": "abc", "params_path": params})()
    ad = tmp_path / "adapter"
    assert not adapter_current(ad, run)  # missing
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"training": {"hash": "abc"}}))
    (ad / "adapter_model.safetensors").write_bytes(b"y")
    assert adapter_current(ad, run)
    assert not adapter_current(ad, type("R", (), {"hash": "other", "params_path": params})())
    t = params.stat().st_mtime
    os.utime(params, (t + 10, t + 10))  # the run trained again after the adapter was written
    assert not adapter_current(ad, run)
    os.utime(params, (t, t))
    (ad / "adapter_config.json").write_text("{not json")
    assert not adapter_current(ad, run)


class _Counted:
    """A run stand-in (config and hash) for evaluations with a counting fake."""

    def __init__(self, cfg, hash_):
        self.config, self.hash, self.handle, self.tokenizer = cfg, hash_, None, None


def _counting_evaluate(calls):
    def fake(handle, tok, eps, controls, batch_size):
        calls.extend(controls)
        return {c: {"acc": 0.5, "pred": [e.answer for e in eps]} for c in controls}

    return fake


def _varied_episodes(cfg, n_test, **override):
    """As the real probe: the question pass changes with the distractor count (the
    generator's stream moves), not with the idle ticks."""
    from ran.tasks.probes import Episode

    d = override.get("distractors", (0,))[0]
    n_idle = override.get("idle_steps", (0,))[0]
    passes = ("fact", *[f"filler {i}" for i in range(d)], f"question after {d}")
    idle = (0,) * (len(passes) - 1) + (n_idle,)
    return [
        Episode(passes, idle, ("a", "b", "c", "d"), i % 4, "fact_in_text", ()) for i in range(4)
    ]


def test_each_control_is_computed_once_per_what_it_reads(tmp_path, monkeypatch):
    """The d = 0 point, the idle curve and the all-controls row are the same episodes: the
    reservoir runs once for them and once per other condition; reset and stateless run once
    per distinct question set; a second run reuses the first one's stateless and oracle
    values (the base model's), a LoRA run does not."""
    from collections import Counter

    from ran.study import retention as RT
    from ran.training.config import TrainConfig
    from ran.util.configio import updated
    from ran.util.results import Outputs

    calls = []
    monkeypatch.setattr(RT, "evaluate", _counting_evaluate(calls))
    monkeypatch.setattr(RT, "test_episodes", _varied_episodes)
    cfg = TrainConfig(model_name="tiny-llama", probe="fact_in_text", probe_params=dict(k=4))
    out = Outputs(profile="smoke", root=tmp_path)

    def measure(run):
        calls.clear()
        d = RT.curve(run, out, "distractors", [0, 1, 2], 4, RT.CURVE_CONTROLS)
        i = RT.curve(run, out, "idle_steps", [0, 2, 8], 4, RT.CURVE_CONTROLS)
        a = RT.evaluate_condition(run, out, 4, RT.POINT_CONTROLS)
        assert [p["distractors"] for p in d] == [0, 1, 2] and a["n"] == 4 and a["chance"] == 0.25
        assert [p["idle_steps"] for p in i] == [0, 2, 8] and i[0]["reset"] == d[0]["reset"]
        return Counter(calls)

    first = measure(_Counted(cfg, "run-1"))
    # reservoir: d = 0 (= idle 0 = all controls), d = 1, d = 2, idle 2, idle 8
    assert first == {"reservoir": 5, "reset": 3, "stateless": 3, "shuffled": 1, "oracle": 1}
    second = measure(_Counted(cfg, "run-2"))
    assert second == {"reservoir": 5, "reset": 3, "shuffled": 1}
    lora = measure(_Counted(updated(cfg, lora_r=4), "run-3"))
    assert lora == first
    with pytest.raises(ValueError, match="unknown control"):
        RT.control_key(_Counted(cfg, "x"), "nope", [], 32)


@pytest.mark.parametrize("side", ["decoded+asked", "decoded", "pure", "gru"])
def test_stateless_and_oracle_scores_do_not_depend_on_the_run(side):
    """What lets :func:`control_key` share the stateless and oracle values across runs: with
    the gate closed, notebook 06's mechanisms score exactly as the base model does, whatever
    their trained parameters (randomised here) and state."""
    import torch

    from ran.injection.models import load_model
    from ran.mechanisms.registry import make
    from ran.study import retention as RT
    from ran.tasks.episodes import EpisodeRunner, _base_scores
    from ran.training.config import TrainConfig

    base = TrainConfig(model_name="tiny-llama", probe="fact_in_text",
                       probe_params=dict(k=4, n_train=16, n_val=4, n_test=6),
                       injection=dict(reservoir={"units": 32}))  # fmt: skip
    cfg = RT.config_for(base, side, 0.01, 0.9)
    eps = RT.test_episodes(cfg, 6, distractors=(1,))
    model, tok = load_model("tiny-llama")

    def scores(handle):
        runner = EpisodeRunner(handle, tok)
        with torch.no_grad():
            return [_base_scores(runner, eps, oracle=o) for o in (False, True)]

    reference = make("reservoir", model, base.injection_config())
    want = scores(reference)
    reference.remove()
    h = make(cfg.kind, model, cfg.injection_config())
    try:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in h.trainable_parameters():
                p.add_(torch.randn(p.shape, generator=g))
        got = scores(h)
    finally:
        h.remove()
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
