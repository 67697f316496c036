"""The findings of notebooks 01-05 (ran.study.esn, surgery, h1, scaling with claims, seeds):
tiny hand-made results, no model. Each threshold is checked on both sides, each table
for its columns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ran.reservoir import ReservoirConfig
from ran.tasks.episodes import CONTROLS


def _s(acc: float, n: int = 100, width: float = 0.02) -> dict:
    """An accuracy summary with a CI of +- width."""
    return {"acc": acc, "ci_low": acc - width, "ci_high": acc + width, "n": n}


def _texts(blocks: list[dict]) -> list[str]:
    return [b["text"] for b in blocks if b["kind"] == "text"]


def _targets(blocks: list[dict]) -> list[dict]:
    return [b for b in blocks if b["kind"] == "target"]


# ----------------------------------------------------------------------------- 03: ran.study.h1
def _ev(acc: float, chance: float = 0.25) -> dict:
    out = {c: _s(acc if c == "reservoir" else chance) for c in CONTROLS}
    return out | {"n": 100, "chance": chance}


def _h1_inputs(k16_acc=0.97, d_trained=0.5, wall_s=120.0):
    from ran.study import h1

    perplexity = {
        "base": dict(ppl=10.0, nll=2.302585, finite=True, dppl_pct=0.0),
        "injected, init": dict(ppl=10.0, nll=2.302585, finite=True, dppl_pct=0.0),
        h1.PPL_TRAINED: dict(ppl=10.05, nll=2.3076, finite=True, dppl_pct=d_trained),
        h1.ppl_carried(5): dict(ppl=10.1, nll=2.31, finite=True, dppl_pct=1.0),
    }
    runs = {
        "secret_word K=16": dict(hash="abc", config=dict(learning_rate=0.02, steps=100),
                                 wall_time_s=wall_s, loaded=False,
                                 history=dict(step=[20, 40], best_val_acc=0.9)),
    }  # fmt: skip
    args = (
        "tiny", "secret_word K=16", {4: _ev(0.99), 16: _ev(k16_acc, 1 / 16)}, _ev(0.8, 0.2),
        {"sr=0.9": [_s(0.9), _s(0.5)]}, perplexity, True,
        dict(carried=dict(norm=3.0, finite=True), after_blocks=dict(norm=2.5),
             idle=dict(norm=0.0, finite=True)),
        {"base": dict(rep4=0.1, distinct2=0.8, base_ppl=12.0)},
        dict(median_ratio=1.02, ratio_q25_q75=[1.0, 1.05]), runs,
        {"capacity": "c.png", "elapsed": "e.png", "idle": "i.png", "dppl": "d.png"}, None,
    )  # fmt: skip
    kwargs = dict(ks=[4, 16], train_ks=[16], k_max=4, pre_max=4, n_test=100, idle_k=8,
                  idle_train=(0, 2), idle_eval=[0, 8], idle_n_test=48, ppl_blocks=4, block_len=64,
                  carried=5, idle_long=100, gen_tokens=30, n_gen_prompts=1, overhead_reps=3,
                  threads=1, cpu_count=2)  # fmt: skip
    return args, kwargs


def test_h1_findings_blocks_and_tables():
    from ran.study import h1

    args, kwargs = _h1_inputs()
    out = h1.findings(*args, **kwargs)
    assert len(out) == 21 and sum(b["kind"] == "target" for b in out) == 5
    probes, ppl, gen, runs = (b for b in out if b["kind"] == "table")
    assert probes["columns"] == ["probe", "n", "chance", *CONTROLS]
    assert [r[0] for r in probes["rows"]] == [
        "secret word K=4 (readout K=16)", "secret word K=16 (readout K=16)",
        "elapsed passes (k_max=4, 0..4 passes before the event)",
    ]  # fmt: skip
    assert ppl["columns"] == ["condition", "PPL", "ΔPPL (%)"] and len(ppl["rows"]) == 4
    assert runs["columns"] == h1.RUN_COLUMNS
    assert runs["rows"] == [["secret_word K=16", 0.02, 100, 2, 0.9, 2.0, False]]  # no hash
    assert ppl["rows"][0] == ["base", "10.0000", "+0.000"]
    text = " ".join(_texts(out))
    assert "Recall at K = 16 is 0.970 [0.950, 0.990] (n = 100; reset control 0.062" in text
    assert "After training, held-out ΔPPL is +0.500%" in text
    assert "measured on the run secret_word K=16 (config hash abc)." in text
    with pytest.raises(KeyError, match="not among the runs"):
        h1.findings(args[0], "fact memory", *args[2:], **kwargs)
    assert "above both controls (non-overlapping 95% CIs)" in text  # 0.8 +- 0.02 vs 0.2
    assert "(2 cores, 1 torch threads)." in text
    assert "NLL 2.3026 for both, exactly equal" in text and "ΔPPL = 0 exactly" in text
    assert "median time ratio 1.020 (IQR 1.000-1.050; within noise of 1)" in text
    assert " met" not in text and "target" not in text.lower() and "budget" not in text
    assert [(t["claim"].split(": ", 1)[1], t["met"]) for t in _targets(out)] == [
        ("secret-word recall at K = 16 (must-show)", True),
        ("secret-word recall at K = 16 (aim)", True),
        ("elapsed passes, reservoir above the reset and stateless controls (must-show)", True),
        ("held-out ΔPPL after training, state carried from a probe pass", True),
        ("longest training run (minutes of wall time)", True),
    ]
    assert {t["source"] for t in _targets(out)} == {"03_h1_nondestruction"}
    figs = [b for b in out if b["kind"] == "figure"]
    assert figs[0]["path"] == "c.png" and "among [16]" in figs[0]["caption"]


@pytest.mark.parametrize(("acc", "met"), [(0.95, True), (0.949, False)])
def test_h1_recall_target_flips_at_its_threshold(acc, met):
    from ran.study import h1

    cap = {16: _ev(acc, 1 / 16), 64: _ev(0.5, 1 / 64)}
    s = h1.recall_sentence(cap, [16, 64])
    assert s.startswith(f"Recall at K = 16 is {acc:.3f} [") and "At K = 64: 0.500" in s
    must, aim = h1.recall_targets(cap, [16, 64])
    assert (
        must["met"] is met
        and must["target"] == ">= 0.95"
        and must["value"].startswith(f"{acc:.3f}")
    )
    assert aim["met"] is False and aim["target"] == ">= 0.9"
    (only,) = h1.recall_targets({8: _ev(0.95)}, [8])  # no must-show without K = 16
    assert only["met"] is True and "K = 8 (aim)" in only["claim"]


def test_h1_dppl_and_budget_targets_flip_at_their_thresholds():
    from ran.study import h1

    assert h1.dppl_target(-1.0)["met"] is True and h1.dppl_target(1.01)["met"] is False
    assert h1.dppl_target(1.01)["value"] == "+1.010%"
    assert h1.budget_target(10.0)["met"] is True and h1.budget_target(10.01)["met"] is False
    args, kwargs = _h1_inputs(k16_acc=0.9, d_trained=-2.0, wall_s=11 * 60)
    out = h1.findings(*args, **kwargs)
    assert [t["met"] for t in _targets(out)] == [False, True, True, False, False]
    text = " ".join(_texts(out))
    assert "held-out ΔPPL is -2.000%" in text and "11.0 minutes" in text


# ----------------------------------------------------------------------------- 04: scaling, claims
def _point(name: str, acc: float, dppl_init: float = 0.0, units: int = 64) -> dict:
    ci = [-0.1, 0.1]
    return dict(model_name=name, model_params=2e6, units=units, input_scaling=0.3, k=4,
                recall={"reservoir": _s(acc), "reset": _s(0.25), "stateless": _s(0.25),
                        "chance": 0.25},
                dppl_init=dict(dppl_pct=dppl_init, ci95=ci), dppl_trained=dict(dppl_pct=0.5, ci95=ci),
                overhead=dict(median_ratio=1.1, ci95=[1.0, 1.2]), run=dict(wall_time_s=60.0))  # fmt: skip


def test_scaling_findings_count_points_above_both_controls():
    from ran.study import scaling

    pts = [_point("a", 0.9), _point("b", 0.26, dppl_init=0.1)]
    kw = dict(scale_k=4, scale_steps=3, scale_n_test=100, scale_ppl_blocks=2, scale_block_len=32,
              scale_overhead_reps=2)  # fmt: skip
    tab, sentence, fig = scaling.scaling_findings(pts, "model_params", "s.png", None, **kw)
    assert tab["columns"] == scaling.SCALE_COLUMNS and len(tab["rows"]) == 2
    assert tab["caption"].startswith("Scaling (models a, b): K = 4")
    assert "at 1 of 2 points; best recall 0.900 [0.880, 0.920] (a, N = 64" in sentence["text"]
    assert "ΔPPL at init is 0 exactly at 1 of 2 points" in sentence["text"]
    assert fig["caption"].endswith("vs model params; 95% CIs.")
    one_model = [_point("m", 0.9, units=128), _point("m", 0.9, units=512)]
    tab, _, fig = scaling.scaling_findings(one_model, "units", "s.png", None, **kw)
    assert tab["caption"].startswith("Scaling (reservoir units x input scaling on m)")


def test_claims_findings_count_the_verdicts():
    from ran.study.claims import CLAIM_COLUMNS, Tolerances, claims_findings

    assert claims_findings([], 0.1, "m", Tolerances()) == []
    rows = [["a", "r1", "x", "yes"], ["b", "r2", "x", "inconclusive"], ["c", "r3", "x", "no"]]
    tab, sentence = claims_findings(rows, 0.1, "m", Tolerances())
    assert tab["columns"] == CLAIM_COLUMNS and tab["rows"] == rows
    assert "feedback gain g = 0.1" in tab["caption"] and "within ±1%" in tab["caption"]
    assert sentence["text"] == (
        "1 of 3 reported behaviours of the attractor layer reproduce on m (1 inconclusive at "
        "this sample size): r1: yes; r2: inconclusive; r3: no."
    )


def test_the_one_list_helper_replaces_scaling_parse_list():
    from ran.study import scaling
    from ran.util import results

    assert scaling.parse_list is results.parse_list
    assert scaling.per_model(["a", "b", "c"], "64", int) == [64, 64, 64]


# ----------------------------------------------------------------------------- 05: ran.study.seeds
def test_seed_verdicts_flip_at_alpha():
    from ran.study import seeds as SD

    assert SD.ALPHA == 0.05
    assert SD.equal_accuracy_verdict({"p": 0.049}).endswith(
        "more than sampling noise at the 5% level"
    )
    assert SD.equal_accuracy_verdict({"p": 0.05}).startswith("At the 5% level the seeds'")
    assert "undefined" in SD.equal_accuracy_verdict({"p": math.nan})
    sig = {"m": dict(rho=0.9, ci_low=0.2, ci_high=0.99, p=0.01)}
    assert SD.correlation_verdict(sig).startswith("1 of 1 untrained metrics have p < 0.05")
    weak = {"m": dict(rho=0.9, ci_low=0.2, ci_high=0.99, p=0.06)}
    assert SD.correlation_verdict(weak).startswith("Untrained metrics do not predict")
    assert "(1 of 1 percentile CIs exclude 0" in SD.correlation_verdict(weak)
    undefined = {"m": dict(rho=math.nan, ci_low=math.nan, ci_high=math.nan, p=math.nan)}
    assert SD.correlation_verdict(undefined).startswith("Spearman rho is undefined for 1 of 1")
    assert SD.rho_critical(8) == pytest.approx(0.7067, abs=1e-3)  # tables of Student's t


def test_seed_findings_table_and_the_constant_word_share():
    from ran.study import seeds as SD
    from ran.training.config import TrainConfig

    df = pd.DataFrame(
        dict(seed=[0, 1, 2], hash=["a", "b", "c"], val_acc=[0.5, 0.7, 0.6], val_lo=[0.4] * 3,
             val_hi=[0.8] * 3, val_correct=[5, 7, 6], n_val=[10] * 3, test_acc=[0.4, 0.6, 0.5],
             test_lo=[0.3] * 3, test_hi=[0.7] * 3, test_correct=[8, 12, 10], n_test=[20] * 3,
             pr_noise=[1.0, 2.0, 3.0], mc_noise=[3.0, 1.0, 2.0], pr_real=[1.0, 1.5, 2.0],
             sep_real=[1.0, 1.0, 1.0], train_wall_s=[1.0, 1.0, 1.0])
    )  # fmt: skip
    metrics = SD.ranked_metrics(df)
    assert list(metrics) == ["pr_noise", "mc_noise", "pr_real"]  # sep_real is constant: left out
    assert "sep_real" in SD.ranked_metrics(df.assign(sep_real=[0.1, 0.5, 0.9]))
    c = dict(rho=0.5, ci_low=-0.5, ci_high=1.0, p=0.6)
    ctrl = {k: _s(0.1) for k in ("reset", "shuffled", "stateless", "oracle")}
    var = SD.seed_variance(df, SD.select_best(df))
    base = TrainConfig(model_name="tiny-llama", probe="secret_word", probe_params=dict(k=4))
    out = SD.findings(
        df, 1, ctrl, var, dict(df_between=2, df_within=57, F=1.0, p=0.4, eta2=0.03),
        dict(dof=2, chi2=1.5, p=0.47, cramers_v=0.1, min_expected=10.0),
        dict(dof=2, Q=1.2, p=0.55), {m: c for m in metrics}, {m: c for m in metrics}, metrics,
        base, 0.25, 100, SD.rho_critical(3), {"accuracy": "a.png", "correlation": "c.png"}, None,
    )  # fmt: skip
    (tab,) = [b for b in out if b["kind"] == "table"]
    assert tab["columns"] == SD.SEED_COLUMNS and tab["rows"][1][:3] == [1, 0.7, 0.6]
    text = " ".join(_texts(out))
    assert "Picked on validation, seed 1 (val 0.700, 7/10) scores 0.600 on test" in text
    assert "At the 5% level the seeds' test accuracies are compatible" in text
    assert "The word share of r1 variance is 1.0000-1.0000 for every seed" in text
    assert "rank 1 of 3 on test" in text and "3 reservoir seeds (0-2; N = 512, sr = 0.9" in text


# ----------------------------------------------------------------------------- 02: ran.study.surgery
def test_surgery_findings_read_the_default_cell_and_only_contracting_srs():
    from ran.study import surgery as A

    rows = [dict(model="m", impl=i, padding="none", output="forward", max_abs_diff=d, equal=d == 0,
                 equal_after_remove=True) for i, d in (("eager", 0.0), ("sdpa", 1e-6))]  # fmt: skip
    sat = np.zeros((1, 3, 3))
    sat[0, 1, 1] = 0.125  # sr = 0.9, input_scaling = 0.3: the default cell
    esp = np.full((1, 3, 3), 1e-9)
    esp[0, 2] = 5.0  # sr = 1.1 does not contract: left out of "for sr < 1"
    sweep = dict(
        sr=[0.5, 0.9, 1.1], input_scaling=[0.1, 0.3, 1.0], saturation=sat, esp=esp, steps=12
    )
    pstats = {"last": dict(pr=3.0, cos=0.5), "mean": dict(pr=1.5, cos=0.9)}
    mass = {"mass": np.array([[0.1, 0.2], [0.3, 0.4]]), "layer": 1, "gate": 0.76}
    out = A.findings(rows, ["m"], mass, {"last": sweep}, pstats, 0.3, "last",
                     {"mass": "m.png", "sweep": "s.png", "pooling": "p.png"}, None, model_name="m",
                     n_prompts=2, n_seeds=1, max_saturation=0.05,
                     res=ReservoirConfig(sr=0.9, input_scaling=0.3))  # fmt: skip
    assert out[0]["columns"] == A.EXACTNESS_COLUMNS and len(out[0]["rows"]) == 2
    assert "bit-identical to the untouched one in 1 of 2 cases" in out[1]["text"]
    assert "mean 0.250 (heads 0.200-0.300)" in out[2]["caption"]
    assert "saturates 0.125 of the units" in out[3]["caption"]
    assert "end at most 1e-09 apart (/sqrt(N)) after 12 passes" in out[3]["caption"]
    assert "the more distinct is 'last', the default is 'last'" in out[4]["caption"]


# ----------------------------------------------------------------------------- 01: ran.study.esn
def test_esn_findings_append_the_figures_to_the_summary():
    from ran.study import esn

    df = pd.DataFrame(dict(regime=["driven", "driven", "autonomous"], units=[20, 40, 20],
                           memory_capacity=[25.0, 10.0, 0.0]))  # fmt: skip
    bnd = lambda m: {"autonomous": dict(mean=m, ci_low=m - 0.1, ci_high=m + 0.1),  # noqa: E731
                     "driven": dict(n_censored=1, n_seeds=2, sr_max=2.0)}  # fmt: skip
    payload = {"boundary": {20: bnd(1.1), 40: bnd(1.3)}, "sr_grid_step": 0.375,
               "memory": {20: dict(max_mean=5.0, sr_at_max=0.9), 40: dict(max_mean=8.0, sr_at_max=1.0)}}  # fmt: skip
    summary = [{"kind": "text", "text": "summary"}]
    figs = {"metrics": "a.png", "mc": "b.png", "boundary": "c.png"}
    kw = dict(n_show=40, n_seeds=2, steps=200, drive="uniform", input_scaling=1.0, mc_k_max=20)
    out = esn.findings(df, payload, summary, figs, None, **kw)
    assert out[0] == summary[0] and len(out) == 4
    assert "sr* = 1.300 (95% CI 1.200-1.400, resolution 0.375)" in out[1]["caption"]
    assert "largest mean MC 8.0 at N = 40" in out[2]["caption"]
    assert "MC <= N holds for 1 of 2 estimates" in out[2]["caption"]  # 25 > 20 fails
    assert "autonomous sr* spans 1.100-1.300" in out[3]["caption"]
    live = esn.findings(df, payload, summary, figs | {"live": "l.png"}, None, live_sr=1.2,
                        live_units=100, **kw)  # fmt: skip
    assert live[-1]["caption"].startswith("One reservoir (sr = 1.2, N = 100)")
