"""Tables, checks and generated findings of a mechanism comparison (:mod:`ran.study.compare`).

* :func:`comparison_rows`: the probe table (recall at every K, reset and
  shuffled controls, elapsed passes, idle retention; then the stateless model,
  the oracle and chance) and the cost table (ΔPPL, generation, overhead,
  training wall time) of a comparison.
* :func:`no_state_check`, :func:`elapsed_check`: the must-shows, each a
  comparison of 95% Wilson CIs.
* :func:`findings`: those tables and checks as the findings blocks a notebook
  saves (:mod:`ran.util.results`), captions and sentences computed from the numbers.
"""

from __future__ import annotations

from ran.mechanisms import registry
from ran.util import results as R
from ran.util.stats import above


def fmt_acc(s: dict) -> str:
    """``acc [lo, hi]`` of an accuracy summary."""
    return f"{s['acc']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def fmt_ci(v: float, ci, f: str = "+.2f") -> str:
    """``v [lo, hi]`` (just ``v`` without a CI) in format ``f``."""
    return f"{v:{f}}" if ci is None else f"{v:{f}} [{ci[0]:{f}}, {ci[1]:{f}}]"


def comparison_rows(results: dict[str, dict], ks: tuple[int, ...]) -> tuple[list, list]:
    """Rows of the two comparison tables: cross-pass probes, and cost / non-destruction.

    The probe table ends with the stateless model, the oracle and chance (the
    controls common to every mechanism, taken from the first result).
    """
    probe_rows, cost_rows = [], []
    for label, r in results.items():
        k_max, idle = ks[-1], r["idle"]
        probe_rows.append(
            [label, r["trainable_params"], *(fmt_acc(r["recall"][k]["reservoir"]) for k in ks),
             fmt_acc(r["recall"][k_max]["reset"]), fmt_acc(r["recall"][k_max]["shuffled"]),
             *_elapsed_cells(r["elapsed"], ("reservoir", "reset")),
             *(fmt_acc(idle[n]["reservoir"]) for n in idle)]
        )  # fmt: skip
        g, o = r["generation"], r["overhead"]
        cost_rows.append(
            [label, r["trainable_params"], fmt_ci(r["dppl_init"]["dppl_pct"], r["dppl_init"]["ci95"]),
             fmt_ci(r["dppl_trained"]["dppl_pct"], r["dppl_trained"]["ci95"]),
             fmt_ci(g["rep4"]["mean"], g["rep4"]["ci95"], ".3f"),
             fmt_ci(g["distinct2"]["mean"], g["distinct2"]["ci95"], ".3f"),
             fmt_ci(g["base_ppl"]["mean"], g["base_ppl"]["ci95"], ".3g"),
             fmt_ci(o["median_ratio"], o["ci95"], ".3f"), r["train_wall_s"] / 60]
        )  # fmt: skip
    first = reference(results)
    el = elapsed_reference(results)
    n_idle = len(first["idle"])
    for ctrl in ("stateless", "oracle"):
        probe_rows.append(
            [f"{ctrl} (base model)" if ctrl == "stateless" else "oracle (all passes in context)", 0,
             *(fmt_acc(first["recall"][k][ctrl]) for k in ks), "", "",
             *_elapsed_cells(el, (ctrl,)), "",
             *(fmt_acc(s[ctrl]) if ctrl in s else "" for s in first["idle"].values())]
        )  # fmt: skip
    probe_rows.append(
        ["chance", 0, *(f"{1 / k:.3f}" for k in ks), f"{1 / ks[-1]:.3f}", f"{1 / ks[-1]:.3f}",
         *[f"{el['chance']:.3f}" if el else "n/a"] * 2,
         *[f"{next(iter(first['idle'].values()))['chance']:.3f}"] * n_idle]
    )  # fmt: skip
    return probe_rows, cost_rows


def reference(results: dict[str, dict]) -> dict:
    """The first result that carries the base-model controls (stateless, oracle)."""
    for r in results.values():
        if "stateless" in next(iter(r["recall"].values())):
            return r
    raise ValueError("no mechanism of the comparison was evaluated with base_controls=True")


def elapsed_reference(results: dict[str, dict]) -> dict | None:
    """The first elapsed evaluation that carries the base-model controls (None: none does)."""
    return next(
        (r["elapsed"] for r in results.values() if r["elapsed"] and "stateless" in r["elapsed"]),
        None,
    )


def _elapsed_cells(ev: dict | None, controls: tuple[str, ...]) -> list[str]:
    return [fmt_acc(ev[c]) if ev else "n/a" for c in controls]


def probe_columns(ks: tuple[int, ...], idle_counts: tuple[int, ...]) -> list[str]:
    """Column names of the probe table of :func:`comparison_rows`."""
    return ["mechanism", "trainable params", *(f"recall K={k}" for k in ks),
            f"reset K={ks[-1]}", f"shuffled K={ks[-1]}", "elapsed", "elapsed reset",
            *(f"idle {n}" for n in idle_counts)]  # fmt: skip


COST_COLUMNS = ["mechanism", "trainable params", "ΔPPL init (%)", "ΔPPL trained (%)", "rep-4",
                "distinct-2", "gen. base PPL", "overhead ratio", "train wall (min)"]  # fmt: skip
TIMING_COLUMNS = ["overhead ratio", "train wall (min)"]  # columns that state a time


def no_state_check(results: dict[str, dict], ks: tuple[int, ...], stateful: str = "reservoir",
                   static: str = "persistent") -> dict:  # fmt: skip
    """Per K: does ``static`` carry no state, are it and the stateless model at chance, and
    is ``stateful`` above both (non-overlapping 95% Wilson CIs)?

    ``same_as_reset`` compares the static mechanism's predictions with and
    without its state reset before the question: identical for a mechanism
    without state, whatever it learned.
    """
    out = {}
    for k in ks:
        r, p = results[stateful]["recall"][k], results[static]["recall"][k]
        s, pr, c = reference(results)["recall"][k]["stateless"], p["reservoir"], 1 / k
        out[k] = {
            "chance": c,
            "reservoir": r["reservoir"],
            "static": pr,
            "stateless": s,
            "same_as_reset": p["reservoir"]["pred"] == p["reset"]["pred"],
            "static_at_chance": pr["ci_low"] <= c <= pr["ci_high"],
            "stateless_at_chance": s["ci_low"] <= c <= s["ci_high"],
            "above": above(r["reservoir"], pr, s),
        }
    return out


def elapsed_check(results: dict[str, dict]) -> dict[str, dict]:
    """Per mechanism that ran the elapsed probe: its accuracy, its reset control, the
    stateless model's, chance, and whether it beats both controls with non-overlapping
    95% Wilson CIs (the must-show of notebook 03, asked of every mechanism)."""
    ran = {label: r["elapsed"] for label, r in results.items() if r["elapsed"]}
    if not ran:
        return {}
    ref = elapsed_reference(results)
    if ref is None:
        raise ValueError(
            "no elapsed result carries the stateless control (see check_elapsed_kinds)"
        )
    s = ref["stateless"]
    out = {}
    for label, ev in ran.items():
        a, z = ev["reservoir"], ev["reset"]
        out[label] = {"acc": a, "reset": z, "stateless": s, "chance": ev["chance"],
                      "above": above(a, z, s)}  # fmt: skip
    return out


def must_shows(cmp: dict[str, dict], ks: tuple[int, ...]) -> dict:
    """``no_state_check`` (empty unless both the reservoir and the persistent slots ran)
    and ``elapsed_check`` of a comparison, as saved with its results."""
    both = {"reservoir", "persistent"} <= set(cmp)
    return {"no_state_check": no_state_check(cmp, ks) if both else {},
            "elapsed_check": elapsed_check(cmp)}  # fmt: skip


def no_state_sentence(k: int, c: dict) -> str:
    """Recall at K = ``k`` of the reservoir against the persistent slots and the stateless
    model (one entry of :func:`no_state_check`)."""
    same = "identical" if c["same_as_reset"] else "different"
    return (
        f"Recall across passes, K = {k} (chance {c['chance']:.3f}): reservoir "
        f"{fmt_acc(c['reservoir'])}, persistent slots {fmt_acc(c['static'])} ({same} "
        f"predictions with the state reset; CI {'covers' if c['static_at_chance'] else 'misses'} "
        f"chance), stateless model {fmt_acc(c['stateless'])} (CI "
        f"{'covers' if c['stateless_at_chance'] else 'misses'} chance): the reservoir is "
        f"{'above' if c['above'] else 'not above'} both (non-overlapping 95% CIs)."
    )


def findings(
    cmp: dict[str, dict],
    cc,
    base_generation: dict,
    figure_path,
    outputs,
    failed: dict | None = None,
    gated=None,
    headline_k: int | None = None,
) -> list:
    """The findings blocks of one comparison: probe and cost tables, the ΔPPL-at-init
    sentence, failures, the no-state and elapsed must-shows, and the figure.

    ``cc`` is the comparison's :class:`ran.study.compare.CompareConfig`, ``gated`` the
    gated attractor's settings (for the caption; None: no attractor), and
    ``headline_k`` the K whose must-show sentence is flagged as the README headline.
    """
    ks, name = cc.ks, cc.model_name
    k_max, pre_max = cc.elapsed_params.get("k_max"), cc.elapsed_params.get("pre_max", 0)
    probe_rows, cost_rows = comparison_rows(cmp, ks)
    gen = base_generation
    untrained = any(
        r.get("kind") in registry.kinds() and not registry.get(r["kind"]).trained
        for r in cmp.values()
    )
    att_text = (
        f" The attractor is untrained (feedback gain g = {gated.gate:g}); with a burn-in of "
        f"{gated.burn_in} passes the question of a two-pass recall episode gets no feedback, so "
        "the gated attractor's recall is the stateless model's by construction."
        if untrained and gated is not None else ""
    )  # fmt: skip
    out = [
        R.table(
            f"Cross-pass probes on {name}: accuracy [95% Wilson CI] of every mechanism on the "
            f"identical test episodes; recall readouts trained once at K = {cc.k_train} and tested "
            f"as a K-way forced choice ({cc.n_test} episodes per K); reset/shuffled: state wiped / "
            f"another episode's state before the question (K = {cc.k_train}); elapsed: k = "
            f"0..{k_max} after 0..{pre_max} passes before the event (n/a: not run); idle n: "
            f"K = {cc.idle_k} recall after n zero-input passes, with the recall readout (never "
            f"trained on idle passes).{att_text}",
            probe_columns(ks, cc.idle_counts), probe_rows),
        R.table(
            f"Cost and non-destruction on {name}: ΔPPL vs the base ({cc.ppl_blocks} held-out "
            f"blocks x {cc.block_len} tokens; paired bootstrap 95% CI over blocks) at init (gate "
            f"closed) and after training with the state carried from a probe pass (attractor: "
            f"feedback on); {cc.gen_tokens}-token greedy generation from {cc.n_gen_prompts} "
            f"held-out prompt(s) (rep-4, distinct-2, perplexity under the base; base model: rep-4 "
            f"{gen['rep4']['mean']:.3f}, distinct-2 {gen['distinct2']['mean']:.3f}, base PPL "
            f"{gen['base_ppl']['mean']:.3g}); forward-time ratio at {cc.block_len} tokens (median "
            f"of {cc.overhead_reps} interleaved reps, bootstrap 95% CI); training wall time of the "
            "recall and elapsed runs as recorded.",
            COST_COLUMNS, cost_rows, timing_columns=TIMING_COLUMNS),
        R.text(
            f"At init every mechanism leaves held-out perplexity unchanged: "
            f"{sum(r['dppl_init']['dppl_pct'] == 0 for r in cmp.values())} of {len(cmp)} give "
            f"ΔPPL = 0 exactly, with torch.equal first-block logits in "
            f"{sum(r['dppl_init']['logits_equal'] for r in cmp.values())} of {len(cmp)}."),
    ]  # fmt: skip
    if failed:
        out.append(R.text("Failed and left out of the tables (same settings as the others): "
                          + "; ".join(f"{lab}: {msg}" for lab, msg in failed.items()) + "."))  # fmt: skip
    checks = must_shows(cmp, ks)
    for k, c in checks["no_state_check"].items():
        out.append({"headline": k == headline_k} | R.text(no_state_sentence(k, c)))
        out.append(R.target(
            f"Comparison: reservoir recall above persistent slots and the stateless model, K = {k} "
            "(must-show)", f"{fmt_acc(c['reservoir'])} vs {c['static']['acc']:.3f} / "
            f"{c['stateless']['acc']:.3f}", "non-overlapping 95% CIs", c["above"]))  # fmt: skip
    el = checks["elapsed_check"]
    if el:
        ref = next(iter(el.values()))
        out.append(R.text(
            f"Elapsed passes (answers 0..{k_max}, chance {ref['chance']:.3f}, stateless model "
            f"{fmt_acc(ref['stateless'])}): "
            + "; ".join(f"{lab} {fmt_acc(c['acc'])} (reset {fmt_acc(c['reset'])}), "
                        f"{'above' if c['above'] else 'not above'} both controls"
                        for lab, c in el.items())
            + f" (non-overlapping 95% CIs; {cc.elapsed_steps} training steps each, KL weight "
            f"{cc.kl_weight:g})."))  # fmt: skip
        if "reservoir" in el:
            c = el["reservoir"]
            out.append(R.target(
                "Comparison: elapsed passes, reservoir above its reset and the stateless model "
                "(must-show)", f"{fmt_acc(c['acc'])} vs {c['reset']['acc']:.3f} / "
                f"{c['stateless']['acc']:.3f}", "non-overlapping 95% CIs", c["above"]))  # fmt: skip
    out.append(R.figure(
        figure_path, f"Mechanisms on {name}: recall at K = {list(ks)} and elapsed passes (bars: "
        "with state; open squares: state reset; dashed: stateless base model; dotted: chance; 95% "
        "Wilson CIs), ΔPPL after training and forward-time ratio (bootstrap 95% CIs).", outputs))  # fmt: skip
    return out
