"""Adapters on disk (ran.mechanisms.adapter): round trips, the config's fields, every error sentence."""

import dataclasses
import json

import pytest
import torch
from conftest import TINY_RUN

import ran
from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.mechanisms import adapter as A
from ran.mechanisms.attractor import AttractorConfig
from ran.mechanisms.registry import kinds, make
from ran.reservoir.config import ReservoirConfig
from ran.training import train as T
from ran.util.configio import updated
from ran.util.results import Outputs

SMALL = InjectionConfig(n_slots=2, reservoir=ReservoirConfig(units=32, seed=3), gate_init=1.0)
WRITE, QUESTION = "The secret word is apple.", "The secret word was"


def two_pass_logits(model, tok, handle) -> torch.Tensor:
    """Logits of the question pass of a two-pass episode (fresh state, separate contexts)."""
    handle.reset_state()
    with torch.no_grad():
        model(**tok([WRITE], return_tensors="pt"))
        return model(**tok([QUESTION], return_tensors="pt")).logits


def perturb(handle, scale=0.2):
    """A 'trained' handle: every trainable tensor moved off its initialisation."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in handle.trainable_parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen).to(p.dtype))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step tiny-llama run (LoRA on), saved as an adapter."""
    root = tmp_path_factory.mktemp("trained")
    cfg = updated(
        T.TrainConfig(**TINY_RUN), injection={"reservoir": ReservoirConfig(units=64)}, lora_r=2
    )
    res = T.train(cfg, Outputs("smoke", root=root), progress=False)
    folder = res.handle.save_pretrained(root / "adapter", train_config=cfg)
    return res, cfg, folder


def test_round_trip_trained_llama_with_lora(trained):
    res, cfg, folder = trained
    assert res.history["step"] == [1, 2]
    model, tok = load_model("tiny-llama")
    handle = ran.from_pretrained(model, folder)
    try:
        want = T._named_trainable(res.model, res.handle)
        got = T._named_trainable(model, handle)
        assert list(got) == list(want) and any(n.startswith("lora.") for n in got)
        assert all(torch.equal(got[n], want[n]) for n in want)
        assert torch.equal(
            two_pass_logits(res.model, res.tokenizer, res.handle),
            two_pass_logits(model, tok, handle),
        )
    finally:
        handle.remove()


@pytest.mark.parametrize("kind", kinds())
def test_round_trip_every_kind_on_gpt2(kind, tmp_path):
    acfg = AttractorConfig(gate=0.7, burn_in=0, threshold=0.0)
    extra = {"attractor": acfg} if kind == "attractor" else {}
    cfg = SMALL if kind != "attractor" else InjectionConfig(reservoir=SMALL.reservoir)
    cfg = dataclasses.replace(cfg, query_gate=kind == "reservoir")
    model, tok = load_model("tiny-gpt2")
    handle = make(kind, model, cfg, **extra)
    perturb(handle)
    handle.save_pretrained(tmp_path)
    fresh, _ = load_model("tiny-gpt2")
    with torch.no_grad():
        base = fresh(**tok([QUESTION], return_tensors="pt")).logits
    loaded = ran.from_pretrained(fresh, tmp_path)
    assert type(loaded) is type(handle) and loaded.config == handle.config
    got = two_pass_logits(fresh, tok, loaded)
    assert torch.equal(two_pass_logits(model, tok, handle), got)
    assert not torch.allclose(got, base)  # the loaded memory changes the question pass
    if kind == "attractor":
        assert loaded.acfg == acfg
    loaded.remove()
    handle.remove()


def test_config_json_holds_every_field(trained):
    _, cfg, folder = trained
    doc = json.loads((folder / A.CONFIG_NAME).read_text())
    assert doc["format"] == "ran-adapter" and doc["format_version"] == A.FORMAT_VERSION
    assert doc["ran_version"] == ran.__version__ and doc["kind"] == "reservoir"
    assert doc["injection"] == json.loads(json.dumps(dataclasses.asdict(cfg.injection_config())))
    assert doc["injection"]["reservoir"]["units"] == 64
    assert doc["base_model_name_or_path"] == "tiny-llama"
    assert doc["base_model"]["name"] == "tiny-llama"
    assert doc["base_model"]["shape"] == {
        "num_hidden_layers": 4,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 259,
    }
    digest = doc["reservoir_digest"]
    assert len(digest["sha256"]) == 64 and digest["tensors"] == ["W", "W_in", "b"]
    assert doc["lora"]["r"] == 2 and sorted(doc["lora"]["target_modules"]) == ["q_proj", "v_proj"]
    names = doc["weights"]["names"]
    assert names[0] == "ran.0" and any(n.startswith("lora.") for n in names)
    assert doc["training"]["hash"] == cfg.config_hash()
    assert doc["training"]["probe"] == "secret_word"
    assert doc["training"]["probe_params"] == cfg.probe_params
    assert T.TrainConfig.from_dict(doc["training"]["config"]).config_hash() == cfg.config_hash()
    from safetensors.torch import load_file

    assert sorted(load_file(str(folder / A.WEIGHTS_NAME))) == sorted(names)


# ----------------------------------------------------------------------------- errors
@pytest.fixture()
def saved(tmp_path):
    """A small reservoir adapter of tiny-llama in a fresh folder."""
    model, _ = load_model("tiny-llama")
    handle = make("reservoir", model, SMALL)
    perturb(handle)
    folder = handle.save_pretrained(tmp_path / "ad")
    handle.remove()
    return folder


def _edit_config(folder, fn):
    path = folder / A.CONFIG_NAME
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _assert_untouched(model):
    assert getattr(model, "_ran_handle", None) is None


def test_shape_mismatch_into_gpt2(saved):
    model, _ = load_model("tiny-gpt2")
    msg = (
        "the adapter was trained on tiny-llama with num_key_value_heads = 2, "
        "but this model has num_key_value_heads = 4."
    )
    with pytest.raises(A.AdapterError) as err:
        ran.from_pretrained(model, saved)
    assert str(err.value) == msg
    _assert_untouched(model)


def test_shape_mismatch_other_hidden_size(saved):
    from transformers import AutoConfig, AutoModelForCausalLM

    from ran.injection.models import _TINY, TINY_VOCAB

    spec = dict(_TINY["tiny-llama"]) | {"hidden_size": 32}
    conf = AutoConfig.for_model(spec.pop("model_type"), vocab_size=TINY_VOCAB, **spec)
    model = AutoModelForCausalLM.from_config(conf, attn_implementation="sdpa")
    with pytest.raises(A.AdapterError) as err:
        ran.from_pretrained(model, saved)
    assert str(err.value) == (
        "the adapter was trained on tiny-llama with hidden_size = 64, "
        "but this model has hidden_size = 32."
    )


def test_newer_format_version(saved):
    _edit_config(saved, lambda d: d.update(format_version=A.FORMAT_VERSION + 1))
    with pytest.raises(A.AdapterError) as err:
        ran.from_pretrained(load_model("tiny-llama")[0], saved)
    assert str(err.value) == (
        f"{saved / A.CONFIG_NAME} has adapter format version {A.FORMAT_VERSION + 1}, newer than "
        f"the version {A.FORMAT_VERSION} that ran {ran.__version__} reads; upgrade ran to load it."
    )


@pytest.mark.parametrize("name", [A.CONFIG_NAME, A.WEIGHTS_NAME])
def test_missing_file(saved, name):
    (saved / name).unlink()
    with pytest.raises(A.AdapterError, match=rf"^{saved / name} is missing; "):
        ran.from_pretrained(load_model("tiny-llama")[0], saved)


def test_corrupt_files(saved):
    weights = saved / A.WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    model, _ = load_model("tiny-llama")
    with pytest.raises(A.AdapterError) as err:
        ran.from_pretrained(model, saved)
    assert str(err.value) == (
        f"{weights} is corrupt: its SHA-256 differs from the one in {A.CONFIG_NAME}."
    )
    _assert_untouched(model)
    weights.write_bytes(b"not a safetensors file")  # consistent digest, unreadable bytes
    _edit_config(saved, lambda d: d["weights"].update(sha256=A._sha256_file(weights)))
    with pytest.raises(A.AdapterError, match=r"is not a readable safetensors file\.$"):
        ran.from_pretrained(model, saved)
    (saved / A.CONFIG_NAME).write_text("{not json")
    with pytest.raises(A.AdapterError, match=rf"^{saved / A.CONFIG_NAME} is not readable JSON"):
        ran.from_pretrained(model, saved)


def test_digest_mismatch(saved):
    _edit_config(saved, lambda d: d["reservoir_digest"].update(sha256="0" * 64))
    model, _ = load_model("tiny-llama")
    with pytest.raises(A.AdapterError) as err:
        ran.from_pretrained(model, saved)
    assert str(err.value) == (
        "the reservoir rebuilt from seed 3 does not match the adapter's digest; "
        "the generator changed."
    )
    _assert_untouched(model)  # the failed load removed its injection


def test_unknown_injection_field(saved):
    _edit_config(saved, lambda d: d["injection"].update(slotz=3))
    with pytest.raises(A.AdapterError, match=r"unknown field 'slotz'"):
        ran.from_pretrained(load_model("tiny-llama")[0], saved)


def test_digest_is_dtype_aware_and_stable():
    model, _ = load_model("tiny-llama")
    handle = make("reservoir", model, SMALL)
    d32 = A.reservoir_digest(handle)
    assert A.reservoir_digest(handle, torch.float32) == d32
    assert A.reservoir_digest(handle, torch.float64)["sha256"] != d32["sha256"]
    handle.remove()
    other = make("reservoir", model, InjectionConfig(reservoir=ReservoirConfig(units=32, seed=4)))
    assert A.reservoir_digest(other)["sha256"] != d32["sha256"]
    other.remove()


def test_refuses_an_injected_model(saved):
    model, _ = load_model("tiny-llama")
    handle = make("reservoir", model, SMALL)
    with pytest.raises(A.AdapterError, match=r"^this model already carries a RAN injection"):
        ran.from_pretrained(model, saved)
    handle.remove()
    ran.from_pretrained(model, saved).remove()


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_round_trip_decoded_readout(name, tmp_path):
    """The decoded read side (fixed maps rebuilt from W_in and W_O, learned key/bias/gain
    and per-token write gates saved) loads to the same two-pass logits."""
    cfg = dataclasses.replace(
        SMALL, n_slots=1, readout="decoded", drive_source="input", pooling="token",
        write_gate=True, query_gate=True,
    )  # fmt: skip
    model, tok = load_model(name)
    handle = make("reservoir", model, cfg)
    perturb(handle)
    handle.save_pretrained(tmp_path)
    fresh, _ = load_model(name)
    loaded = ran.from_pretrained(fresh, tmp_path)
    assert loaded.config == handle.config
    assert torch.equal(two_pass_logits(model, tok, handle), two_pass_logits(fresh, tok, loaded))
