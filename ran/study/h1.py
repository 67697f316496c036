"""Notebook 03 (H1, non-destruction, and the capacity curve): its computation.

* :func:`nondestruction`: every perplexity condition of H1 and the stability check
  for one trained run; :func:`generation_pair`: base vs trained generations;
* :func:`readout_for` / :func:`probe_test_episodes`: which trained readout serves
  which K in the capacity curve, and test episodes of a probe variant;
* :func:`fact_config`: the run H1 is measured on by default, the library's recipe
  :func:`ran.training.recipes.fact_memory` (notebook 06's best configuration);
* :func:`overhead` (from :mod:`ran.evaluation.quality`) and :func:`timed`;
* :func:`findings`: the notebook's findings blocks, its targets named constants
  (:data:`RECALL_TARGET_K16`, :data:`RECALL_AIM_KMAX`, :data:`DPPL_TARGET_PCT`,
  :data:`TRAIN_BUDGET_MIN`).
"""

from __future__ import annotations

import time

import torch

from ran.evaluation.quality import (  # noqa: F401  (overhead: measured by notebook 03)
    carry_passes,
    generations,
    idle_passes,
    overhead,
    perplexity,
    perplexity_after_write,
    perplexity_at_init,
    state_stats,
)
from ran.study.tables import fmt_acc
from ran.tasks import probes as P

RECALL_TARGET_K = 16  # the must-show's K
RECALL_TARGET_K16 = 0.95  # must-show: held-out recall at K = 16 at least this
RECALL_AIM_KMAX = 0.9  # aim: recall at the largest K at least this
DPPL_TARGET_PCT = 1.0  # H1: |ΔPPL| after training within this many percent
TRAIN_BUDGET_MIN = 10  # the longest training run within this many minutes
PPL_TRAINED = "trained, carried from a probe pass"  # the perplexity condition of the target
FACT_LABEL = "fact memory"  # notebook 03's name of the run of the library recipe ran.fact_memory()
H1_RUNS = ("fact_memory", "secret_word")  # notebook 03's h1_run choices


def fact_config(h1_run: str, model_name: str, k: int, layer: int, seed: int, overrides: str):
    """The fact-memory TrainConfig H1 is measured on (``h1_run == "fact_memory"``), or None
    (``"secret_word"``: the easy-template readout). ``overrides``: a JSON object of
    TrainConfig overrides for :func:`ran.training.recipes.fact_memory` (its
    ``probe_params`` are merged); ``layer < 0`` is the model's middle layer."""
    import json

    from ran.training.recipes import fact_memory

    if h1_run not in H1_RUNS:
        raise ValueError(f"h1_run must be one of {', '.join(H1_RUNS)}, got {h1_run!r}")
    if h1_run == "secret_word":
        return None
    kw = json.loads(overrides or "{}")
    if not isinstance(kw, dict):
        raise ValueError(f"fact_overrides must be a JSON object, got {overrides!r}")
    return fact_memory(model_name, k=k, layer=None if layer < 0 else layer, seed=seed, **kw)


def ppl_carried(carried: int) -> str:
    """The perplexity condition after ``carried`` carried passes (a key of ``nondestruction``)."""
    return f"trained, after {carried} carried passes"


def nondestruction(plain, run, blocks: torch.Tensor, lines: list[str], idle_long: int) -> dict:
    """Every perplexity condition of H1 and the stability check, for one trained run.

    Parameters
    ----------
    plain : the untouched model (injected at init and restored here).
    run : ran.training.train.TrainResult whose model and handle are the trained ones.
    blocks : (n, T) held-out token blocks.
    lines : texts of the carried write passes before the last condition.
    idle_long : idle passes of the stability check.

    Returns
    -------
    dict
        ``ppl`` (condition -> :class:`PPL`): base; injected at init (gate
        closed, whatever the run's ``gate_init``); trained with the state of
        one probe write pass; trained after ``len(lines)`` carried passes.
        ``init_equal`` (first blocks' logits torch.equal to the base's),
        ``carry``, ``after_blocks`` and ``idle`` (state norms and finiteness).
    """
    ppl = {}
    ppl["base"], logits_base = perplexity(plain, blocks, keep_logits=2)
    cfg = run.config.injection_config()
    ppl["injected, init"], logits_init = perplexity_at_init(plain, blocks, cfg, keep_logits=2)
    equal = all(torch.equal(a, b) for a, b in zip(logits_base, logits_init, strict=True))
    H = run.handle
    ppl[PPL_TRAINED] = perplexity_after_write(run.model, H, run.tokenizer, blocks)
    carry = carry_passes(H, run.tokenizer, lines)
    ppl[ppl_carried(len(lines))], _ = perplexity(run.model, blocks)
    after_blocks = state_stats(H)
    idle = idle_passes(H, idle_long)
    H.reset_state()
    return {"ppl": ppl, "init_equal": equal, "carry": carry, "after_blocks": after_blocks,
            "idle": idle}  # fmt: skip


def generation_pair(plain, run, prompts: list[str], n_tokens: int) -> dict:
    """Greedy generations of the base and of the trained run (fresh state per prompt).

    Returns ``{"base": [stats...], "ran (trained, carried)": [stats...], "state": ...}``
    with the stats of :func:`generations`; ``state`` is the run's state after the
    last generation.
    """
    tok, H = run.tokenizer, run.handle
    gen = {
        "base": generations(plain, None, tok, plain, prompts, n_tokens),
        "ran (trained, carried)": generations(run.model, H, tok, plain, prompts, n_tokens),
        "state": state_stats(H),
    }
    H.reset_state()
    return gen


def readout_for(k: int, trained: list[int]) -> int:
    """The smallest trained K that is >= ``k`` (its readout serves the K-way test)."""
    ok = sorted(t for t in trained if t >= k)
    if not ok:
        raise ValueError(f"no readout trained with K >= {k} (trained: {trained})")
    return ok[0]


def probe_test_episodes(probe: str, params: dict, seed: int, **override) -> list[P.Episode]:
    """Test episodes of a probe whose train/val parameters are ``params`` (+ overrides).

    The test split is drawn after the train and val splits (disjoint from them),
    so overriding ``n_test`` or ``k`` never puts training episodes in the test set.
    """
    return P.make_probe(probe, **({"seed": seed} | params | override)).splits()["test"]


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), wall seconds)``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------- findings
SOURCE = "03_h1_nondestruction"  # the results file of the targets below


def run_rows(runs: dict[str, dict]) -> list[list]:
    """One row per training run (``RUN_COLUMNS``) from ``name -> {hash, config (dict),
    wall_time_s, loaded, history}`` (the ``runs`` of notebook 03's results; the hashes are
    in FINDINGS' appendix)."""
    return [
        [name, r["config"]["learning_rate"], r["config"]["steps"], len(r["history"]["step"]),
         r["history"]["best_val_acc"], r["wall_time_s"] / 60, r["loaded"]]
        for name, r in runs.items()
    ]  # fmt: skip


RUN_COLUMNS = ["run", "peak lr", "max steps", "steps run", "best val acc", "wall (min)", "loaded"]


def recall_sentence(capacity: dict, ks) -> str:
    """Recall at K = 16 (when tested) with its controls, and at the largest K."""
    c16 = capacity.get(RECALL_TARGET_K)
    cmax = capacity[max(ks)]
    head = ""
    if c16:
        head = (f"Recall at K = {RECALL_TARGET_K} is {fmt_acc(c16['reservoir'])} (n = "
                f"{c16['reservoir']['n']}; reset control {c16['reset']['acc']:.3f}, stateless "
                f"{c16['stateless']['acc']:.3f}, chance {c16['chance']:.4f}). ")  # fmt: skip
    if max(ks) == RECALL_TARGET_K and c16:
        return head.strip()
    return head + (f"At K = {max(ks)}: {fmt_acc(cmax['reservoir'])} (reset "
                   f"{cmax['reset']['acc']:.3f}, chance {cmax['chance']:.4f}).")  # fmt: skip


def recall_targets(capacity: dict, ks) -> list[dict]:
    """The must-show (recall >= ``RECALL_TARGET_K16`` at K = 16, when tested) and the aim
    (recall >= ``RECALL_AIM_KMAX`` at the largest K) as target blocks."""
    from ran.util.results import target

    out = []
    c16 = capacity.get(RECALL_TARGET_K)
    if c16:
        out.append(target(f"H1 notebook: secret-word recall at K = {RECALL_TARGET_K} (must-show)",
                          fmt_acc(c16["reservoir"]), f">= {RECALL_TARGET_K16:g}",
                          c16["reservoir"]["acc"] >= RECALL_TARGET_K16, source=SOURCE))  # fmt: skip
    cmax = capacity[max(ks)]["reservoir"]
    out.append(target(f"H1 notebook: secret-word recall at K = {max(ks)} (aim)", fmt_acc(cmax),
                      f">= {RECALL_AIM_KMAX:g}", cmax["acc"] >= RECALL_AIM_KMAX, source=SOURCE))  # fmt: skip
    return out


def dppl_sentence(d_trained: float, d_carried: float, carried: int) -> str:
    """ΔPPL after training, with the state of a probe pass and after ``carried`` passes."""
    return (f"After training, held-out ΔPPL is {d_trained:+.3f}% with the state carried from a "
            f"probe pass and {d_carried:+.3f}% after {carried} carried passes.")  # fmt: skip


def dppl_target(d_trained: float) -> dict:
    """H1's target: |ΔPPL| after training within ``DPPL_TARGET_PCT``."""
    from ran.util.results import target

    return target("H1: held-out ΔPPL after training, state carried from a probe pass",
                  f"{d_trained:+.3f}%", f"|ΔPPL| <= {DPPL_TARGET_PCT:g}%",
                  abs(d_trained) <= DPPL_TARGET_PCT, source=SOURCE)  # fmt: skip


def budget_sentence(max_run_min: float, cpu_count: int | None, threads: int) -> str:
    """The longest training run's wall time on this machine."""
    return (f"Longest training run: {max_run_min:.1f} minutes of wall time on this machine's CPU "
            f"({cpu_count} cores, {threads} torch threads).")  # fmt: skip


def budget_target(max_run_min: float) -> dict:
    """The longest training run within ``TRAIN_BUDGET_MIN`` minutes."""
    from ran.util.results import target

    return target("H1 notebook: longest training run (minutes of wall time)",
                  f"{max_run_min:.1f}", f"<= {TRAIN_BUDGET_MIN:g}",
                  max_run_min <= TRAIN_BUDGET_MIN, source=SOURCE, timing=True)  # fmt: skip


def init_sentence(init: dict, base: dict, init_equal: bool) -> str:
    """Exactness at init: ΔPPL, the NLLs (4 decimals; "exactly equal" when equal), logits."""
    from ran.util.wording import equal_or_pair

    d = 100 * (init["ppl"] / base["ppl"] - 1)
    exact = "0 exactly" if init["ppl"] == base["ppl"] else f"{d:+.2e}%"
    return (f"Injected at init: ΔPPL = {exact}, NLL {equal_or_pair(init['nll'], base['nll'])}; "
            f"the logits of the first blocks are torch.equal to the base model's: "
            f"{'yes' if init_equal else 'no'}.")  # fmt: skip


def h1_run_sentence(h1_label: str, runs: dict[str, dict]) -> str:
    """Which trained run H1, generation and overhead are measured on (with its hash)."""
    if h1_label not in runs:
        raise KeyError(f"the H1 run {h1_label!r} is not among the runs: {', '.join(runs)}")
    h = runs[h1_label].get("hash")
    return (f"H1, generation and overhead below are measured on the run {h1_label}"
            + (f" (config hash {h})." if h else "."))  # fmt: skip


def findings(
    model_name: str,
    h1_label: str,
    capacity: dict,
    elapsed: dict,
    idle_curves: dict[str, list[dict]],
    perplexity: dict[str, dict],
    init_equal: bool,
    stability: dict,
    gen_mean: dict[str, dict],
    ovh: dict,
    runs: dict[str, dict],
    figures: dict,
    outputs,
    *,
    ks,
    train_ks,
    k_max: int,
    pre_max: int,
    n_test: int,
    idle_k: int,
    idle_train,
    idle_eval,
    idle_n_test: int,
    ppl_blocks: int,
    block_len: int,
    carried: int,
    idle_long: int,
    gen_tokens: int,
    n_gen_prompts: int,
    overhead_reps: int,
    threads: int,
    cpu_count: int | None = None,
) -> list[dict]:
    """Notebook 03's findings blocks: the probe table and must-shows, the figures, H1's
    perplexity table and targets, stability, generation, overhead and the training budget,
    the last four measured on the run ``h1_label`` (a key of ``runs``).

    ``capacity`` (K -> evaluation with every control), ``elapsed`` (evaluation),
    ``idle_curves`` (label -> reservoir summary per idle count), ``perplexity``
    (condition -> ``nll``, ``ppl``, ``finite``, ``dppl_pct``), ``stability``
    (``carried``, ``after_blocks``, ``idle`` state stats), ``gen_mean`` (model ->
    mean ``rep4``, ``distinct2``, ``base_ppl``), ``ovh`` (:func:`overhead`),
    ``runs`` (see :func:`run_rows`) and ``figures`` (``capacity``, ``elapsed``,
    ``idle``, ``dppl`` paths) are what the notebook computed and saves; ``cpu_count``
    defaults to this machine's.
    """
    import os

    from ran.tasks.episodes import CONTROLS
    from ran.util.results import figure, table, target, text
    from ran.util.stats import above
    from ran.util.wording import ratio_text

    if cpu_count is None:
        cpu_count = os.cpu_count()
    rows = run_rows(runs)
    max_run_min = max(r[5] for r in rows)
    acc_rows = [
        [f"secret word K={k} (readout K={readout_for(k, train_ks)})", capacity[k]["n"],
         capacity[k]["chance"], *(fmt_acc(capacity[k][c]) for c in CONTROLS)]
        for k in ks
    ]  # fmt: skip
    acc_rows.append(
        [f"elapsed passes (k_max={k_max}, 0..{pre_max} passes before the event)", elapsed["n"],
         elapsed["chance"], *(fmt_acc(elapsed[c]) for c in CONTROLS)]
    )  # fmt: skip
    er, es, ez = elapsed["reservoir"], elapsed["stateless"], elapsed["reset"]
    el_met = above(er, es, ez)
    ppl = perplexity
    init = ppl["injected, init"]
    carry, after_blocks, idle_stab = stability["carried"], stability["after_blocks"], stability["idle"]  # fmt: skip
    stable = carry["finite"] and idle_stab["finite"] and all(p["finite"] for p in ppl.values())
    idle_last = {lab: st[-1] for lab, st in idle_curves.items()}
    return [
        table(
            f"Cross-pass probes on {model_name}: accuracy [95% Wilson CI] of every control on the "
            "identical test episodes (reset: state wiped before the question; shuffled: another "
            "episode's state; stateless: gate closed = base model; oracle: all passes in context)",
            ["probe", "n", "chance", *CONTROLS], acc_rows),
        text(recall_sentence(capacity, ks)),
        *recall_targets(capacity, ks),
        text(
            f"Elapsed passes (answer step only, k = 0..{k_max}, 0..{pre_max} filler passes "
            f"before the event so that counting passes since the reset does not give k; chance "
            f"{elapsed['chance']:.2f}): reservoir {fmt_acc(er)} vs stateless {fmt_acc(es)} "
            f"and reset {fmt_acc(ez)}: {'above' if el_met else 'not above'} both controls "
            "(non-overlapping 95% CIs)."),
        target("H1 notebook: elapsed passes, reservoir above the reset and stateless controls "
               "(must-show)", f"{fmt_acc(er)} vs {es['acc']:.3f} / {ez['acc']:.3f}",
               "non-overlapping 95% CIs", el_met, source=SOURCE),
        figure(figures["capacity"], f"Secret-word recall vs K with every control (95% Wilson CIs, "
               f"n = {n_test} test episodes per K); each K is tested with the readout trained at "
               f"the smallest K >= it among {list(train_ks)}.", outputs),
        figure(figures["elapsed"], f"Elapsed passes: confusion (row-normalised) of the reservoir, "
               f"stateless and reset controls on the same {elapsed['n']} test episodes.", outputs),
        figure(figures["idle"], f"Idle retention: K = {idle_k} recall after k zero-input passes, "
               f"readouts trained with idle counts {list(idle_train)} mixed; n = "
               f"{idle_n_test} per point. At k = {idle_eval[-1]}: "
               + ", ".join(f"{lab} {s['acc']:.2f}" for lab, s in idle_last.items()) + ".",
               outputs),
        text(h1_run_sentence(h1_label, runs)),
        table(
            f"Held-out Shakespeare perplexity ({ppl_blocks} test blocks x {block_len} tokens, one "
            "pass per block, state carried block to block)", ["condition", "PPL", "ΔPPL (%)"],
            [[n, f"{p['ppl']:.4f}", f"{p['dppl_pct']:+.3f}"] for n, p in ppl.items()]),
        figure(figures["dppl"], f"ΔPPL vs the base model; dotted lines at ±{DPPL_TARGET_PCT:g}%.",
               outputs),
        text(init_sentence(init, ppl["base"], init_equal)),
        text(dppl_sentence(ppl[PPL_TRAINED]["dppl_pct"], ppl[ppl_carried(carried)]["dppl_pct"],
                           carried)),
        dppl_target(ppl[PPL_TRAINED]["dppl_pct"]),
        text(
            f"Stability: state norm {carry['norm']:.3f} after {carried} carried passes, "
            f"{after_blocks['norm']:.3f} after the perplexity blocks, {idle_stab['norm']:.3g} after "
            f"{idle_long} further idle passes; all finite: {'yes' if stable else 'no'}."),
        table(
            f"Greedy generation, {gen_tokens} tokens from {n_gen_prompts} held-out prompts (means): "
            "4-gram repetition (fraction of repeated 4-grams), distinct-2, perplexity under the base",
            ["model", "rep-4", "distinct-2", "base PPL"],
            [[n, g["rep4"], g["distinct2"], g["base_ppl"]] for n, g in gen_mean.items()]),
        text(
            f"Injection overhead (forward, {block_len} tokens, batch 1, {overhead_reps} interleaved "
            f"repetitions, trained gate open): median time ratio "
            f"{ratio_text(ovh['median_ratio'], ovh['ratio_q25_q75'], interval='IQR')}.",
            timing=True),
        table("Training runs (wall time of the run as recorded; loaded = reused from the cache)",
              RUN_COLUMNS, rows, timing_columns=["wall (min)"]),
        text(budget_sentence(max_run_min, cpu_count, threads), timing=True),
        budget_target(max_run_min),
    ]  # fmt: skip
