"""Notebook 07's findings: the scripted conversation, the output gate, latency and the clock.

:func:`findings` turns what the notebook measured (:func:`ran.agent.demo.memory_check`,
:func:`ran.agent.gate_train.train_and_score`, :func:`ran.agent.measure.interrupt_latency`
and :func:`ran.agent.measure.elapsed_probe`) into the findings blocks it saves
(:mod:`ran.util.results`), every number computed from those results.
"""

from __future__ import annotations

from ran.util.results import figure, table, text

GATES = ("stateful", "stateless", "always")  # the output gates compared


def fmt_prf(s: dict) -> str:
    """Precision, recall and F1 of a gate's ``scores`` with their 95% CIs."""
    p, r, f = s["precision"], s["recall"], s["f1"]
    return (f"precision {p['value']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}], recall "
            f"{r['value']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}], F1 {f['value']:.2f} "
            f"[{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]")  # fmt: skip


def memory_sentence(model_name: str, key: str, check: dict) -> str:
    """The scripted conversation's reply as written and with the state reset (the headline)."""
    mem, rst = check["memory"], check["reset"]

    def has(c: dict) -> str:
        return "contains" if c["has_key"] else "does not contain"

    return (f"Scripted conversation ({model_name}): the fact {key!r} told inside a normal message, "
            f"four unrelated turns and 5 idle ticks, then a question; the agent's reply {has(mem)} "
            f"the fact ({mem['reply']!r}); with the state reset before the question it {has(rst)} "
            f"it ({rst['reply']!r}).")  # fmt: skip


def keys_findings(over: dict, read: str, heard: dict | None = None) -> list[dict]:
    """The scripted conversation over many held-out keys with the agent's output gate
    (``over``) and, given ``heard``, with every reply emitted (the memory without the gate):
    the hit rates, the silent replies, and every reply."""

    def rates(o: dict) -> str:
        m, r, n = o["memory"], o["reset"], o["n"]
        return (
            f"the reply contains the key in {m['hits']}/{n} conversations ({m['rate']:.2f} "
            f"[{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]; {n - m['emitted']} silent) as written and "
            f"in {r['hits']}/{n} ({r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]; "
            f"{n - r['emitted']} silent) with the state reset before the question"
        )

    sentence = (
        f"Free generation over {over['n']} held-out keys (keys, fact sentences and questions "
        f"from the memory probe's test pools, never seen in training; the same script per key; "
        f"the reply reads the memory {'on its prompt only' if read == 'prompt' else 'at every token'}). "
        f"With the agent's output gate {rates(over)}."
        + (f" With every reply emitted (the memory alone) {rates(heard)}." if heard else "")
    )
    rows = [
        [x["key"], x["question"], _short(x["memory"]), _short(x["reset"])] for x in over["rows"]
    ]
    if heard:
        cols = [
            "key",
            "question",
            "reply as written",
            "after the reset",
            "as written, every reply emitted",
        ]
        rows = [row + [_short(h["memory"])] for row, h in zip(rows, heard["rows"], strict=True)]
    else:
        cols = ["key", "question", "reply as written", "after the reset"]
    return [
        text(sentence),
        table("The scripted conversation per held-out key: the question and the replies", cols, rows),
    ]  # fmt: skip


def _short(reply: str | None, n: int = 48) -> str:
    if reply is None:
        return "(silent)"
    return reply if len(reply) <= n else reply[: n - 3] + "..."


def findings(
    model_name: str,
    key: str,
    check: dict,
    gate_report: dict,
    latency: dict,
    clock: dict,
    idle_every: float,
    figures: dict,
    outputs,
    keys: dict | None = None,
    read: str = "prompt",
    heard: dict | None = None,
) -> list[dict]:
    """Notebook 07's findings blocks: the scripted conversation (headline), the output gates,
    interrupt latency (idle ticks every ``idle_every`` seconds), the elapsed-time probe and
    the figures (``figures``: ``gate``, ``clock`` and, when drawn, ``trajectory`` paths) and,
    given ``keys`` (:func:`ran.agent.demo.recall_over_keys`), the script over held-out keys
    (``heard``: the same with every reply emitted)."""
    sf, sl, al = (gate_report[n]["scores"] for n in GATES)
    cued = {n: gate_report[n]["categories"].get("cued", {}).get("emit_rate") for n in GATES[:2]}
    cued = {n: "n/a" if v is None else f"{v:.2f}" for n, v in cued.items()}
    out = [
        # the headline, unless the many-key rate (below) heads the notebook's summary
        text(memory_sentence(model_name, key, check)) | ({} if keys is not None else {"headline": True}),
        text(
            f"Output gate on {gate_report['n_turns']['test']} held-out test turns (positive rate "
            f"{gate_report['positive_rate_test']:.2f}): stateful {fmt_prf(sf)}; stateless "
            f"{fmt_prf(sl)}; always-emit {fmt_prf(al)}. Turns that are requests only in context "
            f"(a bare phrase after 'answer my next message'): emitted at rate {cued['stateful']} "
            f"(stateful) and {cued['stateless']} (stateless)."),
        text(
            f"Interrupt latency ({latency['n']} messages at random moments, idle ticks every "
            f"{idle_every:g} s, {latency['interrupted']} arriving during a pass): at most "
            f"{latency['max_waited_passes']} pass(es) between arrival and the message's own pass; "
            f"first emitted token after {latency['first_token_ms']['median']:.0f} ms (median; p95 "
            f"{latency['first_token_ms']['p95']:.0f} ms).", timing=True),
        text(
            f"Elapsed time read from r(t) (idle ticks since the last message, classes "
            f"{clock['k_values']}): accuracy {clock['acc']:.2f} [{clock['ci95'][0]:.2f}, "
            f"{clock['ci95'][1]:.2f}] against chance {clock['chance']:.2f}, mean absolute error "
            f"{clock['mae_ticks']:.1f} ticks (always guessing the median: "
            f"{clock['mae_ticks_constant']:.1f})."),
        figure(figures["gate"], "Precision, recall and F1 (95% CIs) of the output gate with and "
               "without r(t) among its features, and of always emitting, on held-out wordings.",
               outputs),
        figure(figures["clock"], "Idle ticks since the last message decoded from r(t) (rows "
               "normalised).", outputs),
    ]  # fmt: skip
    if "trajectory" in figures:
        out.append(figure(figures["trajectory"], "r(t) after every pass of the scripted "
                          "conversation in a fixed PCA plane (fitted on the gate probe's test "
                          "states): as written (left) and with the state reset before the "
                          "question (right).", outputs))  # fmt: skip
    if keys is not None:
        block = keys_findings(keys, read, heard)
        out += [block[0] | {"headline": True}, *block[1:]]
    return out
