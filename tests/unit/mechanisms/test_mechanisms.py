"""Baselines: exact at init and after remove(), state (or no state) across passes, gradients.

Every kind is compared with the untouched model with ``torch.equal`` (no
tolerance) at init and after ``remove()``; the behaviour tests open the gate
and check which kinds carry information from one pass to the next.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cached_model

from ran.injection.config import InjectionConfig
from ran.mechanisms.attractor import AttractorConfig
from ran.mechanisms.registry import kinds, make, state_width, trainable_count
from ran.reservoir.config import ReservoirConfig

PROMPTS = ["The quick brown fox jumps over the lazy dog.", "To be"]
SMALL = InjectionConfig(reservoir=ReservoirConfig(units=64, seed=1), n_slots=4, readout_scale=3.0)
OPEN_ATTRACTOR = AttractorConfig(gate=0.5, burn_in=1)
STATEFUL = ("prefix", "additive", "attractor", "recurrent")


model = cached_model


def handle(kind, m, cfg=SMALL):
    return make(kind, m, cfg, **({"attractor": OPEN_ATTRACTOR} if kind == "attractor" else {}))


def enc(tok, texts):
    return tok(texts, return_tensors="pt", padding=True)


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize(
    "name,impl", [("tiny-gpt2", "eager"), ("tiny-qwen2", "sdpa"), ("tiny-llama", "sdpa")]
)
def test_exact_at_init_and_after_remove(kind, name, impl):
    m, tok = model(name, impl)
    batch = enc(tok, PROMPTS)  # left padding
    with torch.no_grad():
        ref = m(**batch).logits
        with make(kind, m, SMALL) as h:  # every gate closed at init (attractor: gain 0)
            first, second = m(**batch).logits, m(**batch).logits
            assert h.state is not None
        after = m(**batch).logits
    assert torch.equal(first, ref) and torch.equal(second, ref), f"{kind} is not exact at init"
    assert torch.equal(after, ref), f"{kind} leaves a trace after remove()"


@pytest.mark.parametrize("kind", ["prefix", "additive", "attractor"])
def test_generate_with_cache_is_exact_at_init(kind):
    m, tok = model("tiny-llama")
    batch = enc(tok, PROMPTS)
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        ref = m.generate(**batch, **kw)
        with make(kind, m, SMALL):
            got = m.generate(**batch, **kw)
    assert torch.equal(got, ref)


# --------------------------------------------------------------------------- state across passes
def second_pass(m, tok, h, first: str, reset: bool = False):
    h.reset_state()
    with torch.no_grad():
        m(**enc(tok, [first]))
        if reset:
            h.reset_state()
        return m(**enc(tok, ["What comes next?"])).logits


@pytest.mark.parametrize("kind", STATEFUL)
@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_stateful_kinds_carry_pass_one_into_pass_two(kind, name):
    m, tok = model(name)
    with handle(kind, m) as h:
        h.set_gate(1.0 if kind != "attractor" else 0.5)
        a = second_pass(m, tok, h, "Once upon a time")
        b = second_pass(m, tok, h, "Completely different words! 12345")
        assert not torch.allclose(a, b, atol=1e-6), f"{kind}: pass 2 ignores pass 1"
        c = second_pass(m, tok, h, "Once upon a time", reset=True)
        d = second_pass(m, tok, h, "Completely different words! 12345", reset=True)
        assert torch.equal(c, d), f"{kind}: reset_state() leaves a trace"


def test_persistent_slots_carry_nothing_across_passes():
    m, tok = model("tiny-llama")
    with torch.no_grad():
        base = m(**enc(tok, ["What comes next?"])).logits
    with make("persistent", m, SMALL) as h:
        h.set_gate(1.0)
        a = second_pass(m, tok, h, "Once upon a time")
        b = second_pass(m, tok, h, "Completely different words! 12345")
    assert torch.equal(a, b)
    assert not torch.allclose(a, base, atol=1e-4), "the open persistent slots do nothing"


@pytest.mark.parametrize("name,impl", [("tiny-llama", "eager"), ("tiny-gpt2", "sdpa")])
def test_prefix_with_open_gate_equals_an_explicit_prefix(name, impl):
    """tanh(g) = 1: the same logits as feeding [prefix embeddings ; prompt] in one pass."""
    m, tok = model(name, impl)
    ids = enc(tok, ["A prompt of a few words"])["input_ids"]
    r = torch.rand(1, SMALL.reservoir.units, generator=torch.Generator().manual_seed(0)) - 0.5
    with make("prefix", m, SMALL) as h, torch.no_grad():
        h.set_gate(20.0)  # tanh(20) == 1 in float32
        h.state = r
        got = m(input_ids=ids).logits
        pre = h.readout(r)  # (1, M, d)
    M, T = pre.shape[1], ids.shape[1]
    with torch.no_grad():
        embeds = torch.cat([pre, m.get_input_embeddings()(ids)], dim=1)
        pos = torch.cat([torch.arange(M), torch.arange(T)])[None]  # the prompt keeps 0..T-1
        ref = m(inputs_embeds=embeds, position_ids=pos).logits[:, M:]
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()


def test_prefix_respects_left_padding():
    m, tok = model("tiny-qwen2", "eager")
    batch, single = enc(tok, PROMPTS), enc(tok, PROMPTS[1:])
    n = single["input_ids"].shape[1]
    pos = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    r = torch.rand(2, SMALL.reservoir.units, generator=torch.Generator().manual_seed(1)) - 0.5
    with make("prefix", m, SMALL) as h, torch.no_grad():
        h.set_gate(1.5)
        h.state = r
        padded = m(**batch, position_ids=pos).logits[1, -n:]
        h.state = r[1:]
        alone = m(**single).logits[0]
        assert state_width(h) == SMALL.reservoir.units
    assert torch.allclose(padded, alone, atol=1e-5)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["reservoir", "prefix", "additive", "persistent", "recurrent"])
def test_gradients(kind):
    m, tok = model("tiny-llama", "eager")
    with make(kind, m, SMALL) as h:  # gate closed (g = 0): its gradient must still flow
        m(**enc(tok, ["First pass."]))
        loss = m(**enc(tok, ["Second pass"])).logits.pow(2).mean()
        loss.backward()
        params = h.trainable_parameters()
        assert trainable_count(h) == sum(p.numel() for p in params) > 0
        assert h.slots.gate.grad is not None and h.slots.gate.grad.abs().sum() > 0
        res = h.reservoir
        if kind == "recurrent":  # the trained recurrence learns through the stored state
            assert {id(res.W), id(res.W_in), id(res.b)} <= {id(p) for p in params}
            h.set_gate(1.0)
            for p in params:
                p.grad = None
            h.reset_state()
            m(**enc(tok, ["First pass."]))  # r1 = f(0, u1): W meets r only from pass 2 on
            m(**enc(tok, ["Second pass."]))
            m(**enc(tok, ["Third pass"])).logits.pow(2).mean().backward()
            assert res.W.grad.abs().sum() > 0 and res.W_in.grad.abs().sum() > 0
        else:
            assert res.W.grad is None and res.W_in.grad is None
            assert not res.W.requires_grad and not res.W_in.requires_grad
        h.detach_state()
        assert not h.state.requires_grad
    m.zero_grad(set_to_none=True)


def test_persistent_parameter_count():
    m, _ = model("tiny-llama")
    with make("persistent", m, SMALL) as h:
        # 2 (K and V) x 2 KV heads x 4 slots x head_dim 16, plus one gate per query head
        assert trainable_count(h) == 2 * 2 * 4 * 16 + 4


# --------------------------------------------------------------------------- attractor dynamics
def test_attractor_grows_on_repeats_decays_when_idle_and_stays_finite():
    m, tok = model("tiny-gpt2")
    text = enc(tok, ["The cat sat on the mat."])
    with handle("attractor", m) as h, torch.no_grad():
        assert h.trainable_parameters() == [] and state_width(h) == h.state_dim
        tops = []
        for _ in range(6):
            m(**text)
            tops.append(float(h.strengths.max()))
        assert all(b > a for a, b in zip(tops, tops[1:], strict=False)), tops
        assert tops[-1] < 1.0
        h.idle(100)
        assert float(h.strengths.max()) < 0.01 * tops[-1]
        other = enc(tok, ["Quantum 42!", "zzz qqq"])
        h.reset_state()
        for i in range(1000):
            h.write_only(other["input_ids"][i % 2 :][:1], other["attention_mask"][i % 2 :][:1])
        out = m(**enc(tok, ["And now?"])).logits
        assert torch.isfinite(h.state).all() and torch.isfinite(out).all()
        assert float(h.strengths.max()) <= 1.0 and float(h.feedback_gain().max()) > 0


def test_attractor_update_rule_decays_unrelated_attractors():
    m, _ = model("tiny-gpt2")
    with make("attractor", m, SMALL) as h:
        d = h.input_dim
        eye = torch.eye(d)
        st = h._empty(1)
        for _ in range(10):
            st = h.update(st, eye[:1])  # one repeated direction
        s0 = h._split(st)[0][0].clone()
        a = int(s0.argmax())
        for i in range(40):
            st = h.update(st, eye[1 + i % 3][None])  # three orthogonal, unrelated inputs
        s1 = h._split(st)[0][0]
        assert s1[a] < 0.2 * s0[a], "an unused attractor does not decay"
        assert (s1 > 0.3).sum() == 3, "each new input should own one attractor"
        m_a = h._split(st)[2][0]
        # it moves only by its (softmax ~ e^-10) share of the activation
        assert torch.allclose(m_a[a], eye[0], atol=1e-3), "an unused attractor moved"


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_one_clear_sentence():
    m, _ = model("tiny-gpt2")
    with pytest.raises(ValueError, match="unknown baseline kind 'lstm'"):
        make("lstm", m)
    with pytest.raises(ValueError, match="takes no options"):
        make("prefix", m, SMALL, cell="gru")
    with pytest.raises(ValueError, match="recurrent cell must be 'esn' or 'gru'"):
        make("recurrent", m, SMALL, cell="lstm")
    with pytest.raises(ValueError, match="decay must be a number in"):
        AttractorConfig(decay=1.5)
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        make("additive", m, InjectionConfig(layer=7))
    with make("attractor", m, SMALL) as h:
        with pytest.raises(ValueError, match="already carries a reservoir"):
            make("prefix", m, SMALL)
        with pytest.raises(ValueError, match=rf"shape \(batch, {h.state_dim}\)"):
            h.state = torch.zeros(1, 3)


def test_prefix_reads_real_token_embeddings_from_an_empty_state():
    """The readout's bias starts at M vocabulary embeddings: a zero prefix (all-zero residual
    stream, whose RMSNorm backward overflowed to NaN on smollm2) is impossible at init."""
    m, _ = model("tiny-llama", "eager")
    emb = m.get_input_embeddings().weight
    with make("prefix", m, SMALL) as h, torch.no_grad():
        pre = h.readout(torch.zeros(2, SMALL.reservoir.units))  # (2, M, d)
    assert pre.shape == (2, SMALL.n_slots, emb.shape[1])
    rms = pre.pow(2).mean(-1).sqrt()
    assert bool((rms > 0.1 * emb.pow(2).mean().sqrt()).all()), rms  # never a zero prefix
    # each prefix row is one of the vocabulary's embeddings
    dist = (pre[0][:, None, :] - emb[None]).abs().amax(-1).min(1).values  # (M,)
    assert float(dist.detach().max()) < 1e-5, dist


def test_prefix_gradient_is_finite_through_a_deep_stack():
    """An open gate on a deep model: the readout's gradient must stay finite (it was NaN)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=24,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                      initializer_range=0.5)  # weights large enough to amplify like smollm2's  # fmt: skip
    m = LlamaForCausalLM(cfg).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    inj = InjectionConfig(reservoir=ReservoirConfig(units=16, seed=1), n_slots=2, layer=20)
    with make("prefix", m, inj) as h:
        h.set_gate(0.5)
        h.readout.requires_grad_(True)
        logits = m(input_ids=torch.arange(1, 9)[None]).logits
        logits[0, -1].logsumexp(0).backward()
        grads = [p.grad for p in h.trainable_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
