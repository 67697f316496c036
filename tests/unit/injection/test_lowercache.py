"""ran.injection.lowercache: reusing layers 0..L-1 changes no bit of any output, and is really used."""

from __future__ import annotations

import pytest
import torch

from ran.evaluation import quality as h1
from ran.injection import lowercache as LC
from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.mechanisms.registry import make
from ran.tasks.episodes import CONTROLS, EpisodeRunner, evaluate
from ran.tasks.probes import make_probe

EPISODES = make_probe("secret_word", k=4, n_train=8, n_val=8, n_test=12, seed=3).splits()["test"]


@pytest.fixture(autouse=True)
def fresh_store(monkeypatch):
    monkeypatch.setenv("RAN_LOWER_CACHE_MB", "64")
    LC.clear()
    yield
    LC.clear()


def _handle(name: str, kind: str = "reservoir"):
    model, tok = load_model(name, seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    h = make(kind, model, InjectionConfig(n_slots=4, gate_init=0.8, seed=1))
    return model, tok, h


def _scores_and_grads(h, tok, off: bool, monkeypatch):
    monkeypatch.setenv("RAN_LOWER_CACHE_MB", "0" if off else "64")
    params = h.trainable_parameters()
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    scores = EpisodeRunner(h, tok).run(EPISODES[:6])
    scores.logsumexp(-1).sum().backward()
    return scores.detach(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-qwen2"])
@pytest.mark.parametrize("kind", ["reservoir", "additive", "recurrent"])
def test_reuse_is_bit_identical_in_scores_and_gradients(name, kind, monkeypatch):
    model, tok, h = _handle(name, kind)
    full = _scores_and_grads(h, tok, True, monkeypatch)
    assert LC.STATS.hits == LC.STATS.misses == 0  # off: nothing stored
    first = _scores_and_grads(h, tok, False, monkeypatch)
    assert LC.STATS.misses == 2 and LC.STATS.hits == 0  # the write pass and the question
    again = _scores_and_grads(h, tok, False, monkeypatch)
    assert LC.STATS.hits == 2  # both passes served from the store
    for other in (first, again):
        assert torch.equal(other[0], full[0])
        assert all(torch.equal(a, b) for a, b in zip(other[1], full[1], strict=True))
    # every control on identical episodes: one evaluation with reuse equals one without
    monkeypatch.setenv("RAN_LOWER_CACHE_MB", "0")
    plain = evaluate(h, tok, EPISODES, CONTROLS, 4)
    monkeypatch.setenv("RAN_LOWER_CACHE_MB", "64")
    assert evaluate(h, tok, EPISODES, CONTROLS, 4) == plain and LC.STATS.hits > 2


def test_store_is_shared_by_models_with_the_same_lower_weights(monkeypatch):
    _, tok, a = _handle("tiny-llama")
    _, _, b = _handle("tiny-llama", "persistent")  # another model object, same weights
    with torch.no_grad():
        EpisodeRunner(a, tok).run(EPISODES[:4])
        hits = LC.STATS.hits
        EpisodeRunner(b, tok).run(EPISODES[:4])
    assert LC.STATS.hits == hits + 2


def test_changed_lower_weight_is_never_served_stale():
    model, tok, h = _handle("tiny-llama")
    run = EpisodeRunner(h, tok)
    with torch.no_grad():
        run.run(EPISODES[:4])
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)  # in place: the fingerprint moves
        served = run.run(EPISODES[:4])
    assert LC.STATS.hits == 0
    LC.clear()
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAN_LOWER_CACHE_MB", "0")
        assert torch.equal(served, run.run(EPISODES[:4]))


def test_prefix_and_untouched_calls_are_never_served():
    _, tok, p = _handle("tiny-llama", "prefix")  # changes the input of every layer
    with torch.no_grad():
        EpisodeRunner(p, tok).run(EPISODES[:4])
        EpisodeRunner(p, tok).run(EPISODES[:4])
    assert LC.STATS.hits == LC.STATS.misses == LC.STATS.bypassed == 0
    model, tok, h = _handle("tiny-llama")
    h1.overhead(load_model("tiny-llama", seed=0)[0], model, 16, 2)  # timing: no reuse block
    h1.greedy_generate(model, tok, "To be", 3)
    assert LC.STATS.hits == LC.STATS.misses == 0


def test_calls_outside_the_served_form_run_in_full():
    model, tok, h = _handle("tiny-llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    with LC.reuse_lower(h), torch.no_grad():
        model(input_ids=ids, output_hidden_states=True)  # needs every layer's output
        model(inputs_embeds=model.get_input_embeddings()(ids))
    assert LC.STATS.bypassed == 2 and LC.STATS.hits == LC.STATS.misses == 0


def test_trainable_lower_weights_are_served_only_without_gradients():
    model, tok, h = _handle("tiny-llama")
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)  # as LoRA training would
    run = EpisodeRunner(h, tok)
    run.run(EPISODES[:4])
    run.run(EPISODES[:4])
    assert LC.STATS.hits == LC.STATS.misses == 0 and LC.STATS.bypassed == 4
    with torch.no_grad():
        run.run(EPISODES[:4])
        run.run(EPISODES[:4])
    assert LC.STATS.hits == 2


def test_budget_evicts_least_recently_used(monkeypatch):
    _, tok, h = _handle("tiny-llama")
    run = EpisodeRunner(h, tok)
    with torch.no_grad():
        run.run(EPISODES[:4])
    per_call = LC.stored_bytes() / 2
    monkeypatch.setenv("RAN_LOWER_CACHE_MB", str(3 * per_call / 2**20))
    LC.clear()
    with torch.no_grad():
        for i in range(0, 12, 4):
            run.run(EPISODES[i : i + 4])
    assert LC.STATS.evicted >= 3 and LC.stored_bytes() <= 3 * per_call
    monkeypatch.setenv("RAN_LOWER_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="RAN_LOWER_CACHE_MB"):
        LC.budget_bytes()
