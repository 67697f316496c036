"""Notebook 03 (H1, non-destruction, and the capacity curve): its computation.

* :func:`nondestruction`: every perplexity condition of H1 and the stability check
  for one trained run; :func:`generation_pair`: base vs trained generations;
* :func:`readout_for` / :func:`probe_test_episodes`: which trained readout serves
  which K in the capacity curve, and test episodes of a probe variant;
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
def run_rows(runs: dict[str, dict]) -> list[list]:
    """One row per training run (``RUN_COLUMNS``) from ``name -> {hash, config (dict),
    wall_time_s, loaded, history}`` (the ``runs`` of notebook 03's results)."""
    return [
        [name, r["hash"], r["config"]["learning_rate"], r["config"]["steps"],
         len(r["history"]["step"]), r["history"]["best_val_acc"], r["wall_time_s"] / 60,
         r["loaded"]]
        for name, r in runs.items()
    ]  # fmt: skip


RUN_COLUMNS = ["run", "config hash", "peak lr", "max steps", "steps run", "best val acc",
               "wall (min)", "loaded"]  # fmt: skip


def recall_sentence(capacity: dict, ks) -> str:
    """The must-show at K = 16 (when tested) and the aim at the largest K, met or not."""
    c16 = capacity[RECALL_TARGET_K]["reservoir"] if RECALL_TARGET_K in capacity else None
    ckmax = capacity[max(ks)]["reservoir"]
    head = ""
    if c16:
        met = "met" if c16["acc"] >= RECALL_TARGET_K16 else "NOT met"
        head = (f"Must-show, recall >= {RECALL_TARGET_K16:g} at K={RECALL_TARGET_K}: {met} "
                f"({fmt_acc(c16)}, n = {c16['n']}). ")  # fmt: skip
    reached = "reached" if ckmax["acc"] >= RECALL_AIM_KMAX else "not reached"
    return head + (f"Aim >= {RECALL_AIM_KMAX:g} at K={max(ks)}: {reached} ({fmt_acc(ckmax)}; "
                   f"chance {1 / max(ks):.3f}).")  # fmt: skip


def dppl_sentence(d_trained: float, d_carried: float, carried: int) -> str:
    """The H1 target: |ΔPPL| after training within ``DPPL_TARGET_PCT``, met or not."""
    met = "met" if abs(d_trained) <= DPPL_TARGET_PCT else "NOT met"
    return (f"Target ΔPPL within {DPPL_TARGET_PCT:g}% after training: {met} ({d_trained:+.3f}% "
            f"with the state carried from a probe pass; {d_carried:+.3f}% after {carried} "
            "carried passes).")  # fmt: skip


def budget_sentence(max_run_min: float, cpu_count: int | None, threads: int) -> str:
    """The longest training run against the ``TRAIN_BUDGET_MIN`` budget."""
    within = "within" if max_run_min <= TRAIN_BUDGET_MIN else "over"
    return (f"Longest training run: {max_run_min:.1f} minutes of wall time on this machine's CPU "
            f"({cpu_count} cores, {threads} torch threads) ({within} the "
            f"{TRAIN_BUDGET_MIN:g}-minute budget).")  # fmt: skip


def findings(
    model_name: str,
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
    perplexity table and targets, stability, generation, overhead and the training budget.

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
    from ran.util.results import figure, table, text
    from ran.util.stats import above

    if cpu_count is None:
        cpu_count = os.cpu_count()
    rows = run_rows(runs)
    max_run_min = max(r[6] for r in rows)
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
    base_ppl = ppl["base"]["ppl"]
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
        text(
            f"Must-show, elapsed passes (answer step only, k = 0..{k_max}, 0..{pre_max} filler passes "
            f"before the event so that counting passes since the reset does not give k; chance "
            f"{elapsed['chance']:.2f}): reservoir {fmt_acc(er)} vs stateless {fmt_acc(es)} "
            f"and reset {fmt_acc(ez)}: non-overlapping 95% CIs {'met' if el_met else 'NOT met'}."),
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
        table(
            f"Held-out Shakespeare perplexity ({ppl_blocks} test blocks x {block_len} tokens, one "
            "pass per block, state carried block to block)", ["condition", "PPL", "ΔPPL (%)"],
            [[n, p["ppl"], p["dppl_pct"]] for n, p in ppl.items()], fmt=".6g"),
        figure(figures["dppl"], f"ΔPPL vs the base model; dotted lines at ±{DPPL_TARGET_PCT:g}%.",
               outputs),
        text(
            f"Injected at init: ΔPPL = {init['ppl'] - base_ppl!r} exactly (NLL "
            f"{init['nll']!r} vs {ppl['base']['nll']!r}); torch.equal of the logits of "
            f"the first blocks: {init_equal}."),
        text(dppl_sentence(ppl[PPL_TRAINED]["dppl_pct"], ppl[ppl_carried(carried)]["dppl_pct"],
                           carried)),
        text(
            f"Stability: state norm {carry['norm']:.3f} after {carried} carried passes, "
            f"{after_blocks['norm']:.3f} after the perplexity blocks, {idle_stab['norm']:.3g} after "
            f"{idle_long} further idle passes; all finite: {stable}."),
        table(
            f"Greedy generation, {gen_tokens} tokens from {n_gen_prompts} held-out prompts (means): "
            "4-gram repetition (fraction of repeated 4-grams), distinct-2, perplexity under the base",
            ["model", "rep-4", "distinct-2", "base PPL"],
            [[n, g["rep4"], g["distinct2"], g["base_ppl"]] for n, g in gen_mean.items()]),
        text(
            f"Injection overhead (forward, {block_len} tokens, batch 1, {overhead_reps} interleaved "
            f"repetitions, trained gate open): median time ratio {ovh['median_ratio']:.3f} "
            f"(IQR {ovh['ratio_q25_q75'][0]:.3f}-{ovh['ratio_q25_q75'][1]:.3f})."),
        table("Training runs (wall time of the run as recorded; loaded = reused from the cache)",
              RUN_COLUMNS, rows),
        text(budget_sentence(max_run_min, cpu_count, threads)),
    ]  # fmt: skip
