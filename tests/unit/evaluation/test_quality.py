"""Tests of ran.evaluation.quality (smoke scale, tiny random models)."""

from __future__ import annotations

import math

import pytest
import torch

from ran.evaluation import quality as h1
from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.mechanisms.reservoir_slots import inject
from ran.study import h1 as H1
from ran.tasks.data import shakespeare_lines
from ran.training.config import TrainConfig


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model("tiny-llama", seed=0)
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, model.config.vocab_size, (3, 24), generator=gen)
    return model, tok, blocks


def test_perplexity_matches_manual_cross_entropy(tiny):
    model, _, blocks = tiny
    res, kept = h1.perplexity(model, blocks, keep_logits=3)
    with torch.no_grad():
        logits = model(input_ids=blocks).logits
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).double(), blocks[:, 1:].reshape(-1)
    )
    assert res.tokens == blocks.shape[0] * (blocks.shape[1] - 1)
    assert res.nll == pytest.approx(float(ce), rel=1e-5)
    assert res.ppl == pytest.approx(math.exp(float(ce)), rel=1e-5)
    assert len(kept) == 3 and res.finite


def test_injected_at_init_is_exactly_the_base(tiny):
    model, _, blocks = tiny
    base, lb = h1.perplexity(model, blocks, keep_logits=3)
    with inject(model, InjectionConfig(n_slots=4)) as h:
        init, li = h1.perplexity(model, blocks, keep_logits=3)
        assert h.state is not None  # the state was advanced, yet the output is untouched
        h.set_gate(1.0)
        h.reset_state()
        h.idle(1, batch_size=1)
        opened, lo = h1.perplexity(model, blocks, keep_logits=3)
    assert init.nll == base.nll and init.ppl == base.ppl
    assert all(torch.equal(a, b) for a, b in zip(lb, li, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(lb, lo, strict=True))  # can fail
    assert opened.nll != base.nll


def test_repetition_and_distinct_on_constructed_sequences():
    assert h1.repetition(list(range(20)), 4) == 0.0
    assert h1.repetition([7] * 10, 4) == pytest.approx(1 - 1 / 7)
    assert h1.repetition([1, 2, 3, 4, 1, 2, 3, 4], 4) == pytest.approx(1 - 4 / 5)
    assert h1.distinct_n([1, 2, 1, 2], 2) == pytest.approx(2 / 3)
    assert h1.distinct_n([5, 6, 7], 1) == 1.0
    with pytest.raises(ValueError):
        h1.repetition([1, 2], 4)


def test_carried_and_idle_passes_stay_finite():
    model, tok = load_model("tiny-llama", seed=0)
    with inject(model, InjectionConfig(n_slots=4)) as h:
        h.set_gate(0.5)
        out = h1.carry_passes(h, tok, shakespeare_lines("train")[:60], record_every=20)
        assert out["passes"] == 60 and len(out["norm_trace"]) == 3
        assert out["finite"] and out["norm"] > 0
        idle = h1.idle_passes(h, 2000, record_every=500)
        assert idle["finite"] and len(idle["norm_trace"]) == 4
        assert idle["norm"] < out["norm"]  # sr < 1 and no bias: idle passes fade the state


def test_continuation_nll_and_generation(tiny):
    model, tok, _ = tiny
    prompt, gen = h1.greedy_generate(model, tok, "To be or not", 8)
    assert len(gen) == 8
    with torch.no_grad():
        ids = torch.tensor([prompt + gen])
        nll = h1.token_nll(model(input_ids=ids).logits, ids)[0, len(prompt) - 1 :].mean()
    assert h1.continuation_nll(model, prompt, gen) == pytest.approx(float(nll), rel=1e-6)
    stats = h1.generation_stats(prompt, gen, model)
    assert stats["n_tokens"] == 8 and stats["base_ppl"] > 1


def test_batched_generation_matches_one_prompt_at_a_time():
    model, tok = load_model("tiny-llama", seed=0)
    prompts = ["To be or not", "A horse! a horse! my kingdom for a horse"]  # unequal lengths
    alone = [h1.greedy_generate(model, tok, p, 10) for p in prompts]
    assert h1.greedy_generate_batch(model, tok, prompts, 10) == alone
    # injected, gate open: each prompt keeps its own state row, as if generated alone
    with inject(model, InjectionConfig(n_slots=4)) as h:
        h.set_gate(0.5)
        one = []
        for p in prompts:
            h.reset_state()
            one.append(h1.greedy_generate(model, tok, p, 10))
        h.reset_state()
        assert h1.greedy_generate_batch(model, tok, prompts, 10) == one
        assert h.state.shape[0] == 2 and h1.state_stats(h)["norm"] > 0
    assert one != alone  # the open gate changed the text: the comparison above can fail


def test_readout_for():
    assert H1.readout_for(6, [16, 64]) == 16
    assert H1.readout_for(32, [16, 64]) == 64
    with pytest.raises(ValueError):
        H1.readout_for(65, [16, 64])


def test_kind_field_defaults_to_the_reservoir_and_is_hashed():
    cfg = TrainConfig()
    assert "kind" in cfg.to_dict()
    d = cfg.to_dict()
    d.pop("kind")  # a missing field takes its default
    assert TrainConfig.from_dict(d).config_hash() == cfg.config_hash()
    assert TrainConfig(kind="prefix").config_hash() != cfg.config_hash()
    with pytest.raises(ValueError):
        TrainConfig(kind="nope")


def test_nondestruction_and_generation_pair_on_a_trained_tiny_run(tmp_path):
    from conftest import TINY_RUN

    from ran.tasks.data import token_blocks
    from ran.training.train import train
    from ran.util.results import Outputs

    run = train(TrainConfig(**TINY_RUN), Outputs(root=tmp_path), progress=False)
    plain, tok = load_model("tiny-llama")
    blocks = token_blocks(tok, "test", 24, 3)
    nd = H1.nondestruction(plain, run, blocks, shakespeare_lines("train")[:5], idle_long=20)
    assert nd["init_equal"] and nd["ppl"]["injected, init"].nll == nd["ppl"]["base"].nll
    assert set(nd["ppl"]) == {
        "base",
        "injected, init",
        "trained, carried from a probe pass",
        "trained, after 5 carried passes",
    }
    # the gate is open: a trained readout changes the perplexity (it cannot be the base's)
    assert nd["ppl"]["trained, carried from a probe pass"].nll != nd["ppl"]["base"].nll
    assert nd["carry"]["passes"] == 5 and nd["idle"]["idle_passes"] == 20 and nd["idle"]["finite"]
    assert run.handle.state is None  # left reset
    gen = H1.generation_pair(plain, run, ["To be, or not"], 6)
    assert [len(gen[k]) for k in ("base", "ran (trained, carried)")] == [1, 1]
    assert gen["base"][0]["n_tokens"] == 6 and "norm" in gen["state"]
