"""Notebook 07's findings (ran.agent.findings) from hand-made measurements, no model."""

from __future__ import annotations

from ran.agent import findings as AF


def _scores(v: float) -> dict:
    return {m: {"value": v, "ci95": [v - 0.1, v + 0.1]} for m in ("precision", "recall", "f1")}


def _inputs(has_key=True, cued=0.5):
    check = {"key": "castle",
             "memory": {"reply": "castle!" if has_key else "hm", "has_key": has_key},
             "reset": {"reply": "no idea", "has_key": False}}  # fmt: skip
    cats = {"cued": {"emit_rate": cued}} if cued is not None else {}
    gate = {n: {"scores": _scores(v), "categories": cats}
            for n, v in (("stateful", 0.9), ("stateless", 0.6), ("always", 0.5))}  # fmt: skip
    gate |= {"n_turns": {"test": 40}, "positive_rate_test": 0.5}
    latency = {"n": 3, "interrupted": 1, "max_waited_passes": 1,
               "first_token_ms": {"median": 12.3, "p95": 20.0}}  # fmt: skip
    clock = {"k_values": [0, 2, 8], "acc": 0.7, "ci95": [0.5, 0.85], "chance": 0.33,
             "mae_ticks": 1.5, "mae_ticks_constant": 3.0}  # fmt: skip
    return "tiny", "castle", check, gate, latency, clock, 0.05


def test_agent_findings_headline_and_blocks():
    figs = {"gate": "g.png", "clock": "c.png"}
    out = AF.findings(*_inputs(), figs, None)
    assert out[0]["headline"] is True and list(out[0]) == ["kind", "text", "headline"]
    assert "the agent's reply contains the fact ('castle!')" in out[0]["text"]
    assert "reset before the question it does not contain it ('no idea')" in out[0]["text"]
    assert "stateful precision 0.90 [0.80, 1.00]" in out[1]["text"]
    assert "emitted at rate 0.50 (stateful)" in out[1]["text"]
    assert "idle ticks every 0.05 s" in out[2]["text"] and "after 12 ms (median" in out[2]["text"]
    assert "accuracy 0.70 [0.50, 0.85] against chance 0.33" in out[3]["text"]
    assert [b["kind"] for b in out] == ["text"] * 4 + ["figure"] * 2
    with_traj = AF.findings(*_inputs(), figs | {"trajectory": "t.png"}, None)
    assert with_traj[-1]["path"] == "t.png"


def test_agent_findings_flip_with_the_reply_and_missing_categories():
    out = AF.findings(*_inputs(has_key=False, cued=None), {"gate": "g", "clock": "c"}, None)
    assert "the agent's reply does not contain the fact ('hm')" in out[0]["text"]
    assert "emitted at rate n/a (stateful) and n/a (stateless)" in out[1]["text"]


def test_keys_findings_count_hits_silences_and_list_every_reply():
    rows = [{"key": k, "question": "Agent, q", "memory": m, "reset": r}
            for k, m, r in (("flute", "flute, flute", "no"), ("lantern", "lamp " * 20, None))]  # fmt: skip
    over = {"n": 2, "rows": rows,
            "memory": {"hits": 1, "rate": 0.5, "ci95": [0.09, 0.91], "emitted": 2},
            "reset": {"hits": 0, "rate": 0.0, "ci95": [0.0, 0.66], "emitted": 1}}  # fmt: skip
    sent, tab = AF.keys_findings(over, "prompt")
    assert "in 1/2 conversations (0.50 [0.09, 0.91]; 0 silent) as written" in sent["text"]
    assert "0/2 (0.00 [0.00, 0.66]; 1 silent) with the state reset" in sent["text"]
    assert "on its prompt only" in sent["text"] and "every reply emitted" not in sent["text"]
    assert "at every token" in AF.keys_findings(over, "always")[0]["text"]
    assert tab["rows"][0] == ["flute", "Agent, q", "flute, flute", "no"]
    assert tab["rows"][1][2].endswith("...") and len(tab["rows"][1][2]) == 48
    assert tab["rows"][1][3] == "(silent)"
    heard = {**over, "rows": [dict(r, memory="flute") for r in rows],
             "memory": {"hits": 2, "rate": 1.0, "ci95": [0.34, 1.0], "emitted": 2}}  # fmt: skip
    sent, tab = AF.keys_findings(over, "prompt", heard)
    assert (
        "With every reply emitted (the memory alone) the reply contains the key in 2/2"
        in sent["text"]
    )
    assert len(tab["columns"]) == 5 and tab["rows"][1][4] == "flute"
    out = AF.findings(*_inputs(), {"gate": "g", "clock": "c"}, None, over, "prompt", heard)
    assert out[-1]["kind"] == "table" and out[-2]["text"] == sent["text"]
    assert out[-2]["headline"] is True and "headline" not in out[0]  # the rate heads the summary
