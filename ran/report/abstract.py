"""FINDINGS' generated abstract: the headline results with their CIs and controls.

One paragraph of :data:`SOURCES` sentences, each built from one (or two) results files'
payloads: exactness at init (02, 03), H1 after training (03), cross-pass recall at
K = 16 with its controls (03), held-out retention (06), the agent's held-out rate (07),
the seed study (05) and the injection's overhead (bench). A sentence whose file is
missing says "No results yet for ..."; one whose file lacks a number it needs says so.
Every number is read from ``data/results``; nothing is typed here.
"""

from __future__ import annotations

import json

from ran.study.h1 import PPL_TRAINED, RECALL_TARGET_K
from ran.study.seeds import ALPHA as SEED_ALPHA
from ran.util.results import Outputs
from ran.util.wording import ratio_text


def _acc(s: dict) -> str:
    return f"{s['acc']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def _pct(x: float) -> str:
    """A perplexity change in percent: whole percents from 100% up."""
    return f"{x:+.0f}%" if abs(x) >= 100 else f"{x:+.1f}%"


def _rate(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def init_sentence(surgery: dict, h1: dict) -> str:
    """Bit-identity at init: the surgery cases (02) and the held-out NLL (03)."""
    rows = surgery["exactness"]
    eq = sum(bool(r["equal"]) for r in rows)
    p = h1["perplexity"]
    a, b = p["base"]["nll"], p["injected, init"]["nll"]
    same = "exactly equal" if a == b else f"{a:.4f} vs {b:.4f}"
    return (
        f"With its gate closed at initialisation the injected model is bit-identical to the "
        f"base model: torch.equal outputs in {eq} of {len(rows)} surgery cases (two models, "
        f"two attention kernels, padding, forward and generate), and a held-out NLL of "
        f"{a:.4f} nats per token, {same} to the base model's."
    )


def h1_sentence(h1: dict) -> str:
    """H1 after training (03): ΔPPL with the state of a probe pass and after many passes."""
    p = h1["perplexity"]
    carried = h1["settings"]["carried"]
    after = next(v for k, v in p.items() if k.startswith("trained, after"))
    return (
        f"After training only the readout and the gates, held-out perplexity changes by "
        f"{p[PPL_TRAINED]['dppl_pct']:+.3f}% with the state of a probe pass carried and by "
        f"{after['dppl_pct']:+.3f}% after {carried} carried passes."
    )


def recall_sentence(h1: dict) -> str:
    """Cross-pass recall (03) at K = 16 (else the largest K) with every control, and at the
    largest K."""
    cap = {int(k): v for k, v in h1["capacity"].items()}
    k = RECALL_TARGET_K if RECALL_TARGET_K in cap else max(cap)
    c, k_max = cap[k], max(cap)
    out = (
        f"Across independent forward passes the model recalls a secret word among K = {k} with "
        f"accuracy {_acc(c['reservoir'])} (95% Wilson CI, n = {c['n']}), against "
        f"{c['reset']['acc']:.3f} with the state reset, {c['stateless']['acc']:.3f} for the "
        f"stateless base model and chance {c['chance']:.3f}"
    )
    if k_max != k:
        out += f"; at K = {k_max}, {_acc(cap[k_max]['reservoir'])} (chance {1 / k_max:.3f})"
    return out + "."


def retention_sentence(ret: dict, wide: dict | None = None) -> str:
    """Held-out retention (06): the first configuration's recall at d = 0, after 8 distractor
    passes and after the most idle ticks, its H1 cost, and the trade-off's cheapest point
    (from the wide comparison ``wide``, 06_extended, when the default run has none)."""
    label, m = next(iter(ret["measured"].items()))
    d, i = m["distractors"], m["idle"]
    d8 = next((r for r in d if r["distractors"] == 8), d[-1])
    gated = bool((ret.get("configs") or {}).get(label, {}).get("read_gate"))
    side = "and a read gate fitted before training " if gated else ""
    out = (
        f"With a fact told inside running text and keys and templates never seen in training, "
        f"the learned write side with the decoded read side {side}({label}) recalls it at "
        f"{_acc(d[0]['reservoir'])} in the next pass (reset {d[0]['reset']['acc']:.3f}, "
        f"stateless {d[0]['stateless']['acc']:.3f}, chance {d[0]['chance']:.3f}), "
        f"{_acc(d8['reservoir'])} after {d8['distractors']} distractor passes and "
        f"{_acc(i[-1]['reservoir'])} after {i[-1]['idle_steps']} idle ticks"
    )
    h1 = (ret.get("h1") or {}).get(label)
    if h1:
        out += f", at a perplexity cost of {_pct(h1['dppl_pct'])} on plain text after a fact pass"
    trade = ret.get("tradeoff") or (wide or {}).get("tradeoff") or []
    if trade:
        low = min(trade, key=lambda p: abs(p["h1"]["dppl_pct"]))
        out += (
            f"; with the KL term instead{' of the fitted gate' if gated else ''} the smallest "
            f"cost is {_pct(low['h1']['dppl_pct'])} (weight "
            f"{low['kl_weight']:g}), where recall is {_acc(low['d0']['reservoir'])}"
        )
    return out + "."


def agent_sentence(agent: dict) -> str:
    """The agent's held-out rate (07), with every reply emitted and with its output gate."""
    every, gated = agent.get("keys_every_reply"), agent["keys"]
    n = gated["n"]
    g = gated["memory"]
    gate = (
        f"with its trained output gate it names the key in {g['hits']}/{n} ({_rate(g)}; "
        f"{n - g['emitted']} silent)"
    )
    if not every:
        return (
            f"The Reservoir Agent, {gate} of {n} scripted conversations over held-out keys, and "
            f"in {gated['reset']['hits']}/{n} with the state reset before the question."
        )
    m, r = every["memory"], every["reset"]
    return (
        f"The Reservoir Agent built on that memory names a held-out key in {m['hits']}/"
        f"{every['n']} scripted conversations ({_rate(m)}) when every reply is emitted and in "
        f"{r['hits']}/{every['n']} with the state reset before the question; {gate}."
    )


def seeds_sentence(seeds: dict) -> str:
    """The seed study (05): the spread of test accuracy over reservoir seeds, its test."""
    v, s = seeds["variance"], seeds["settings"]
    k = s["base_config"]["probe_params"]["k"]
    chi = seeds["chi2_homogeneity"]
    head = (
        f"Across {len(s['seeds'])} reservoir seeds, K = {k} test accuracy after "
        f"{s['base_config']['steps']} training steps ranges from {v['min']:.3f} to "
        f"{v['max']:.3f} (mean {v['mean']:.3f}, sd {v['sd']:.3f}; chi-square test of equal "
        f"accuracy p = {chi['p']:.2g})"
    )
    if chi["p"] < SEED_ALPHA:
        return (
            head + ": the seed alone changes accuracy beyond sampling noise, so differences "
            "between settings smaller than that spread are not evidence."
        )
    return head + ": a spread within sampling noise."


def overhead_sentence(bench: dict) -> str:
    """The injection's forward-time overhead (bench)."""
    o = bench["overhead"]
    return (
        f"The injection's forward-time ratio on {o['model']} at {o['seq_len']} tokens is "
        f"{ratio_text(o['median_ratio'], o['ratio_ci95'])}."
    )


# (results files the sentence reads, the function that writes it), in the paragraph's order
SOURCES = (
    (("02_surgery", "03_h1_nondestruction"), init_sentence),
    (("03_h1_nondestruction",), h1_sentence),
    (("03_h1_nondestruction",), recall_sentence),
    (("06_retention", "06_extended?"), retention_sentence),
    (("07_agent",), agent_sentence),
    (("05_seed_selection",), seeds_sentence),
    (("bench",), overhead_sentence),
)


def abstract(outputs: Outputs) -> str:
    """The abstract paragraph from the results of ``outputs`` (see module doc)."""
    sentences, missing = [], []
    for names, fn in SOURCES:  # a name ending in "?" is optional (None when absent)
        paths = [outputs.results / f"{n.rstrip('?')}.json" for n in names]
        absent = [
            n for n, p in zip(names, paths, strict=True) if not p.exists() and not n.endswith("?")
        ]
        if absent:
            missing += [n for n in absent if n not in missing]
            continue
        payloads = [json.loads(p.read_text())["results"] if p.exists() else None for p in paths]
        try:
            sentences.append(fn(*payloads))
        except (KeyError, IndexError, TypeError, ValueError, StopIteration):
            sentences.append(
                f"The results in {', '.join(f'`{n}`' for n in names)} lack a number this "
                "sentence needs; rerun the notebook."
            )
    if missing:
        how = [f"`python -m ran run --profile {outputs.profile}`"] * any(
            n != "bench" for n in missing
        )
        how += ["`make bench`"] * ("bench" in missing)
        sentences.append(
            "No results yet for " + ", ".join(f"`{n}`" for n in missing) + f" (run "
            f"{' and '.join(how)}, then `python -m ran report`)."
        )
    return " ".join(sentences) + "\n"
