"""Notebook 06's H1 check and the H1 trade-off of the decoded read side.

:func:`h1_check` measures one trained run's perplexity cost after a fact pass (and
exactness at init). The trade-off trains the query-gated ``decoded+kl`` write side of
:mod:`ran.study.retention` at several KL weights (:func:`kl_plan`) and measures, per
weight (:func:`tradeoff_point`), held-out recall at d = 0 and after distractors, the H1
cost, and how far the read is open on plain text and at the questions
(:func:`gate_openness`): whether the read side learned to read only when asked.
"""

from __future__ import annotations

import torch

from ran.study.h1 import DPPL_TARGET_PCT
from ran.study.retention import (
    CURVE_CONTROLS,
    H1_FACT,
    config_for,
    evaluate_condition,
    test_episodes,
)
from ran.study.tables import fmt_acc
from ran.util.memo import memo
from ran.util.results import figure, table, target, text


def h1_check(run, n_blocks: int = 16, block_len: int = 128, fact: str = H1_FACT) -> dict:
    """H1 for a trained run: perplexity of held-out Shakespeare blocks with the state of one
    fact pass carried, against the untouched model, and exactness at init (gate closed).
    Returns ``ppl_base``, ``ppl_trained``, ``dppl_pct`` and ``init_equal``."""
    from ran.evaluation.quality import perplexity, perplexity_after_write, perplexity_at_init
    from ran.injection.models import load_model
    from ran.tasks.data import token_blocks

    blocks = token_blocks(run.tokenizer, "test", block_len, n_blocks)
    plain, _ = load_model(run.config.model_name, seed=run.config.model_seed)
    base, logits_base = perplexity(plain, blocks, keep_logits=2)
    init, logits_init = perplexity_at_init(
        plain, blocks, run.config.injection_config(), run.config.kind, keep_logits=2
    )
    trained = perplexity_after_write(run.model, run.handle, run.tokenizer, blocks, fact)
    equal = all(torch.equal(a, b) for a, b in zip(logits_base, logits_init, strict=True))
    return dict(
        ppl_base=base.ppl, ppl_init=init.ppl, ppl_trained=trained.ppl,
        dppl_pct=100 * (trained.ppl / base.ppl - 1), init_equal=equal,
        n_blocks=n_blocks, block_len=block_len, fact=fact,
    )  # fmt: skip


RECALL_TARGET = 0.9  # held-out recall the memory aims at (d = 0 and d = 8)


def kl_plan(base, lr: float, sr: float, weights) -> dict:
    """``{label: config}``: the ``decoded+kl`` write side at each KL weight (regime lr, sr)."""
    return {
        f"decoded+kl w={w:g}": config_for(base, "decoded+kl", lr, sr, kl_weight=float(w))
        for w in weights
    }


def tradeoff_point(run, outputs, n_test: int, distractors: int = 8) -> dict:
    """One KL weight's point: held-out recall at d = 0 and after ``distractors`` passes (with
    the reset and stateless controls) and its H1 check (:func:`h1_check`)."""
    return {
        "kl_weight": run.config.kl_weight,
        "hash": run.hash,
        "train_min": run.wall_time_s / 60,
        "d0": evaluate_condition(run, outputs, n_test, CURVE_CONTROLS),
        "d": evaluate_condition(run, outputs, n_test, CURVE_CONTROLS, distractors=(distractors,)),
        "distractors": distractors,
    } | _h1_parts(run, outputs, n_test)


def tradeoff_rows(points: list[dict]) -> list[dict]:
    """Tidy rows (kl_weight, condition, acc, lo, hi, dppl_pct) for the trade-off figure."""
    return [
        dict(
            kl_weight=p["kl_weight"],
            condition=cond,
            acc=p[key]["reservoir"]["acc"],
            lo=p[key]["reservoir"]["ci_low"],
            hi=p[key]["reservoir"]["ci_high"],
            dppl_pct=p["h1"]["dppl_pct"],
        )  # fmt: skip
        for p in points
        for key, cond in (("d0", "d=0"), ("d", f"d={p['distractors']}"))
    ]


def tradeoff_findings(
    points: list[dict], ref_label: str | None = None, ref=None, fig_path=None, outputs=None
) -> list[dict]:
    """The trade-off table, its sentence and (given ``fig_path``) its figure: recall vs H1 per
    KL weight, with how far the read is open on plain text and at the questions (``ref``: the
    best configuration's H1 without the KL term, as the first row)."""
    if not points:
        return []
    d = points[0]["distractors"]
    cols = ["KL weight", "d=0", f"d={d}", f"reset d={d}", "dPPL %", "open: text mean",
            "open: text p99", "open: questions", "train min"]  # fmt: skip
    body = []
    if ref is not None:
        body.append([f"0 ({ref_label})", "", "", "", f"{ref['dppl_pct']:+.2f}", "", "", "", ""])
    for p in sorted(points, key=lambda p: p["kl_weight"]):
        o = p.get("openness") or {}
        body.append([p["kl_weight"], fmt_acc(p["d0"]["reservoir"]), fmt_acc(p["d"]["reservoir"]),
                     p["d"]["reset"]["acc"], f"{p['h1']['dppl_pct']:+.2f}",
                     *[_r(o.get(c)) for c in ("text_mean", "text_p99", "question_mean")],
                     round(p["train_min"], 1)])  # fmt: skip
    both = [
        p for p in points
        if abs(p["h1"]["dppl_pct"]) <= DPPL_TARGET_PCT
        and min(p["d0"]["reservoir"]["acc"], p["d"]["reservoir"]["acc"]) >= RECALL_TARGET
    ]  # fmt: skip
    low = min(points, key=lambda p: abs(p["h1"]["dppl_pct"]))
    top = max(points, key=lambda p: p["d0"]["reservoir"]["acc"])
    sentence = (
        f"H1 against recall (decoded read side with a query gate, the KL term at each weight, "
        f"the last step kept): the smallest perplexity cost is dPPL "
        f"{low['h1']['dppl_pct']:+.2f}% at KL weight {low['kl_weight']:g}, where held-out recall "
        f"is {fmt_acc(low['d0']['reservoir'])} at d = 0 and {fmt_acc(low['d']['reservoir'])} after "
        f"{d} distractors."
        + (" " + _openness_sentence(low) if low.get("openness") else "")
        + (
            f" The highest recall at d = 0, {fmt_acc(top['d0']['reservoir'])} at KL weight "
            f"{top['kl_weight']:g}, costs dPPL {top['h1']['dppl_pct']:+.2f}%."
            if top is not low
            else ""
        )
    )
    targets = [
        target(f"Retention trade-off: dPPL after a fact pass at KL weight {p['kl_weight']:g}",
               f"{p['h1']['dppl_pct']:+.2f}%", f"|dPPL| <= {DPPL_TARGET_PCT:g}%",
               abs(p["h1"]["dppl_pct"]) <= DPPL_TARGET_PCT)
        for p in sorted(points, key=lambda p: p["kl_weight"])
    ]  # fmt: skip
    best = max(
        both or points, key=lambda p: min(p["d0"]["reservoir"]["acc"], p["d"]["reservoir"]["acc"])
    )
    targets.append(target(
        f"Retention trade-off: recall at d = 0 and d = {d} together with dPPL, at one KL weight",
        f"KL {best['kl_weight']:g}: {best['d0']['reservoir']['acc']:.3f} / "
        f"{best['d']['reservoir']['acc']:.3f}, dPPL {best['h1']['dppl_pct']:+.2f}%",
        f"recall >= {RECALL_TARGET:g} and |dPPL| <= {DPPL_TARGET_PCT:g}%", bool(both)))  # fmt: skip
    return [
        table(
            f"H1 against recall per KL weight (held-out, n = {points[0]['d0']['n']} per point; "
            f"dPPL on {points[0]['h1']['n_blocks']} held-out blocks of "
            f"{points[0]['h1']['block_len']} tokens after one fact pass; open: the read "
            "tanh(g) x query gate, mean over heads, on plain text and at the questions' last token)",
            cols,
            body,
        ),
        text(sentence),
        *targets,
    ] + ([] if fig_path is None else [
        figure(
            fig_path,
            f"H1 against recall: held-out recall at d = 0 and after {d} distractor passes (95% "
            "Wilson CIs) vs the perplexity cost after one fact pass, per KL weight; shaded: the H1 "
            "target.",
            outputs,
        )
    ])  # fmt: skip


SEPARATES = 3.0  # the query gate "tells questions from text" when open this many times more


def _openness_sentence(p: dict) -> str:
    return openness_sentence(p["openness"], f"At KL weight {p['kl_weight']:g} the read")


def openness_sentence(o: dict, lead: str = "The read") -> str:
    """How far the read is open at the held-out questions and on plain text (``o`` from
    :func:`gate_openness`), and whether the query gate tells them apart."""
    q, t = o["question_mean"], o["text_mean"]
    how = (
        "the query gate tells the held-out questions from plain text"
        if q >= SEPARATES * t
        else "the query gate hardly tells the held-out questions from plain text"
    )
    return (
        f"{lead} is open {q:.3f} at the held-out questions' last token (5th percentile "
        f"{o['question_p05']:.3f}) and {t:.3f} on plain text (99th percentile "
        f"{o['text_p99']:.3f}): {how}."
    )


def _h1_parts(run, outputs, n_test: int) -> dict:
    """``{"h1": h1_check(run), "openness": gate_openness(run, n_test)}``, memoised by the
    run's hash (a warm rerun neither loads the run's model nor the plain one)."""

    def compute():
        return {"h1": h1_check(run), "openness": gate_openness(run, n_test)}

    return memo(outputs, "h1_point", {"run": run.hash, "n": n_test}, compute)


def h1_point(run, n_test: int, outputs=None) -> dict:
    """:func:`h1_check` of a run plus, with a query gate, its :func:`gate_openness`
    (memoised under ``outputs``' cache when given)."""
    parts = _h1_parts(run, outputs, n_test)
    openness = parts["openness"]
    return parts["h1"] | ({"openness": openness} if openness is not None else {})


def _r(x, nd: int = 3):
    return "" if x is None else round(x, nd)


def gate_openness(run, n_test: int, n_blocks: int = 16, block_len: int = 128) -> dict | None:
    """How far the read is open, ``tanh(g_h) * sigmoid(w_h . x_t + c_h)`` averaged over heads,
    on plain text (the H1 blocks: mean and 99th percentile over tokens) and at the last token
    of the held-out question passes (mean and 5th percentile), where the answer is read. The
    query gate sees only layer L's input, which the memory does not change, so no state is
    needed. None without a query gate. Read from the handle's ``read_gate`` record."""
    from ran.tasks.data import token_blocks
    from ran.tasks.scoring import batch_encode

    handle = run.handle
    if handle.slots.query_gate is None:
        return None
    questions = [e.passes[-1] for e in test_episodes(run.config, n_test)]
    handle.record_read_gate = True
    try:
        with torch.no_grad():
            handle.reset_state()
            run.model(input_ids=token_blocks(run.tokenizer, "test", block_len, n_blocks))
            text_open = handle.read_gate.flatten()  # (B, Q) of the pass
            handle.reset_state()
            ids, mask = batch_encode(run.tokenizer, questions)
            run.model(input_ids=ids, attention_mask=mask)
            q_open = handle.read_gate[:, -1]
    finally:
        handle.record_read_gate, handle.read_gate = False, None
        handle.reset_state()
    q = torch.tensor([0.99, 0.05])
    return dict(
        text_mean=text_open.mean().item(), text_p99=text_open.quantile(q[0]).item(),
        question_mean=q_open.mean().item(), question_p05=q_open.quantile(q[1]).item(),
        n_tokens=text_open.numel(), n_questions=q_open.numel(),
    )  # fmt: skip
