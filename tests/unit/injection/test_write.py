"""The learned write side (ran.injection.write): pooling, per-token steps, the write gate, no recurrence."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_RUN, cached_model

from ran.injection.config import InjectionConfig
from ran.mechanisms.reservoir_slots import inject
from ran.reservoir.config import ReservoirConfig
from ran.tasks.scoring import batch_encode
from ran.training.config import TrainConfig
from ran.training.train import train

RES = ReservoirConfig(units=48, lr=0.5, input_scaling=0.5, seed=3)
FACT = "Some text first. The secret word is apple. Then more text after it."
OTHER = "An unrelated line about the weather and the sea."


def _handle(model, **kw):
    h = inject(model, InjectionConfig(reservoir=RES, **kw))
    h.set_gate(1.0)  # open the read gate so the slots matter
    return h


def _enc(tok, *texts):
    return batch_encode(tok, list(texts))


@pytest.mark.parametrize("pooling", ["last", "attn", "token"])
def test_closed_write_gate_leaves_the_state_unchanged(pooling):
    model, tok = cached_model("tiny-llama")
    ids, mask = _enc(tok, FACT, OTHER)
    s0 = torch.randn(2, RES.units, generator=torch.Generator().manual_seed(0))
    with _handle(model, pooling=pooling, write_gate=True, write_gate_init=-40.0) as h:
        h.state = s0
        model(input_ids=ids, attention_mask=mask)
        assert torch.equal(h.state, s0)
    with _handle(model, pooling=pooling, write_gate=True) as h:  # open init: it writes
        h.state = s0
        model(input_ids=ids, attention_mask=mask)
        assert (h.state - s0).abs().max() > 1e-3


@pytest.mark.parametrize("pooling", ["last", "mean", "attn", "token"])
def test_a_distractor_pass_changes_the_state(pooling):
    model, tok = cached_model("tiny-llama")
    with _handle(model, pooling=pooling, write_gate=True) as h:
        h.write_only(*_enc(tok, FACT))
        after_fact = h.state.clone()
        h.write_only(*_enc(tok, OTHER))
        assert not torch.allclose(h.state, after_fact)


def test_per_token_stepping_equals_a_manual_loop_over_the_tokens():
    model, tok = cached_model("tiny-llama")
    ids = tok(FACT, return_tensors="pt")["input_ids"]
    r0 = torch.randn(1, RES.units, generator=torch.Generator().manual_seed(1)) * 0.3
    with _handle(model, pooling="token") as h:
        h.state = r0
        model(input_ids=ids)
        per_token = h.state.clone()
    # reference: the drive of token t is the gated output at the last token of prefix t
    with _handle(model, pooling="last") as h:
        r = r0
        for t in range(ids.shape[1]):
            h.state = r0  # every token of the pass reads the state from before the pass
            model(input_ids=ids[:, : t + 1])
            r = h.reservoir.step(r, h.last_drive)
    assert torch.allclose(per_token, r, atol=1e-5)
    assert not torch.allclose(per_token, r0)


def test_per_token_stepping_skips_left_padding():
    model, tok = cached_model("tiny-llama")
    ids, mask = _enc(tok, FACT, OTHER)
    with _handle(model, pooling="token", write_gate=True) as h:
        model(input_ids=ids, attention_mask=mask)
        batched = h.state.clone()
        for i, text in enumerate((FACT, OTHER)):
            h.reset_state()
            model(**tok(text, return_tensors="pt"))
            assert torch.allclose(batched[i], h.state[0], atol=1e-5)


def test_attention_pooling_starts_as_mean_pooling():
    model, tok = cached_model("tiny-llama")
    ids, mask = _enc(tok, FACT, OTHER)
    states = {}
    for pooling in ("mean", "attn"):
        with _handle(model, pooling=pooling) as h:
            model(input_ids=ids, attention_mask=mask)
            states[pooling] = h.state.clone()
    assert torch.allclose(states["mean"], states["attn"], atol=1e-6)


def test_no_recurrence_zeroes_w_so_the_state_forgets_the_past():
    model, tok = cached_model("tiny-llama")
    res = ReservoirConfig(units=48, lr=1.0, seed=3)
    with inject(model, InjectionConfig(reservoir=res, recurrence=False)) as h:
        assert not h.reservoir.W.any()
        a = h.write_only(*_enc(tok, OTHER)).clone()
        h.reset_state()
        h.write_only(*_enc(tok, FACT))
        b = h.write_only(*_enc(tok, OTHER))
        assert torch.equal(a, b)  # what came before the last pass left no trace
    with inject(model, InjectionConfig(reservoir=res)) as h:
        assert h.reservoir.W.any()


def test_injection_is_bit_exact_at_init_with_every_write_side():
    model, tok = cached_model("tiny-llama")
    ids, mask = _enc(tok, FACT, OTHER)
    base = model(input_ids=ids, attention_mask=mask).logits
    for pooling in ("last", "mean", "attn", "token"):
        with inject(model, InjectionConfig(reservoir=RES, pooling=pooling, write_gate=True)):
            model(input_ids=ids, attention_mask=mask)  # a state in the memory
            assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, base)


def test_the_write_side_trains(tmp_path):
    from ran.util.results import Outputs

    inj = TINY_RUN["injection"] | dict(pooling="attn", write_gate=True)
    cfg = TrainConfig(**TINY_RUN | dict(injection=inj, steps=3))
    res = train(cfg, Outputs("smoke", root=tmp_path), progress=False)
    w = res.handle.write
    assert w.score.weight.abs().sum() > 0 and w.gate.weight.abs().sum() > 0
    assert len(res.handle.trainable_parameters()) == 3 + 4  # readout (2) + gate, write (4)


def test_bad_write_configs_are_refused():
    with pytest.raises(ValueError, match="pooling"):
        InjectionConfig(pooling="max")
    with pytest.raises(ValueError, match="advance"):
        InjectionConfig(pooling="token", advance="generate")
    with pytest.raises(ValueError, match="write_gate_init"):
        InjectionConfig(write_gate_init=float("nan"))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_the_layer_input_can_drive_the_reservoir(name):
    model, tok = cached_model(name)
    ids, mask = _enc(tok, FACT, OTHER)
    base = model(input_ids=ids, attention_mask=mask).logits
    with _handle(model, pooling="mean", drive_source="input") as h:
        captured = {}
        hook = h._attn.register_forward_pre_hook(
            lambda m, a, kw: captured.update(x=kw.get("hidden_states", a[0] if a else None)),
            with_kwargs=True,
        )
        h.set_gate(0.0)
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, base)
        hook.remove()
        x = captured["x"]  # (B, Q, d): the normalised input of layer L's attention
        real = mask[:, :, None].to(x.dtype)
        u = (x * real).sum(1) / real.sum(1)
        u = u / u.pow(2).sum(-1, keepdim=True).add(1e-6).sqrt()
        assert torch.allclose(h.last_drive, u, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-qwen2"])
def test_hidden_readout_slots_are_the_layers_own_projections_of_pseudo_tokens(name):
    model, tok = cached_model(name)
    ids, mask = _enc(tok, FACT, OTHER)
    base = model(input_ids=ids, attention_mask=mask).logits
    cfg = dict(pooling="mean", drive_source="input", readout="hidden")
    with inject(model, InjectionConfig(reservoir=RES, **cfg)) as h:
        model(input_ids=ids, attention_mask=mask)
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, base)  # gate closed
        xhat = h.slots.hidden_slots(h.state)  # (B, M, d)
        k, v = h.slots(h.state)  # (B, n_kv, M, hd)
        attn = h._attn
        if name == "tiny-gpt2":
            _, k_ref, v_ref = attn.c_attn(xhat).split(attn.embed_dim, dim=2)
        else:
            k_ref, v_ref = attn.k_proj(xhat), attn.v_proj(xhat)
        assert torch.allclose(k.transpose(1, 2).reshape(k_ref.shape), k_ref, atol=1e-6)
        assert torch.allclose(v.transpose(1, 2).reshape(v_ref.shape), v_ref, atol=1e-6)
        # at init each slot points along what was written (the pseudo-inverse of W_in)
        h.reset_state()
        h.set_gate(0.0)
        model(input_ids=ids, attention_mask=mask)
        cos = torch.nn.functional.cosine_similarity(
            h.slots.hidden_slots(h.state)[:, 0], h.last_drive
        )
        assert bool((cos > 0.5).all()), cos
        h.set_gate(1.0)
        assert not torch.allclose(model(input_ids=ids, attention_mask=mask).logits, base)
