"""Model registry: offline names load, tiny models are deterministic, unknown ids fail clearly."""

from __future__ import annotations

import pytest
import torch

from ran.injection.models import SMOLLM2, available_models, byte_tokenizer, load_model


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-qwen2", "tiny-llama"])
def test_tiny_models_are_deterministic_per_seed(name):
    a, tok = load_model(name, seed=3)
    b, _ = load_model(name, seed=3)
    c, _ = load_model(name, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not a.training
    enc = tok(["ab", "abcd"], return_tensors="pt", padding=True)
    assert enc["attention_mask"][0].tolist() == [0, 0, 1, 1]  # left padding
    with torch.no_grad():
        assert a(**enc).logits.shape == (2, 4, a.config.vocab_size)


def test_byte_tokenizer_round_trips_any_text():
    tok = byte_tokenizer()
    text = "Thou art — ça va? 日本"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


@pytest.mark.slow
def test_embedded_smollm2_loads_offline():
    model, tok = load_model(SMOLLM2, attn_implementation="eager")
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("llama", 30, 576)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (9, 3)
    assert cfg._attn_implementation == "eager" and tok.padding_side == "left"
    enc = tok(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])


def test_registry_lists_the_offline_names():
    assert available_models() == [SMOLLM2, "tiny-gpt2", "tiny-qwen2", "tiny-llama"]


def test_unknown_model_fails_with_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="cannot load model 'no-org/no-model' offline") as err:
        load_model("no-org/no-model")
    assert all(name in str(err.value) for name in available_models())
