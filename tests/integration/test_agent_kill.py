"""SIGKILL the agent at random moments, many times: a restart loses at most the pass in flight.

The child processes are forks of the test process (the model is loaded once), each
restoring the checkpoint and running a deterministic script of messages (every one
answered with 16 generated tokens) and idle ticks until it is killed. After every
kill the checkpoint must hold a pass that was committed (or the one in flight, if its
record was renamed into place just before the kill), and its state, buffer and
counters must equal those of a reference agent that ran the same passes without
ever being killed.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import pytest
import torch
from agent_helpers import load_handle, make_adapter

from ran.agent.checkpoint import Checkpointer, agent_identity
from ran.agent.config import AgentConfig
from ran.agent.gate import AlwaysEmit
from ran.agent.runtime import Request, ReservoirAgent

ROUNDS = 16
NOUNS = ("mill", "harbor", "lantern", "garden", "bridge")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def script(i: int) -> Request:
    """The i-th pass (1-based) of the script: an idle tick every 4th pass, else a message."""
    if i % 4 == 0:
        return Request("idle")
    return Request("message", f"Message {i}: the {NOUNS[i % len(NOUNS)]} is closed today.")


def _child(handle, tok, folder, w) -> None:
    """Restore, then run the script until killed (never returns)."""
    try:
        handle.reset_state()
        agent = ReservoirAgent(handle, tok, AlwaysEmit(), AgentConfig(checkpoint_dir=str(folder)))

        def report(ev):
            if ev.kind in ("pass", "checkpoint"):
                os.write(w, f"{ev.kind[0]} {ev.pass_index}\n".encode())

        agent.subscribe(report)
        os.write(w, f"r {agent.counters.passes}\n".encode())
        while True:
            agent.step(script(agent.counters.passes + 1))
    except BaseException:  # noqa: BLE001 - a child must never return into pytest
        import traceback

        traceback.print_exc(file=sys.stderr)
        os._exit(3)


def _read_all(fd) -> str:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks).decode()
        chunks.append(chunk)


def test_sigkill_mid_pass_loses_at_most_the_pass_in_flight(tmp_path):
    adapter = make_adapter(tmp_path / "adapter")
    handle, tok = load_handle(adapter)
    ref_handle, _ = load_handle(adapter)
    ref = ReservoirAgent(ref_handle, tok, AlwaysEmit(), AgentConfig())
    folder = tmp_path / "checkpoint"
    reader = Checkpointer(folder, agent_identity(handle))
    rng = random.Random(0)
    committed, mid_pass = 0, 0
    for _ in range(ROUNDS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _child(handle, tok, folder, w)
        os.close(w)
        first = os.read(r, 64)  # blocks until the child has restored (its "r" line)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        lines = [ln.split() for ln in (first.decode() + _read_all(r)).splitlines()]
        os.close(r)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, lines[-3:]
        if lines and lines[0][0] == "r":
            assert int(lines[0][1]) == committed  # it restored what the last round left
        done = [int(n) for k, n in lines if k == "c"]
        started = [int(n) for k, n in lines if k == "p"]
        last_done = max(done, default=committed)
        in_flight = started and started[-1] > last_done
        mid_pass += bool(in_flight)
        record = reader.load(handle)  # the checkpoint into the (parent's, idle) handle
        if record is None:  # killed (on a loaded machine) before its first pass committed
            assert last_done == 0 and committed == 0, (last_done, committed)
            continue
        n = record["passes"]
        assert n == last_done or (in_flight and n == last_done + 1), (n, last_done, started[-1:])
        while ref.counters.passes < n:
            ref.step(script(ref.counters.passes + 1))
        assert torch.equal(handle.state, ref.state), f"state of pass {n} differs"
        assert record["buffer"] == ref.buffer.to_list()
        theirs = {k: v for k, v in record["counters"].items() if k != "restores"}
        ours = {k: v for k, v in vars(ref.counters).items() if k != "restores"}
        assert theirs == ours
        committed = n
    assert committed > ROUNDS, "the children made too little progress to test anything"
    assert mid_pass >= ROUNDS // 2, f"only {mid_pass} of {ROUNDS} kills landed inside a pass"
    handle.reset_state()
    again = ReservoirAgent(handle, tok, AlwaysEmit(), AgentConfig(checkpoint_dir=str(folder)))
    assert again.counters.passes == committed and torch.equal(again.state, ref.state)
    print(f"{ROUNDS} kills, {mid_pass} inside a pass, {committed} passes committed")
    handle.remove()
    ref_handle.remove()
