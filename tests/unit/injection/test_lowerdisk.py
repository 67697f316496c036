"""ran.injection.lowerdisk: the lower layers' outputs on disk, shared by processes, change no bit."""

from __future__ import annotations

import torch

from ran.injection import lowercache as LC
from ran.injection import lowerdisk as LD
from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.mechanisms.registry import make
from ran.tasks.episodes import EpisodeRunner
from ran.tasks.probes import make_probe

EPISODES = make_probe("secret_word", k=4, n_train=8, n_val=8, n_test=8, seed=2).splits()["test"]


def _scores(monkeypatch, mb: str):
    monkeypatch.setenv("RAN_LOWER_CACHE_MB", mb)
    LC.clear()  # a fresh process: nothing in memory
    model, tok = load_model("tiny-llama", seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    h = make("reservoir", model, InjectionConfig(n_slots=4, gate_init=0.8, seed=1))
    with torch.no_grad():
        return EpisodeRunner(h, tok).run(EPISODES[:6])


def test_disk_tier_serves_another_process_bit_identically(tmp_path, monkeypatch):
    monkeypatch.delenv(LD.ENV, raising=False)
    plain = _scores(monkeypatch, "0")
    monkeypatch.setenv(LD.ENV, str(tmp_path))
    LD.clear_stats()
    first = _scores(monkeypatch, "64")  # computes and writes the write pass and the question
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert LD.STATS.writes == 2 and len(files) == 2 and LD.STATS.hits == 0
    assert files[0].parent.name.startswith("LlamaForCausalLM-L")  # model, layer, fingerprint
    again = _scores(monkeypatch, "64")  # memory emptied: both calls come from disk
    assert LD.STATS.hits == 2 and LC.STATS.hits == 2 and LD.STATS.writes == 2
    assert torch.equal(first, plain) and torch.equal(again, plain)


def test_disk_tier_off_and_budget(tmp_path, monkeypatch):
    for raw in ("", "0"):
        monkeypatch.setenv(LD.ENV, raw)
        assert LD.root() is None
    monkeypatch.setenv(LD.ENV, str(tmp_path))
    monkeypatch.setenv(LD.BUDGET_ENV, "0")
    LD.clear_stats()
    LD.save("g", "k" * 64, torch.ones(3))
    assert LD.STATS.writes == 0 and LD.load("g", "k" * 64) is None
    monkeypatch.setenv(LD.BUDGET_ENV, "1")
    LD.save("g", "k" * 64, torch.ones(3))
    assert torch.equal(LD.load("g", "k" * 64), torch.ones(3))
