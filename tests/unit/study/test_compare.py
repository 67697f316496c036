"""The mechanism comparison, the attractor claims and the scaling points, on tiny models."""

from __future__ import annotations

import pytest
import torch

from ran.evaluation import measure as M
from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.reservoir.config import ReservoirConfig
from ran.study import claims as CL
from ran.study import compare as C
from ran.study import scaling as S
from ran.study import tables as T
from ran.training.config import TrainConfig
from ran.util.results import Outputs
from ran.util.stats import above

# K = 4 recall on tiny-llama that learns above the reset control in seconds (see test_train).
RECALL = dict(keys=("dog", "cat", "owl", "bee"), write_templates=("{key}",))
CC = dict(
    model_name="tiny-llama",
    ks=(2, 4),
    n_train=512,
    n_val=32,
    n_test=48,
    steps=30,
    elapsed_steps=2,
    batch_size=16,
    learning_rate=3e-2,
    reservoir=ReservoirConfig(units=64, sr=0.9, input_scaling=0.5, seed=0),
    secret_params=RECALL,
    elapsed_params=dict(k_max=2),
    idle_counts=(0, 2),
    idle_k=4,
    ppl_blocks=2,
    block_len=24,
    gen_tokens=12,
    overhead_reps=2,
    train=dict(injection=dict(n_slots=4, gate_init=0.5), warmup_steps=5, eval_every=10),
)
FIELDS = {"kind", "trainable_params", "recall", "elapsed", "idle", "dppl_init", "dppl_trained",
          "generation", "overhead", "runs", "train_wall_s"}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cc = C.CompareConfig(**CC)
    out = Outputs("smoke", root=tmp_path_factory.mktemp("cmp"))
    return cc, C.compare_base(cc), out


@pytest.fixture(scope="module")
def compared(setup):
    cc, base, out = setup
    return {kind: C.compare_mechanism(kind, cc, base, out) for kind in ("reservoir", "persistent")}


def test_config_validation():
    with pytest.raises(ValueError, match="idle_k"):
        C.CompareConfig(**(CC | {"idle_k": 8}))
    with pytest.raises(ValueError, match="ks"):
        C.CompareConfig(**(CC | {"ks": (1,)}))
    cc = C.CompareConfig(**(CC | {"ks": (4, 2)}))
    assert cc.ks == (2, 4) and cc.recall_config("prefix").probe_params["k"] == 4
    assert cc.elapsed_config("additive").kind == "additive"
    kl = C.CompareConfig(**(CC | {"kl_weight": 2.0}))
    assert kl.recall_config("prefix").kl_weight == kl.elapsed_config("prefix").kl_weight == 2.0
    inj = cc.recall_config("reservoir").injection  # the comparison's fields, then train's
    assert (inj.n_slots, inj.gate_init, inj.reservoir) == (4, 0.5, CC["reservoir"])
    with pytest.raises(ValueError, match="CompareConfig.layer"):
        C.CompareConfig(**(CC | {"train": {"injection": {"layer": 1}}}))


def test_trainable_kind_returns_every_field(setup, compared):
    cc, base, _ = setup
    r = compared["reservoir"]
    assert set(r) == FIELDS and r["trainable_params"] > 0
    assert set(r["recall"]) == set(cc.ks) and set(r["idle"]) == set(cc.idle_counts)
    for k in cc.ks:
        assert r["recall"][k]["chance"] == 1 / k and r["recall"][k]["n"] == cc.n_test
    assert r["dppl_init"]["dppl_pct"] == 0.0 and r["dppl_init"]["logits_equal"]
    assert set(r["runs"]) == {"recall", "elapsed"} and r["train_wall_s"] > 0
    assert r["generation"]["per_prompt"][0]["n_tokens"] == cc.gen_tokens
    lo, hi = r["overhead"]["ci95"]
    assert lo <= r["overhead"]["median_ratio"] <= hi
    probe_rows, cost_rows = T.comparison_rows(compared, cc.ks)
    assert len(probe_rows) == 2 + 3 and len(cost_rows) == 2  # + stateless, oracle, chance
    assert all(len(row) == len(T.probe_columns(cc.ks, cc.idle_counts)) for row in probe_rows)
    assert all(len(row) == len(T.COST_COLUMNS) for row in cost_rows)


def test_compare_all_and_its_findings(setup, compared, monkeypatch):
    cc, base, out = setup
    kinds = ["reservoir", "persistent"]
    done, failed = C.compare_all(cc, base, kinds, kinds, out)
    assert list(done) == kinds and not failed
    # the same evaluation as compare_mechanism's; only the first kind runs the base controls
    assert done["reservoir"]["recall"] == compared["reservoir"]["recall"]
    assert "stateless" not in done["persistent"]["recall"][cc.ks[-1]]
    blocks = T.findings(done, cc, base.generation, out.figure_path("cmp.png"), out,
                        headline_k=cc.ks[-1])  # fmt: skip
    assert [b["kind"] for b in blocks].count("table") == 2 and blocks[-1]["kind"] == "figure"
    musts = [b for b in blocks if b.get("text", "").startswith("Recall across passes")]
    assert len(musts) == len(cc.ks) and [b["headline"] for b in musts] == [False, True]
    targets = [b for b in blocks if b["kind"] == "target"]  # one per K, and elapsed
    assert [t["met"] for t in targets[: len(cc.ks)]] == [
        c["above"] for c in T.must_shows(done, cc.ks)["no_state_check"].values()
    ]
    assert not any(" met" in b.get("text", "") for b in blocks)
    assert sum("Elapsed passes" in b.get("text", "") for b in blocks) == 1
    assert not any("Failed" in b.get("text", "") for b in blocks)
    with pytest.raises(ValueError, match="must include"):
        C.compare_all(cc, base, kinds, ["persistent"], out)

    def diverge(kind, *args, **kwargs):
        raise FloatingPointError(f"{kind} diverged")

    monkeypatch.setattr(C, "compare_mechanism", diverge)
    done, failed = C.compare_all(cc, base, ["reservoir", "attractor"], [], out)
    assert done == {} and set(failed) == {"reservoir", "attractor (no gating)",
                                          "attractor (gating + burn-in)"}  # fmt: skip
    assert "Failed" in T.findings(compared, cc, base.generation, "f.png", None, failed)[3]["text"]


def test_attractor_returns_every_field_untrained(setup):
    cc, base, out = setup
    r = C.compare_mechanism("attractor", cc, base, out, attractor=CL.ungated(0.3))
    assert set(r) == FIELDS and r["trainable_params"] == 0 and r["runs"] == {}
    assert r["dppl_init"]["dppl_pct"] == 0.0 and r["dppl_init"]["logits_equal"]
    assert r["dppl_trained"]["dppl_pct"] != 0.0  # the feedback is on and changes the model
    with pytest.raises(ValueError, match="attractor"):
        C.compare_mechanism("reservoir", cc, base, out, attractor=CL.gated(0.1))
    quick = C.compare_mechanism(
        "attractor", cc, base, out, attractor=CL.gated(0.3), elapsed=False, base_controls=False
    )
    assert quick["elapsed"] is None
    assert set(quick["recall"][cc.ks[0]]) >= {"reservoir", "reset", "shuffled"}
    assert "stateless" not in quick["recall"][cc.ks[0]] and "stateless" not in quick["idle"][0]
    # the base-model rows come from the mechanism that ran them, wherever it is listed
    assert T.reference({"no elapsed": quick, "with": r}) is r
    with pytest.raises(ValueError, match="base_controls"):
        T.reference({"no elapsed": quick})
    probe_rows, _ = T.comparison_rows({"no elapsed": quick, "with": r}, cc.ks)
    i = T.probe_columns(cc.ks, cc.idle_counts).index("elapsed")
    assert probe_rows[0][i] == "n/a" and probe_rows[1][i] != "n/a" and probe_rows[2][i] != "n/a"


def test_persistent_carries_no_state_and_the_reservoir_does(setup, compared):
    cc, _, _ = setup
    check = T.no_state_check(compared, cc.ks)
    for k in cc.ks:
        assert check[k]["same_as_reset"], (
            f"persistent slots answer differently after a reset (K={k})"
        )
    # The same comparison on the reservoir fails: its answers depend on the state.
    res = compared["reservoir"]["recall"][cc.ks[-1]]
    assert res["reservoir"]["pred"] != res["reset"]["pred"]
    assert res["reservoir"]["ci_low"] > res["reset"]["ci_high"]
    # ... and the check notices a mechanism whose answers change with the state.
    fake = {"reservoir": compared["reservoir"], "persistent": compared["reservoir"]}
    assert not T.no_state_check(fake, cc.ks)[cc.ks[-1]]["same_as_reset"]


def _gen(rep4: float, ppl: float, n: int = 500) -> dict:
    return {"rep4": {"mean": rep4}, "base_ppl": {"mean": ppl},
            "per_prompt": [{"n_tokens": n}]}  # fmt: skip


def _att(dppl: float, ratio: float, rep4: float, ppl: float) -> dict:
    return {"dppl_trained": {"dppl_pct": dppl, "ci95": [dppl - 0.1, dppl + 0.1]},
            "overhead": {"median_ratio": ratio, "ci95": [ratio - 0.01, ratio + 0.01]},
            "generation": _gen(rep4, ppl)}  # fmt: skip


def test_claim_verdicts_follow_from_the_numbers():
    base, tol = _gen(0.10, 2.0), CL.Tolerances()
    rows = CL.claims(_att(0.5, 1.065, 0.30, 2.1), _att(0.2, 1.07, 0.12, 2.05), base, tol)
    assert [r[-1] for r in rows] == ["yes", "yes", "yes", "yes"]
    # outside every tolerance: big ΔPPL, 20% overhead, no degradation -> fix untestable
    rows = CL.claims(_att(-1.5, 1.20, 0.12, 2.1), _att(0.0, 1.0, 0.1, 2.0), base, tol)
    assert [r[-1] for r in rows] == ["no", "no", "no", "untestable"]
    # degradation by perplexity alone (+15% > 10%), and the gated one still degraded
    rows = CL.claims(_att(0.0, 0.97, 0.10, 2.3), _att(0.0, 1.0, 0.2, 2.0), base, tol)
    assert [r[-1] for r in rows] == ["yes", "no", "yes", "no"]
    assert "500-token" in rows[2][0]
    # a median inside the band whose CI crosses its edge decides nothing
    wide = _att(0.5, 1.065, 0.30, 2.1)
    wide["dppl_trained"]["ci95"] = [-0.4, 1.6]
    wide["overhead"]["ci95"] = [0.94, 1.18]
    rows = CL.claims(wide, _att(0.2, 1.07, 0.12, 2.05), base, tol)
    assert [r[-1] for r in rows[:2]] == ["inconclusive", "inconclusive"]
    with pytest.raises(ValueError):
        CL.Tolerances(overhead_low_pct=20, overhead_high_pct=10)


@pytest.mark.parametrize(
    "ci, verdict",
    [([1, 2], "yes"), ([2, 1], "yes"), ([0, 3], "yes"), ([-1, 1], "inconclusive"),
     ([2, 4], "inconclusive"), ([-2, -0.5], "no"), ([3.5, 9], "no")],
)  # fmt: skip
def test_band_verdict(ci, verdict):
    assert CL.band_verdict(ci, 0.0, 3.0) == verdict


def test_dppl_bootstrap_ci_is_paired_and_exact_at_zero(setup):
    _, base, _ = setup
    same = M.dppl(base, base.ppl)
    assert same["dppl_pct"] == 0.0 and same["ci95"] == [0.0, 0.0]


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-qwen2"])
def test_paper_code_path_loads_saved_gpt2_and_qwen2_and_injects(arch, tmp_path):
    """The paper profile's models load by id through from_pretrained: save a tiny model of
    the same architecture, load it by path through that path, train and measure one point."""
    model, tok = load_model(arch)
    folder = tmp_path / arch
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = TrainConfig(model_name=str(folder), probe="secret_word", steps=2, batch_size=4,
                      probe_params=dict(RECALL, k=4, n_train=32, n_val=8, n_test=8),
                      injection=InjectionConfig(reservoir=ReservoirConfig(units=32)),
                      eval_every=0, warmup_steps=1)  # fmt: skip
    out = Outputs("smoke", root=tmp_path / "out")
    pt = S.scaling_point(cfg, out, n_test=8, ppl_blocks=2, block_len=16, overhead_reps=2)
    assert pt["model_params"] == S.n_params(model)
    assert pt["dppl_init"]["dppl_pct"] == 0.0 and pt["dppl_init"]["logits_equal"]
    assert pt["recall"]["chance"] == 0.25 and set(pt["recall"]) >= set(S.SCALE_CONTROLS)
    row = S.scaling_rows([pt])[0]
    assert len(row) == len(S.SCALE_COLUMNS) and row[0] == str(folder)
    loaded, _ = load_model(str(folder))
    assert type(loaded).__name__ == type(model).__name__
    with torch.no_grad():
        ids = torch.tensor([[5, 6, 7]])
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_per_model_lists():
    assert S.per_model(["a", "b"], "0.3") == [0.3, 0.3]
    assert S.per_model(["a", "b"], "64,128", int) == [64, 128]
    with pytest.raises(ValueError, match="need 1 or 2"):
        S.per_model(["a", "b"], "1,2,3")
    with pytest.raises(ValueError, match="comma-separated"):
        S.per_model(["a", "b"], " , ")


def _acc(correct: int, n: int = 100) -> dict:
    from ran.util.stats import accuracy_summary

    return accuracy_summary(torch.arange(n) < correct, 0.2)


def test_elapsed_check_needs_both_controls_beaten():
    ctrl = {"stateless": _acc(22), "reset": _acc(20), "reservoir": _acc(90), "chance": 0.2}
    strong = {"elapsed": ctrl}
    weak = {"elapsed": ctrl | {"reservoir": _acc(28)}}  # above the reset, CIs overlap
    beaten_by_stateless = {"elapsed": ctrl | {"reservoir": _acc(60), "stateless": _acc(55)}}
    out = T.elapsed_check({"a": strong, "b": weak, "c": {"elapsed": None}})
    assert set(out) == {"a", "b"}  # mechanisms without the probe are left out
    assert out["a"]["above"] and not out["b"]["above"]
    assert out["a"]["stateless"]["correct"] == 22
    # the stateless model comes from whichever mechanism ran the base controls
    no_base = {k: v for k, v in beaten_by_stateless["elapsed"].items() if k != "stateless"}
    mixed = T.elapsed_check({"x": {"elapsed": no_base}, "y": beaten_by_stateless})
    assert not mixed["x"]["above"] and mixed["x"]["stateless"]["correct"] == 55
    assert T.elapsed_check({"c": {"elapsed": None}}) == {}
    with pytest.raises(ValueError, match="stateless"):
        T.elapsed_check({"x": {"elapsed": no_base}})
    C.check_elapsed_kinds([], "reservoir")
    assert C.parse_kinds("all", ["reservoir", "prefix"]) == ["reservoir", "prefix"]
    assert C.parse_kinds("none", ["reservoir"]) == [] and C.parse_kinds(" ", ["x"]) == []
    assert C.parse_kinds("prefix, reservoir", ["reservoir"]) == ["prefix", "reservoir"]
    with pytest.raises(ValueError, match="unknown kind"):
        C.parse_kinds("reservoir,lstm", ["reservoir"])
    C.check_elapsed_kinds(["recurrent", "reservoir"], "reservoir")
    with pytest.raises(ValueError, match="must include 'reservoir'"):
        C.check_elapsed_kinds(["recurrent"], "reservoir")


def test_above_needs_non_overlapping_intervals():
    a = {"ci_low": 0.5, "ci_high": 0.9}
    assert above(a, {"ci_low": 0.1, "ci_high": 0.4}, {"ci_low": 0.2, "ci_high": 0.49})
    assert not above(a, {"ci_low": 0.1, "ci_high": 0.4}, {"ci_low": 0.3, "ci_high": 0.5})
    with pytest.raises(ValueError, match="at least one control"):
        above(a)
