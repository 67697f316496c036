"""Reservoir injection: bit-exact at init and after remove(), and it carries state.

The parity matrix compares the injected model with the untouched one with
``torch.equal`` (no tolerance) over {tiny-gpt2, tiny-qwen2, tiny-llama,
smollm2-135m} x {eager, sdpa} x {no padding, left padding} x {forward logits,
greedy generate of 20 tokens with the KV cache}. The behaviour tests open the
gate and check that the state written by one pass changes the next.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest
import torch
from conftest import cached_model

from ran.injection.config import InjectionConfig
from ran.mechanisms.reservoir_slots import inject
from ran.reservoir.config import ReservoirConfig

PROMPTS = ["The quick brown fox jumps over the lazy dog.", "To be"]
SMALL = InjectionConfig(reservoir=ReservoirConfig(units=64, seed=1), n_slots=4, readout_scale=3.0)


model = cached_model  # each (model, implementation) loaded once per module


def batch(tok, padded: bool):
    return tok(PROMPTS if padded else PROMPTS[:1], return_tensors="pt", padding=True)


def run(m, enc, kind: str):
    with torch.no_grad():
        if kind == "forward":
            return m(**enc).logits
        return m.generate(**enc, max_new_tokens=20, min_new_tokens=20, do_sample=False)


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("kind", ["forward", "generate"])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize(
    "name",
    ["tiny-gpt2", "tiny-qwen2", "tiny-llama", pytest.param("smollm2-135m", marks=pytest.mark.slow)],
)
def test_parity_at_init_and_after_remove(name, impl, padded, kind):
    m, tok = model(name, impl)
    enc = batch(tok, padded)
    ref = run(m, enc, kind)
    with inject(m, InjectionConfig()) as h:
        got = run(m, enc, kind)
        assert h.state is not None and h.state.shape[0] == enc["input_ids"].shape[0]
    after = run(m, enc, kind)
    assert torch.equal(got, ref), f"injected {name}/{impl} differs: {(got - ref).abs().max()}"
    assert torch.equal(after, ref), f"{name}/{impl} differs after remove()"


def test_parity_training_mode_graph():
    """With gradients enabled (the blend is in the autograd graph) logits stay exact."""
    m, tok = model("tiny-qwen2", "eager")
    enc = batch(tok, True)
    ref = m(**enc).logits
    with inject(m, SMALL) as h:
        got = m(**enc).logits
        assert h.last_drive.requires_grad
    assert torch.equal(got, ref)


# --------------------------------------------------------------------------- behaviour
def two_pass(m, tok, h, first: str, second: str = "What comes next?", reset=False):
    with torch.no_grad():
        m(**tok([first], return_tensors="pt"))
        if reset:
            h.reset_state()
        return m(**tok([second], return_tensors="pt")).logits


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_state_carries_across_passes_and_reset_removes_it(name):
    m, tok = model(name)
    with inject(m, SMALL) as h:
        h.set_gate(2.0)
        a = two_pass(m, tok, h, "Once upon a time")
        h.reset_state()
        b = two_pass(m, tok, h, "Completely different words!")
        assert not torch.allclose(a, b), "pass-2 logits ignore what pass 1 wrote"
        h.reset_state()
        c = two_pass(m, tok, h, "Once upon a time", reset=True)
        h.reset_state()
        d = two_pass(m, tok, h, "Completely different words!", reset=True)
        assert torch.equal(c, d)


def test_eager_and_sdpa_agree_with_gate_open_and_padding_is_respected():
    """The slot mask is right under both mask formats (float eager, bool/None sdpa)."""
    r0 = torch.randn(2, SMALL.reservoir.units, generator=torch.Generator().manual_seed(0)).tanh()
    out = {}
    for impl in ("eager", "sdpa"):
        m, tok = model("tiny-llama", impl)
        enc = batch(tok, True)
        single = tok(PROMPTS[1:], return_tensors="pt")
        n = single["input_ids"].shape[1]
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        with inject(m, SMALL) as h, torch.no_grad():
            h.set_gate(2.0)
            h.state = r0
            out[impl] = m(**enc, position_ids=pos).logits
            r_pad = h.state
            h.state = r0[1:]
            alone = m(**single).logits
            assert torch.allclose(out[impl][1, -n:], alone[0], atol=1e-5)
            assert torch.allclose(r_pad[1], h.state[0], atol=1e-5)  # drive at last real token
    real = enc["attention_mask"].bool()
    assert torch.allclose(out["eager"][real], out["sdpa"][real], atol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_kv_cache_decoding_matches_full_forward_with_gate_open(impl):
    m, tok = model("tiny-qwen2", impl)
    enc = batch(tok, True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    r0 = torch.rand(2, SMALL.reservoir.units, generator=torch.Generator().manual_seed(1)) - 0.5
    with inject(m, SMALL) as h, torch.no_grad():
        h.set_gate(1.5)
        h.state = r0
        full = m(**enc).logits[:, -1]
        h.state = r0
        past = m(input_ids=ids[:, :-1], attention_mask=am[:, :-1], use_cache=True).past_key_values
        h.state = r0
        step = m(input_ids=ids[:, -1:], attention_mask=am, past_key_values=past).logits[:, -1]
    assert torch.allclose(step, full, atol=1e-5)


def test_write_only_advances_like_a_full_pass_and_idle_moves_the_state():
    m, tok = model("tiny-gpt2")
    enc = batch(tok, True)
    with inject(m, SMALL) as h, torch.no_grad():
        h.set_gate(1.0)
        m(**enc)
        full = h.state
        h.reset_state()
        written = h.write_only(enc["input_ids"], enc["attention_mask"])
        assert torch.equal(written, full)
        before = h.state
        h.idle(3)
        assert not torch.equal(before, h.state) and h.state.shape == before.shape


def test_generate_advance_steps_once_per_generate_call():
    m, tok = model("tiny-llama")
    enc = batch(tok, True)
    cfg = InjectionConfig(reservoir=SMALL.reservoir, n_slots=4, advance="generate")
    with inject(m, cfg) as h, torch.no_grad():
        h.set_gate(1.0)
        m.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        r1 = h.state
        expected = h.reservoir.step(h.reservoir.zero_state(2), h.last_drive)
        assert torch.equal(r1, expected)  # one step from zeros with the last pass's drive
        m.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        assert not torch.equal(h.state, r1)


def test_gradients_reach_readout_gate_and_earlier_drive_not_reservoir():
    m, tok = model("tiny-llama", "eager")
    with inject(m, SMALL) as h:
        h.set_gate(0.5)
        m(**tok(["First pass."], return_tensors="pt"))
        u1 = h.last_drive
        u1.retain_grad()
        loss = m(**tok(["Second pass"], return_tensors="pt")).logits.pow(2).mean()
        loss.backward()
        assert h.slots.proj.weight.grad.abs().sum() > 0
        assert h.slots.gate.grad.abs().sum() > 0
        assert u1.grad is not None and u1.grad.abs().sum() > 0
        assert h.reservoir.W.grad is None and h.reservoir.W_in.grad is None
        assert {id(p) for p in h.trainable_parameters()} == {
            id(h.slots.proj.weight),
            id(h.slots.proj.bias),
            id(h.slots.gate),
        }
        h.detach_state()
        assert not h.state.requires_grad
    m.zero_grad(set_to_none=True)


def test_state_survives_a_new_process(tmp_path):
    m, tok = model("tiny-llama")
    state_file, logits_file = tmp_path / "state.safetensors", tmp_path / "logits.pt"
    with inject(m, SMALL) as h, torch.no_grad():
        h.set_gate(1.0)
        m(**tok(["Remember this."], return_tensors="pt"))
        h.save_state(state_file)
        torch.save(m(**tok(["And now?"], return_tensors="pt")).logits, logits_file)
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from ran.injection.models import load_model
        from ran.reservoir.config import ReservoirConfig
        from ran.injection.config import InjectionConfig
        from ran.mechanisms.reservoir_slots import inject
        m, tok = load_model("tiny-llama")
        cfg = InjectionConfig(reservoir=ReservoirConfig(units=64, seed=1), n_slots=4,
                              readout_scale=3.0)
        h = inject(m, cfg)
        h.set_gate(1.0)
        h.load_state({str(state_file)!r})
        with torch.no_grad():
            got = m(**tok(["And now?"], return_tensors="pt")).logits
        assert torch.equal(got, torch.load({str(logits_file)!r})), "continuation differs"
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_one_clear_sentence(tmp_path):
    m, tok = model("tiny-gpt2")
    with pytest.raises(ValueError, match=r"layer 9 is out of range; the model has layers 0\.\.3"):
        inject(m, InjectionConfig(layer=9))
    fake = types.SimpleNamespace(config=types.SimpleNamespace(model_type="bert"))
    with pytest.raises(ValueError, match="unsupported architecture 'bert'.*gpt2, qwen2, llama"):
        inject(fake, InjectionConfig())
    with pytest.raises(ValueError, match="pooling must be one of last, mean"):
        InjectionConfig(pooling="max")
    with inject(m, SMALL) as h:
        with pytest.raises(ValueError, match="already carries a reservoir"):
            inject(m, SMALL)
        with pytest.raises(ValueError, match="contains NaN"):
            h.state = torch.full((1, 64), float("nan"))
        with pytest.raises(ValueError, match=r"shape \(batch, 64\)"):
            h.state = torch.zeros(1, 65)
        with torch.no_grad():
            m(**batch(tok, True))
            with pytest.raises(ValueError, match="batch size changed from 2 to 1"):
                m(**batch(tok, False))
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(b"not a safetensors file")
        with pytest.raises(ValueError, match="is not a readable RAN state file"):
            h.load_state(bad)
        with pytest.raises(ValueError, match="is not a readable RAN state file"):
            h.load_state(tmp_path / "missing.safetensors")
        good = h.save_state(tmp_path / "good.safetensors")
    other = InjectionConfig(reservoir=ReservoirConfig(units=64, seed=2), n_slots=4)
    with inject(m, other) as h2:
        with pytest.raises(ValueError, match="saved from a different reservoir"):
            h2.load_state(good)
        from safetensors.torch import save_file

        nan_file = tmp_path / "nan.safetensors"
        meta = {"format": "ran-state-v1", "reservoir_hash": h2._state_hash()}
        save_file({"state": torch.full((1, 64), float("nan"))}, str(nan_file), metadata=meta)
        with pytest.raises(ValueError, match="contains NaN"):
            h2.load_state(nan_file)


def test_remove_restores_the_model_objects():
    m, tok = model("tiny-qwen2")
    attn = m.model.layers[1].self_attn
    config, state_keys = attn.config, set(m.state_dict())
    h = inject(m, InjectionConfig(layer=1))
    assert attn.config is not config and attn.config._attn_implementation == "ran"
    assert m.config._attn_implementation == "sdpa"  # other layers and the masks untouched
    assert set(m.state_dict()) == state_keys  # the readout/gate live on the handle
    h.remove()
    h.remove()  # idempotent
    assert attn.config is config and "generate" not in m.__dict__
    assert not hasattr(m, "_ran_handle") or m._ran_handle is None


# --------------------------------------------------------------------------- query gate
def _two_pass_logits(m, tok, cfg, gate):
    with inject(m, cfg) as h:
        h.set_gate(gate)
        with torch.no_grad():
            m(**tok(["First pass."], return_tensors="pt"))
            return m(**tok(PROMPTS[:1], return_tensors="pt")).logits, h


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_query_gate_is_exact_when_closed_and_halves_the_blend_at_init(name):
    import dataclasses
    import math

    m, tok = model(name, "eager")
    qcfg = dataclasses.replace(SMALL, query_gate=True)
    with torch.no_grad():
        plain = m(**tok(PROMPTS[:1], return_tensors="pt")).logits
    closed, _ = _two_pass_logits(m, tok, qcfg, 0.0)
    assert torch.equal(closed, plain)
    # at init the query gate is sigmoid(0) = 1/2 for every token and head: the same
    # output as the plain gate with tanh(g') = tanh(g) / 2
    g = 1.0
    with_q, h = _two_pass_logits(m, tok, qcfg, g)
    without, _ = _two_pass_logits(m, tok, SMALL, math.atanh(math.tanh(g) / 2))
    assert not torch.allclose(with_q, plain, atol=1e-4)
    torch.testing.assert_close(with_q, without, rtol=1e-4, atol=1e-5)
    assert h.slots.query_gate.weight.shape == (m.config.num_attention_heads, m.config.hidden_size)


def test_query_gate_learns_per_token_and_can_shut_the_memory():
    import dataclasses

    m, tok = model("tiny-llama", "eager")
    qcfg = dataclasses.replace(SMALL, query_gate=True)
    with torch.no_grad():
        plain = m(**tok(PROMPTS[:1], return_tensors="pt")).logits
    with inject(m, qcfg) as h:
        h.set_gate(1.0)
        m(**tok(["First pass."], return_tensors="pt"))
        m(**tok(PROMPTS[:1], return_tensors="pt")).logits.pow(2).mean().backward()
        assert h.slots.query_gate.weight.grad.abs().sum() > 0  # depends on the token
        with torch.no_grad():
            h.slots.query_gate.bias.fill_(-60.0)  # sigmoid ~ 1e-26: shut for every token
            shut = m(**tok(PROMPTS[:1], return_tensors="pt")).logits
        torch.testing.assert_close(shut, plain, rtol=0, atol=1e-5)
    m.zero_grad(set_to_none=True)


def test_query_gate_is_refused_where_there_are_no_slots():
    from ran.mechanisms.registry import make

    m, _ = model("tiny-llama", "eager")
    cfg = InjectionConfig(reservoir=ReservoirConfig(units=16), query_gate=True)
    for kind in ("persistent", "additive", "prefix"):
        with pytest.raises(ValueError, match="query_gate"):
            make(kind, m, cfg)
    assert getattr(m, "_ran_handle", None) is None


@pytest.mark.parametrize("query_gate", [True, False])
def test_read_gate_is_recorded_per_token_only_while_asked(query_gate):
    import dataclasses

    m, tok = model("tiny-llama", "eager")
    enc = tok(PROMPTS[:1], return_tensors="pt")
    with inject(m, dataclasses.replace(SMALL, query_gate=query_gate)) as h:
        with torch.no_grad():
            h.slots.gate.copy_(torch.linspace(-1.0, 2.0, h.slots.gate.numel()))
            if query_gate:  # a query gate that differs per token and head
                gen = torch.Generator().manual_seed(0)
                w = h.slots.query_gate.weight
                w.copy_(torch.randn(w.shape, generator=gen))
        seen = []
        hook = h._attn.register_forward_pre_hook(
            lambda mod, args, kw: seen.append(kw["hidden_states"]), with_kwargs=True
        )
        try:
            with torch.no_grad():
                m(**enc)
                assert h.read_gate is None  # not recording
                h.record_read_gate = True
                m(**enc)
        finally:
            hook.remove()
        tanh_g = torch.tanh(h.slots.gate.detach())
        if query_gate:
            want = (torch.sigmoid(h.slots.query_gate(seen[-1])) * tanh_g).mean(-1)
            assert want.std() > 0.01  # the record is per token, not one number
        else:
            want = tanh_g.mean().expand(1, enc.input_ids.shape[1])
        assert h.read_gate.shape == (1, enc.input_ids.shape[1])
        assert torch.equal(h.read_gate, want.float())
