"""The decoded read side (ran.slots_decoded): exact at a closed gate, decodes what was written,
per-query-head slots with a logit bias, calibration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import cached_model

from ran.injection import slots as S
from ran.injection.config import InjectionConfig
from ran.injection.decoded import DecodedReadout, calibrate, residual_norm
from ran.mechanisms.reservoir_slots import inject
from ran.reservoir import ReservoirConfig
from ran.tasks.scoring import batch_encode

TEXT = "Some text first. The secret word is apple. Then more text after it."


def _cfg(units=256, lr=0.05, **kw):
    res = ReservoirConfig(units=units, lr=lr, input_scaling=0.05, seed=2)
    return InjectionConfig(
        reservoir=res, n_slots=1, drive_source="input", readout="decoded", **kw
    )  # fmt: skip


def test_decoded_needs_the_layer_input_as_drive():
    with pytest.raises(ValueError, match="drive_source='input'"):
        InjectionConfig(readout="decoded")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_closed_gate_is_bit_exact_with_a_carried_state(name):
    model, tok = cached_model(name)
    ids, mask = batch_encode(tok, [TEXT, "A shorter one."])
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    with inject(model, _cfg()) as h:
        h.state = torch.randn(2, 256, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out, ref)


def test_one_write_decodes_to_the_written_drive():
    """Linear regime (small input scaling and leak), N >> d: xhat ~ gamma^-1 u, up to scale."""
    model, _ = cached_model("tiny-llama")
    with inject(model, _cfg(pooling="mean")) as h:
        d = h.input_dim
        u = torch.randn(3, d, generator=torch.Generator().manual_seed(1))
        h._advance(None, S.normalize_drive(u))
        xhat = h.slots.decoded(h.state)
        gamma = h.model.model.layers[h.layer].input_layernorm.weight.detach()
        cos = F.cosine_similarity(xhat, u / gamma, dim=-1)
        assert cos.min() > 0.99, cos
        other = F.cosine_similarity(xhat, (u / gamma).roll(1, 0), dim=-1)
        assert other.abs().max() < 0.5  # it is this drive, not any drive


def test_per_head_slots_with_a_bias_match_a_manual_softmax():
    g = torch.Generator().manual_seed(3)
    b, h, n_kv, q, kv, hd = 2, 4, 2, 3, 5, 8
    query = torch.randn(b, h, q, hd, generator=g)
    key, value = (
        torch.randn(b, n_kv, kv, hd, generator=g),
        torch.randn(b, n_kv, kv, hd, generator=g),
    )
    sk, sv = torch.randn(b, h, 1, hd, generator=g), torch.randn(b, h, 1, hd, generator=g)
    bias = torch.randn(h, generator=g) * 3
    out = S.slot_attention(query, key, value, sk, sv, None, None, slot_bias=bias)  # (B, Q, H, hd)
    kx = key.repeat_interleave(h // n_kv, 1)
    vx = value.repeat_interleave(h // n_kv, 1)
    logits = torch.cat([query @ sk.transpose(-1, -2), query @ kx.transpose(-1, -2)], -1)
    logits = logits / math.sqrt(hd)
    logits[..., :1] += bias[None, :, None, None]
    causal = torch.ones(q, kv, dtype=torch.bool).tril()
    logits[..., 1:] = logits[..., 1:].masked_fill(~causal, float("-inf"))
    ref = logits.softmax(-1) @ torch.cat([sv, vx], 2)
    torch.testing.assert_close(out, ref.transpose(1, 2), rtol=1e-5, atol=1e-5)
    mass = S.slot_mass(query, key, sk, None, None, bias)
    torch.testing.assert_close(mass, logits.softmax(-1)[..., 0], rtol=1e-5, atol=1e-6)


def test_an_open_slot_writes_the_gained_direction_through_o_proj():
    """Value = pinv(W_O) (a xhat): o_proj of the slot output is a xhat (square W_O)."""
    model, _ = cached_model("tiny-llama")
    with inject(model, _cfg()) as h:
        r = torch.randn(2, 256, generator=torch.Generator().manual_seed(4)) * 0.01
        _, v = h.slots(r)  # (B, H, 1, hd)
        wo = h._attn.o_proj.weight
        back = v.squeeze(2).reshape(2, -1) @ wo.T
        x = h.slots.decoded(r)
        want = x / x.norm(dim=-1, keepdim=True) * h.slots.log_gain.exp()
        torch.testing.assert_close(back, want, rtol=1e-3, atol=1e-4)


def test_calibrate_sets_the_gain_from_the_median_residual_norm():
    model, tok = cached_model("tiny-llama")
    with inject(model, _cfg()) as h:
        s0 = torch.zeros(1, 256)
        h.state = s0
        norm = residual_norm(h, tok, [TEXT])
        assert torch.equal(h.state, s0)  # calibration leaves the state as it was
        gain = calibrate(h, tok, [TEXT], multiple=3.0)
        assert gain == pytest.approx(3 * norm)
        assert h.slots.log_gain.exp().item() == pytest.approx(gain, rel=1e-5)
    with inject(model, InjectionConfig()) as h:  # other readouts: a no-op
        assert calibrate(h, tok, [TEXT]) is None


def test_decoded_readout_parameters_are_few():
    """What learns on the read side is word-independent: key, bias, gain, gates."""
    ro = DecodedReadout(torch.randn(64, 16), 0.1, torch.randn(16, 16), None, 4, 4)
    assert sum(p.numel() for p in ro.parameters()) == 4 * 4 + 4 + 1 + 4
