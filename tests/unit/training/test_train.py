"""Training across passes: controls, learning, reproducibility, the run cache."""

import json

import pytest
import torch

from ran.injection.config import InjectionConfig
from ran.reservoir.config import ReservoirConfig
from ran.tasks import episodes
from ran.tasks import probes as P
from ran.tasks import scoring as S
from ran.training import train as T
from ran.util import stats
from ran.util.configio import updated
from ran.util.results import Outputs

# A K=4 recall config on tiny-llama that learns well above the reset control in seconds:
# pass 1 is the key alone (a random 4-layer model mixes a key inside a sentence into the
# last-token drive too weakly), keys have distinct first and last bytes.
RECALL = dict(k=4, keys=("dog", "cat", "owl", "bee"), write_templates=("{key}",))
FAST = dict(
    model_name="tiny-llama",
    injection=InjectionConfig(
        n_slots=4, reservoir=ReservoirConfig(units=64, sr=0.9, input_scaling=0.5), gate_init=0.5
    ),
    probe="secret_word",
    probe_params=dict(RECALL, n_train=512, n_val=32, n_test=64),
    steps=30,
    batch_size=16,
    learning_rate=3e-2,
    warmup_steps=5,
    eval_every=10,
)


def _fast(**changes) -> T.TrainConfig:
    """FAST with ``changes`` (those of its injection as a dict under ``injection``)."""
    return updated(T.TrainConfig(**FAST), **changes)


def _outputs(tmp_path, name="a"):
    return Outputs(profile="smoke", root=tmp_path / name)


def test_wilson_interval_known_values():
    lo, hi = stats.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert stats.wilson_interval(0, 20)[0] == 0.0 and stats.wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


def test_config_validation_and_stable_hash():
    a, b = T.TrainConfig(**FAST), T.TrainConfig(**FAST)
    assert a.config_hash() == b.config_hash()
    assert _fast(seed=1).config_hash() != a.config_hash()
    with pytest.raises(ValueError, match="batch_size"):
        T.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown probe"):
        T.TrainConfig(probe="nope")
    with pytest.raises(ValueError, match="scoring"):
        T.TrainConfig(scoring="best")
    assert T.TrainConfig(injection={"reservoir": {"units": 32}}).injection.reservoir.units == 32


def test_controls_run_on_identical_episodes(monkeypatch):
    cfg = T.TrainConfig(**FAST)
    model, tok, h = T._build(cfg)
    eps = cfg.make_probe().episodes("test")[:12]
    seen = {}
    orig = episodes.EpisodeRunner.question_scores

    def spy(self, episodes):
        seen.setdefault(current[0], []).extend(e.question for e in episodes)
        return orig(self, episodes)

    current = [None]
    monkeypatch.setattr(episodes.EpisodeRunner, "question_scores", spy)
    out = {}
    for c in episodes.CONTROLS:
        current[0] = c
        out[c] = episodes.evaluate(h, tok, eps, (c,), batch_size=4)[c]
    questions = [e.question for e in eps]
    for c in ("reservoir", "reset", "shuffled", "stateless"):
        assert seen[c] == questions and out[c]["n"] == len(eps)
    assert [q.endswith(e.question) for q, e in zip(seen["oracle"], eps, strict=True)] == [True] * 12
    assert all(o["chance"] == 0.25 for o in out.values())


def test_closed_gate_makes_every_state_control_the_base_model():
    cfg = _fast(injection={"gate_init": 0.0})
    model, tok, h = T._build(cfg)
    eps = cfg.make_probe().episodes("test")[:8]
    runner = episodes.EpisodeRunner(h, tok)
    with torch.no_grad():
        base = episodes._base_scores(runner, eps, oracle=False)
        for c in ("reservoir", "reset", "shuffled"):
            assert torch.equal(runner.run(eps, c), base)


def test_mixed_schedules_batch_like_single_episodes():
    cfg = _fast(probe="elapsed", probe_params=dict(k_max=3))
    model, tok, h = T._build(cfg)
    eps = cfg.make_probe().episodes("test")[:6]
    assert len({len(e.passes) for e in eps}) > 1
    runner = episodes.EpisodeRunner(h, tok)
    with torch.no_grad():
        together = runner.run(eps)
        alone = torch.cat([runner.run([e]) for e in eps])
    assert torch.allclose(together, alone, atol=1e-5)
    # Idle steps batch the same way.
    ep = P.Episode(("The secret word is apple.", "The secret word was"), (0, 3), (" a", " b"), 0)
    ep0 = P.Episode(ep.passes, (0, 0), ep.candidates, 0)
    with torch.no_grad():
        both = runner.run([ep, ep0])
        single = torch.cat([runner.run([ep]), runner.run([ep0])])
    assert torch.allclose(both, single, atol=1e-5) and not torch.allclose(both[0], both[1])


def test_write_passes_run_only_the_rows_whose_episode_has_started():
    cfg = _fast(probe="elapsed", probe_params=dict(k_max=3))
    model, tok, h = T._build(cfg)
    eps = cfg.make_probe().episodes("test")[:6]
    runner = episodes.EpisodeRunner(h, tok)
    seen, write_only = [], h.write_only
    h.write_only = lambda ids, mask=None: (seen.append(ids.shape[0]), write_only(ids, mask))[1]
    n_writes = sum(len(e.passes) - 1 for e in eps)  # every pass but the question
    with torch.no_grad():
        runner.run(eps)
    assert sum(seen) == n_writes < len(eps) * (max(len(e.passes) for e in eps) - 1)
    seen.clear()
    runner.write_all_rows = True  # the former way: every row run, the unstarted put back
    with torch.no_grad():
        every_row = runner.run(eps)
    assert sum(seen) == len(eps) * (max(len(e.passes) for e in eps) - 1)
    runner.write_all_rows = False
    with torch.no_grad():
        assert torch.allclose(runner.run(eps), every_row, atol=1e-5)
    # the gradient reaches the readout through the partial writes
    h.write_only = write_only
    loss = runner.run(eps).logsumexp(1).sum()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in h.trainable_parameters())


def test_trained_readout_beats_reset_control(tmp_path):
    res = T.train(T.TrainConfig(**FAST), _outputs(tmp_path), progress=False)
    ev = episodes.evaluate(res.handle, res.tokenizer, res.episodes["test"], ("reservoir", "reset"))
    r, z = ev["reservoir"], ev["reset"]
    assert r["ci_low"] > z["ci_high"], (r, z)
    assert r["acc"] >= 0.6 and res.history["loss"][-1] < res.history["loss"][0]


def test_run_is_reproducible_bit_for_bit_and_cached(tmp_path):
    cfg = _fast(steps=8, eval_every=4)
    a = T.train(cfg, _outputs(tmp_path, "a"), progress=False)
    b = T.train(cfg, _outputs(tmp_path, "b"), progress=False)
    assert not a.loaded and not b.loaded
    assert a.params_path.read_bytes() == b.params_path.read_bytes()
    doc = json.loads(a.run_path.read_text())
    assert doc["config"] == cfg.to_dict() and doc["seed"] == cfg.seed and doc["wall_time_s"] > 0
    assert doc["history"]["loss"] == b.history["loss"]
    phases = doc["phase_s"]  # where the wall time went; kept out of the compared history
    assert set(phases) == {"setup", "read_gate", "loop", "validation"}
    assert all(v >= 0 for v in phases.values()) and phases["validation"] <= phases["loop"]
    assert phases["setup"] + phases["read_gate"] + phases["loop"] <= doc["wall_time_s"]
    assert phases["validation"] > 0 and "validation_s" not in doc["history"]  # 2 evaluations
    # The saved config alone reproduces the run (same hash, same bytes).
    again = T.TrainConfig.from_dict(doc["config"])
    assert again.config_hash() == a.hash == a.run_path.stem
    c = T.train(cfg, _outputs(tmp_path, "a"), progress=False)
    assert c.loaded and c.history == a.history
    for p, q in zip(c.handle.trainable_parameters(), a.handle.trainable_parameters(), strict=True):
        assert torch.equal(p, q)


def test_lazy_cached_run_builds_its_model_on_first_use_only(tmp_path):
    cfg = _fast(steps=4, eval_every=2)
    out = _outputs(tmp_path)
    eager = T.train(cfg, out, progress=False)
    before = torch.random.get_rng_state()
    lazy = T.train(cfg, out, progress=False, lazy=True)
    assert isinstance(lazy, T.LazyTrainResult) and lazy.loaded and not lazy.built
    assert lazy.history == eager.history and lazy.hash == eager.hash
    assert "not built" in repr(lazy)  # the repr does not build the model
    assert not lazy.built
    assert lazy.params_digest() == eager.params_digest() and not lazy.built  # from the file
    ev = eager.evaluate("test")
    assert lazy.evaluate("test") == ev and not lazy.built  # a memo hit
    assert lazy.model is not None and lazy.built
    assert lazy.params_digest() == eager.params_digest()
    assert torch.equal(torch.random.get_rng_state(), before)  # building forked the RNG
    for p, q in zip(
        lazy.handle.trainable_parameters(), eager.handle.trainable_parameters(), strict=True
    ):
        assert torch.equal(p, q)
    assert [e.answer for e in lazy.episodes["test"]] == [e.answer for e in eager.episodes["test"]]
    unused = T.train(cfg, out, progress=False, lazy=True)
    del unused.model, unused.handle  # never built: nothing to free, no error
    with pytest.raises(AttributeError, match="deleted"):
        _ = unused.tokenizer
    fresh = T.train(_fast(steps=3), _outputs(tmp_path, "b"), progress=False, lazy=True)
    assert type(fresh) is T.TrainResult and not fresh.loaded  # not cached: trained as usual


def test_lora_adds_trainable_adapters(tmp_path):
    cfg = _fast(steps=3, eval_every=0, lora_r=2)
    res = T.train(cfg, _outputs(tmp_path), progress=False)
    assert any(n.startswith("lora.") for n in T._named_trainable(res.model, res.handle))
    frozen = [p for n, p in res.model.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in frozen)
    assert res.evaluate("val", ("reservoir",))["reservoir"]["n"] == 32


def _text_kl(res, n_blocks=4):
    """Mean KL(base || injected) on test-split text with a probe pass's state."""
    from ran.tasks.data import token_blocks

    blocks = token_blocks(res.tokenizer, "test", 32, n_blocks)
    h = res.handle
    with torch.no_grad():
        with episodes.closed_gate(h):
            base = torch.log_softmax(res.model(input_ids=blocks).logits, -1)
        ids, mask = S.batch_encode(res.tokenizer, ["dog"] * n_blocks)
        h.write_only(ids, mask)
        inj = torch.log_softmax(res.model(input_ids=blocks).logits, -1)
    h.reset_state()
    return float((base.exp() * (base - inj)).sum(-1).mean())


def test_kl_term_starts_at_zero_and_keeps_the_model_closer_to_base(tmp_path):
    cfg = _fast(steps=20, eval_every=0, injection={"gate_init": 1.0}, learning_rate=5e-2)
    free = T.train(cfg, _outputs(tmp_path, "free"), progress=False)
    held = T.train(
        updated(cfg, kl_weight=200.0, kl_batch=2, kl_len=32),
        _outputs(tmp_path, "held"),
        progress=False,
    )
    assert "kl" not in free.history and len(held.history["kl"]) == 20
    assert all(k >= 0 for k in held.history["kl"])
    assert _text_kl(held) < 0.5 * _text_kl(free), (_text_kl(held), _text_kl(free))
    with pytest.raises(ValueError, match="kl_weight"):
        T.TrainConfig(kl_weight=-1.0)


def test_kl_is_exactly_zero_with_the_gate_closed(tmp_path):
    cfg = _fast(steps=1, eval_every=0, injection={"gate_init": 0.0}, kl_weight=1.0)
    res = T.train(cfg, _outputs(tmp_path), progress=False)
    assert res.history["kl"] == [0.0]


@pytest.mark.parametrize("mode", ["val", "last"])
def test_select_keeps_best_validation_or_last_step(tmp_path, monkeypatch, mode):
    """Validation accuracy falls at every evaluation: "val" keeps the first evaluated
    parameters, "last" the final step's (with patience 1, which "last" must ignore)."""
    from ran.training import fit as F

    accs = iter([0.9, 0.5, 0.1, 0.05])
    monkeypatch.setattr(F, "evaluate", lambda *a, **k: {"reservoir": {"acc": next(accs)}})
    cfg = _fast(steps=6, eval_every=2, patience=1, select=mode)
    res = T.train(cfg, _outputs(tmp_path, mode), progress=False)
    h = res.history
    assert h["best_step"] == (2 if mode == "val" else 6)
    assert h["val_step"] == ([2, 4] if mode == "val" else [2, 4, 6])  # "val" stopped early
    ref = T.train(  # the same run to its last step, kept whole: its parameters are the last ones
        _fast(steps=6, eval_every=0, patience=0),
        _outputs(tmp_path, "ref"),
        progress=False,
    )
    same = all(
        torch.equal(p, q)
        for p, q in zip(
            res.handle.trainable_parameters(), ref.handle.trainable_parameters(), strict=True
        )
    )
    assert same == (mode == "last")


def test_select_is_validated():
    with pytest.raises(ValueError, match="select"):
        _fast(select="best")
