"""The agent's runtime on tiny-llama: passes, buffer, checkpoints, refusals, bad input, 10,000 ticks."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from agent_helpers import SMALL_PROBE, UNITS, load_handle, make_adapter

from ran.agent import measure
from ran.agent.checkpoint import RECORD, SLOTS, agent_identity
from ran.agent.config import AgentConfig, AgentError
from ran.agent.events import read_log
from ran.agent.gate import AlwaysEmit, OutputGate
from ran.agent.gate_train import train_and_score
from ran.agent.runtime import Request, ReservoirAgent
from ran.agent.script import run_script


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("adapter") / "tiny")


@pytest.fixture(scope="module")
def trained(adapter):
    """The stateful and stateless gates of the adapter and their report (small probe)."""
    handle, tok = load_handle(adapter)
    gates, report = train_and_score(handle, tok, SMALL_PROBE, agent_identity(handle))
    handle.remove()
    return gates, report


@pytest.fixture
def agent_factory(adapter, tmp_path):
    made = []

    def make(gate=None, **cfg):
        handle, tok = load_handle(adapter)
        agent = ReservoirAgent(handle, tok, gate, AgentConfig(**cfg), adapter)
        made.append(agent)
        return agent

    yield make
    for a in made:
        a.handle.remove()


def test_passes_report_their_events_in_order(agent_factory, tmp_path):
    log = tmp_path / "events.jsonl"
    agent = agent_factory(log_path=str(log), checkpoint_dir=str(tmp_path / "ck"))
    emitted = agent.send("Agent, what is the harbor made of?")
    assert (
        emitted.kind == "emitted"
        and emitted.data["latency_ms"] > 0
        and emitted.data["tokens_out"] >= 1
    )
    ticks = agent.idle(2)
    assert [e.kind for e in ticks] == ["idle", "idle"] and all(
        e.data["tick_ms"] >= 0 for e in ticks
    )
    review = agent.review()
    assert (
        review.kind == "silent" and review.data["kind"] == "review"
    )  # reviews stay silent by default
    agent.close()
    kinds = [d["kind"] for d in read_log(log)]
    assert kinds[0] == "started" and kinds[-1] == "stopped"
    per_pass = ["pass", "emitted", "checkpoint"] + ["pass", "idle", "checkpoint"] * 2
    assert kinds[1:-1] == per_pass + ["pass", "silent", "checkpoint"]
    c = agent.counters
    assert (c.passes, c.prompted, c.idle_ticks, c.reviews, c.emitted, c.silent) == (
        4,
        1,
        2,
        1,
        1,
        1,
    )


def test_reply_advances_the_state_as_generate_defines(agent_factory, adapter):
    agent = agent_factory(read="always")  # the plain generate() below reads at every token
    agent.send("The lantern was left on the table.")
    before = agent.state.clone()
    reply = agent.send("Agent, tell me about the lantern.")
    assert reply.kind == "emitted"
    handle, tok = load_handle(adapter)  # the same pass by hand: generate() from the same state
    handle.state = before
    ids = torch.tensor([tok("Agent, tell me about the lantern.")["input_ids"]])
    with torch.no_grad():
        out = handle.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                    do_sample=False, pad_token_id=tok.pad_token_id)  # fmt: skip
    assert torch.allclose(agent.state, handle.state, atol=1e-6)
    assert reply.text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    handle.remove()


def test_a_reply_reads_the_memory_on_its_prompt_only(agent_factory):
    """read="prompt": the prefill reads with the trained gate, every later token with the
    gate closed, and the gate is back afterwards; a refused config names the choices."""
    replies, gates = {}, {}
    for read in ("always", "prompt"):
        agent = agent_factory(read=read)
        agent.send("The lantern was left on the table.")
        seen = []
        hook = agent.model.register_forward_pre_hook(
            lambda *_, seen=seen, g=agent.handle.slots.gate: seen.append(g.detach().clone())
        )
        open_gate = agent.handle.slots.gate.detach().clone()
        replies[read] = agent.send("Agent, tell me about the lantern.")
        hook.remove()
        gates[read] = seen
        assert torch.equal(agent.handle.slots.gate, open_gate)  # restored after the reply
        assert len(seen) == 1 + replies[read].data["tokens_out"]  # the pass, then generate()
    # the pass and generate()'s prefill read with the open gate in both modes
    assert all(torch.equal(g, gates["always"][0]) for g in gates["always"])
    assert torch.equal(gates["prompt"][1], gates["always"][1])
    assert all(torch.count_nonzero(g) == 0 for g in gates["prompt"][2:])
    assert len(gates["prompt"]) > 2
    with pytest.raises(AgentError, match="read must be one of prompt, always"):
        AgentConfig(read="never")


def test_recall_over_keys_plays_the_script_per_key_from_the_same_start(agent_factory):
    from ran.agent import demo

    agent = agent_factory(gate=AlwaysEmit())
    agent.send("The mill is old.")
    start = agent.state.clone()
    over = demo.recall_over_keys(agent, ["flute", "eagle", "sun"], ["Note {key} now."],
                                 ["Recall the word. It is", "The word is"])  # fmt: skip
    assert over["n"] == 3 and [r["key"] for r in over["rows"]] == ["flute", "eagle", "sun"]
    assert over["rows"][1]["question"] == "Agent, the word is"
    assert "Note eagle now." in over["rows"][1]["fact"]
    for name in ("memory", "reset"):
        hits = sum(r[f"{name}_hit"] for r in over["rows"])
        assert over[name]["hits"] == hits and over[name]["rate"] == hits / 3
        lo, hi = over[name]["ci95"]
        assert 0 <= lo <= over[name]["rate"] <= hi <= 1
    assert torch.equal(agent.state, start)  # every key starts from the state at the call
    assert over["memory"]["emitted"] == sum(r["memory"] is not None for r in over["rows"]) == 3
    with pytest.raises(ValueError, match="at least one key"):
        demo.recall_over_keys(agent, [], ["{key}"], ["q"])


def test_recall_over_keys_gives_memory_checks_replies_without_the_replay(agent_factory):
    """The reset control skips the conversation before the /reset: every reply, as written
    and after the reset, is the one the full replay (memory_check) gives."""
    from ran.agent import demo

    agent = agent_factory(gate=AlwaysEmit())
    agent.send("The mill is old.")
    start = agent.state.clone()
    keys, writes, qs = ["flute", "eagle"], ["Note {key} now."], ["The word is"]
    over = demo.recall_over_keys(agent, keys, writes, qs)
    for key, row in zip(keys, over["rows"], strict=True):
        agent.handle.state = start
        full = demo.memory_check(
            agent, key, row["question"], demo.AROUND.format(sentence=writes[0])
        )
        assert (row["memory"], row["reset"]) == (full["memory"]["reply"], full["reset"]["reply"])
        assert full["reset"]["reply"] is not None
    agent.handle.state = start
    fact, q = demo.AROUND.format(sentence=writes[0]), over["rows"][0]["question"]
    short = demo.memory_check(agent, "flute", q, fact, replay=False)
    assert short["reset"]["reply"] == over["rows"][0]["reset"]
    assert short["reset"]["passes"] < full["reset"]["passes"]  # the replay was skipped
    agent.config = dataclasses.replace(agent.config, prepend_buffer=True)  # carries the fact
    with pytest.raises(ValueError, match="prepend_buffer off"):
        demo.memory_check(agent, "flute", replay=False)


def test_using_gate_swaps_the_gate_and_its_threshold_back(agent_factory, trained):
    gates, _ = trained
    agent = agent_factory(gate=gates["stateful"])
    own, threshold = agent.gate, agent.threshold
    with agent.using_gate(AlwaysEmit()):
        assert agent.gate.name == "always" and agent.threshold == AlwaysEmit.threshold
        assert agent.send("The mill is old.").kind == "emitted"  # always-emit speaks
    assert agent.gate is own and agent.threshold == threshold


def test_buffer_keeps_the_latest_passes_within_its_budget(agent_factory):
    agent = agent_factory(buffer_tokens=48, gate=_silent_gate())
    for i in range(12):
        agent.send(f"Statement number {i} about the garden.")
        assert agent.buffer.tokens <= 48
        assert agent.buffer.count(agent.buffer.render()) == agent.buffer.tokens
    texts = [e.text for e in agent.buffer.entries]
    assert texts[-1] == "Statement number 11 about the garden." and "number 0 " not in " ".join(
        texts
    )
    assert agent.counters.buffer_dropped == 12 - len(texts) > 0
    agent.send("x" * 500)  # one entry over the budget keeps its last tokens
    assert agent.buffer.tokens <= 48 and len(agent.buffer) == 1


def test_prepend_buffer_puts_the_buffer_in_the_context(agent_factory):
    fresh = agent_factory(gate=_silent_gate())
    joined = agent_factory(gate=_silent_gate(), prepend_buffer=True)
    for a in (fresh, joined):
        a.send("The bell rang twice.")
    n_fresh = fresh.step(Request("message", "Then it stopped."))[0].data["tokens"]
    n_joined = joined.step(Request("message", "Then it stopped."))[0].data["tokens"]
    assert n_fresh == len("Then it stopped.") and n_joined == len(
        "The bell rang twice.\nThen it stopped."
    )


def test_checkpoint_restores_state_buffer_and_counters(agent_factory, tmp_path):
    ck = str(tmp_path / "ck")
    a = agent_factory(checkpoint_dir=ck, gate=_silent_gate())
    run_script(a, "The harbor is quiet.\n/idle 3\nNobody came today.\n/idle 1\n")
    state, buffer, counters = a.state.clone(), a.buffer.to_list(), a.counters
    b = agent_factory(checkpoint_dir=ck, gate=_silent_gate())
    assert b.started.data["restored"] and torch.equal(b.state, state)
    assert b.buffer.to_list() == buffer and b.counters.passes == counters.passes == 6
    assert b.counters.restores == 1 and b.counters.idle_ticks == 4
    assert (Path(ck) / RECORD).is_file() and all((Path(ck) / s).is_file() for s in SLOTS)
    c = agent_factory(checkpoint_dir=ck, restore=False, gate=_silent_gate())
    assert c.state is None and c.counters.passes == 0  # --fresh


def test_a_checkpoint_or_gate_of_another_adapter_is_refused(
    agent_factory, tmp_path, adapter, trained
):
    ck = str(tmp_path / "ck")
    agent_factory(checkpoint_dir=ck, gate=_silent_gate()).idle(1)
    other = make_adapter(tmp_path / "other", seed=1)
    handle, tok = load_handle(other)
    try:
        with pytest.raises(AgentError) as err:
            ReservoirAgent(handle, tok, None, AgentConfig(checkpoint_dir=ck))
        msg = str(err.value)
        assert msg.startswith(f"the checkpoint in {ck} belongs to another adapter or model")
        assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg
        with pytest.raises(AgentError, match="trained for another adapter or model"):
            ReservoirAgent(handle, tok, trained[0]["stateful"], AgentConfig())
    finally:
        handle.remove()


def test_bad_input_is_refused_or_made_safe_and_nothing_is_lost(agent_factory, tmp_path):
    agent = agent_factory(checkpoint_dir=str(tmp_path / "ck"), gate=_silent_gate())
    agent.send("A first plain message.")
    state, passes = agent.state.clone(), agent.counters.passes
    for bad in ("", "   \n\t ", "\x00\x01\x1b", "x" * 1_000_000, b"y" * (1 << 20), 42, None):
        ev = agent.send(bad)
        assert ev.kind == "rejected" and ev.text.endswith(".") and "\n" not in ev.text
        assert torch.equal(agent.state, state) and agent.counters.passes == passes
    assert "1000000 bytes long" in agent.send("x" * 1_000_000).text
    events = agent.step(Request("message", b"caf\xc3\xa9 \xff\xfe ok"))
    assert any("invalid UTF-8" in e.text for e in events if e.kind == "warning")
    events = agent.step(Request("message", "bell\x07 and\x1b[31m red\r\nnext \ud800 line"))
    warned = " ".join(e.text for e in events if e.kind == "warning")
    assert "control character" in warned and "not valid Unicode" in warned
    assert agent.buffer.entries[-1].text == "bell and[31m red\nnext \ufffd line"
    assert agent.counters.passes == passes + 2 and agent.counters.rejected == 8
    assert agent.send("Still running fine.").kind == "silent"


def test_a_failing_pass_leaves_state_and_counters_untouched(agent_factory, monkeypatch):
    agent = agent_factory()  # always emits
    agent.send("The mill is old.")
    state, passes = agent.state.clone(), agent.counters.passes

    def broken(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr("ran.agent.passes.generate", broken)
    with pytest.raises(RuntimeError, match="generation failed"):
        agent.send("Agent, what is the mill?")
    assert torch.equal(agent.state, state) and agent.counters.passes == passes
    monkeypatch.undo()
    assert agent.send("Agent, what is the mill?").kind == "emitted"


def test_passes_never_overlap(agent_factory):
    agent = agent_factory(gate=_silent_gate())
    agent._lock.acquire()  # a pass in flight on another thread
    try:
        with pytest.raises(RuntimeError, match="never overlap"):
            agent.send("hello")
    finally:
        agent._lock.release()
    errors = []

    def worker():
        try:
            agent.idle(50)
        except RuntimeError as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert agent.counters.passes == 100 - 50 * len(errors)  # a refused pass ran nothing


def test_10000_idle_ticks_stay_finite_flat_and_within_budget(agent_factory, tmp_path):
    shm = Path("/dev/shm")
    ck = str(shm / f"ran-agent-test-{tmp_path.name}") if shm.is_dir() else None
    agent = agent_factory(gate=_silent_gate(), buffer_tokens=64, checkpoint_dir=ck,
                          log_path=str(tmp_path / "events.jsonl"))  # fmt: skip
    agent.send("A message before the ticks.")
    agent.idle(300)  # warm-up: allocator pools and caches
    start = measure.rss_mb()
    for i in range(10):
        agent.idle(1000)
        agent.send(f"Message {i} between the ticks, about the mill.")
        assert agent.buffer.tokens <= 64
    growth = measure.rss_mb() - start
    assert bool(torch.isfinite(agent.state).all()) and agent.state.abs().max() <= 1
    print(f"10,000 idle ticks (checkpointed: {ck is not None}): RSS grew by {growth:.2f} MB")
    assert growth < 50, f"resident memory grew by {growth:.1f} MB"
    assert agent.counters.idle_ticks == 10300 and agent.counters.passes == 10311
    if ck:
        import shutil

        shutil.rmtree(ck, ignore_errors=True)


def test_gate_scores_and_save_load(trained, tmp_path):
    gates, report = trained
    for name in ("stateful", "stateless", "always"):
        s = report[name]["scores"]
        assert s["tp"] + s["fp"] + s["fn"] + s["tn"] == report["n_turns"]["test"]
        f1 = s["f1"]
        assert 0 <= f1["ci95"][0] <= f1["value"] <= f1["ci95"][1] <= 1
    assert report["always"]["scores"]["recall"]["value"] == 1.0
    assert report["always"]["scores"]["precision"]["value"] == pytest.approx(
        report["positive_rate_test"]
    )
    assert report["stateful"]["categories"]["idle"]["emit_rate"] == 0.0
    gate = gates["stateful"]
    loaded = OutputGate.load(gate.save(tmp_path / "gate"))
    for name in ("weight", "mean", "std"):
        assert torch.equal(getattr(loaded, name), getattr(gate, name)), name
    assert (loaded.bias, loaded.threshold) == (gate.bias, gate.threshold)
    x, r = torch.randn(64), torch.randn(UNITS)
    # the logits are float64 (far from float32's summation-order noise): equal to 1e-12
    assert loaded.prob(x, r, "prompted") == pytest.approx(gate.prob(x, r, "prompted"), rel=1e-12)
    with pytest.raises(AgentError, match="there is no output gate"):
        OutputGate.load(tmp_path / "nowhere")


def test_measurements_of_latency_and_elapsed_time(agent_factory, adapter):
    agent = agent_factory(gate=AlwaysEmit(), checkpoint_dir=None)
    lat = measure.interrupt_latency(agent, n=4, idle_every=0.01)
    assert lat["n"] == lat["emitted"] == 4 and lat["max_concurrent"] == 1
    assert all(w in (0, 1) for w in lat["waited_passes"]) and lat["first_token_ms"]["n"] == 4
    handle, tok = load_handle(adapter)
    clock = measure.elapsed_probe(handle, tok, n_train=6, n_test=4)
    assert 0 <= clock["ci95"][0] <= clock["acc"] <= clock["ci95"][1] <= 1
    assert (
        clock["n_test"] == 4 * len(measure.K_VALUES)
        and np.array(clock["confusion"]).sum() == clock["n_test"]
    )
    handle.remove()


def _silent_gate():
    """A gate that never emits (the passes stay cheap and deterministic)."""
    from ran.agent.passes import PASS_KINDS

    dim = 64 + UNITS + len(PASS_KINDS)
    return OutputGate(
        torch.zeros(dim), -20.0, torch.zeros(dim), torch.ones(dim), 0.5, 64, UNITS, True
    )
