"""Measurements of a running agent: interrupt latency, and an elapsed-time probe read from the state.

* :func:`interrupt_latency`: messages arrive at random moments while the scheduler
  runs idle ticks on a real clock; per message, the passes that finished between
  its arrival and its own pass (0 when the agent was waiting, 1 when a pass was in
  flight), the milliseconds to the start of its pass and to the first emitted token.
* :func:`elapsed_probe`: after 1-3 messages, ``k`` idle ticks; can a linear readout
  of r(t) tell ``k`` (the elapsed time, in ticks of ``idle_every`` seconds)? A
  multinomial logistic readout on ``[r, log ||r||]`` trained on conversations of
  the gate probe's train wordings and scored on its test wordings (accuracy with a
  Wilson 95% CI against chance, mean absolute error in ticks).
"""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import torch

from ran.agent.config import SchedulerConfig
from ran.agent.gate_probe import NOUNS, TEMPLATES
from ran.agent.passes import encode, forward
from ran.util.stats import wilson_interval

K_VALUES = (0, 1, 2, 4, 8, 16, 32)  # idle ticks since the last message, the probe's classes


def _summary(values) -> dict:
    v = np.array([x for x in values if x is not None], dtype=float)
    if not v.size:
        return {"median": None, "p95": None, "max": None, "n": 0}
    return {"median": float(np.median(v)), "p95": float(np.quantile(v, 0.95)), "max": float(v.max()),
            "n": int(v.size)}  # fmt: skip


def interrupt_latency(agent, n: int = 8, idle_every: float = 0.02, message: str = "Agent, what time is it?",
                      force_emit: bool = True, seed: int = 0) -> dict:  # fmt: skip
    """Send ``n`` messages at random moments into a scheduler ticking every ``idle_every`` s.

    ``force_emit`` sets the gate threshold to 0 for the measurement (every message
    replies, so the first-token latency exists for all of them), then restores it.
    """
    from ran.agent.scheduler import Scheduler

    rng = random.Random(seed)
    rows: dict[int, dict] = {}
    saved = agent.threshold
    if force_emit:
        agent.threshold = 0.0

    async def main():
        sched = Scheduler(agent, SchedulerConfig(idle_every=idle_every))
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def on(ev):
            seq = ev.data.get("seq")
            if seq in rows and ev.kind == "pass":
                rows[seq] |= {
                    "waited_passes": ev.data.get("waited_passes"),
                    "queued_ms": ev.data.get("queued_ms"),
                }
            if seq in rows and ev.kind in ("emitted", "silent", "rejected"):
                rows[seq] |= {"outcome": ev.kind, "first_token_ms": ev.data.get("latency_ms")}
                loop.call_soon_threadsafe(done.set)

        agent.subscribe(on)
        task = asyncio.create_task(sched.run())
        try:
            for _ in range(n):
                await asyncio.sleep(idle_every * rng.uniform(1.0, 3.0))
                done.clear()
                busy = sched.in_flight is not None
                req = sched.submit(message)
                rows[req.seq] = {"in_flight_at_arrival": busy}
                await asyncio.wait_for(done.wait(), 120)
        finally:
            agent.listeners.remove(on)
            sched.stop()
            await task
            sched.close()
        return sched

    from ran.agent.script import run_sync

    try:
        sched = run_sync(main())
    finally:
        agent.threshold = saved
    out = list(rows.values())
    return {
        "n": len(out),
        "idle_every_s": idle_every,
        "force_emit": force_emit,
        "interrupted": sum(r["in_flight_at_arrival"] for r in out),
        "waited_passes": [r.get("waited_passes") for r in out],
        "max_waited_passes": max((r.get("waited_passes") or 0) for r in out) if out else None,
        "queued_ms": _summary(r.get("queued_ms") for r in out),
        "first_token_ms": _summary(r.get("first_token_ms") for r in out),
        "emitted": sum(r.get("outcome") == "emitted" for r in out),
        "max_concurrent": sched.max_concurrent,
        "rows": out,
    }


def _messages(rng: random.Random, split: str, name: str = "Agent") -> str:
    cat = rng.choice(("statement", "question", "addressed", "mention"))
    return rng.choice(TEMPLATES[cat][split]).format(name=name, noun=rng.choice(NOUNS[split]))


def _elapsed_data(handle, tokenizer, split, n, k_values, rng, max_tokens):
    X, y = [], []
    for _ in range(n):
        handle.reset_state()
        for _ in range(rng.randint(1, 3)):
            ids, _ = encode(tokenizer, _messages(rng, split), max_tokens)
            forward(handle.model, ids)
        ticks = 0
        for k in k_values:
            handle.idle(k - ticks)
            ticks = k
            r = handle.state[0].detach().float()
            X.append(torch.cat([r, torch.log(r.norm().clamp_min(1e-12)).reshape(1)]))
            y.append(k_values.index(k))
    return torch.stack(X), torch.tensor(y)


def elapsed_probe(handle, tokenizer, k_values=K_VALUES, n_train: int = 24, n_test: int = 16, seed: int = 0,
                  weight_decay: float = 1e-3, max_tokens: int = 512, outputs=None) -> dict:  # fmt: skip
    """Decode the idle ticks since the last message from r(t) (see the module docstring);
    with ``outputs`` memoised (:mod:`ran.util.memo`) under the handle's identity and the
    arguments."""
    from ran.agent.checkpoint import agent_identity
    from ran.util.memo import folder_digest, memo

    key = dict(identity=agent_identity(handle), k_values=sorted(int(k) for k in k_values),
               n_train=n_train, n_test=n_test, seed=seed, weight_decay=weight_decay,
               max_tokens=max_tokens, agent_code=folder_digest("agent"))  # fmt: skip
    return memo(outputs, "clock_probe", key, _elapsed_probe, handle, tokenizer, k_values, n_train,
                n_test, seed, weight_decay, max_tokens)  # fmt: skip


def _elapsed_probe(handle, tokenizer, k_values, n_train, n_test, seed, weight_decay, max_tokens):
    k_values = tuple(sorted(int(k) for k in k_values))
    saved = handle.state
    try:
        with torch.no_grad():
            Xtr, ytr = _elapsed_data(
                handle,
                tokenizer,
                "train",
                n_train,
                k_values,
                random.Random(f"clock|{seed}|train"),
                max_tokens,
            )
            Xte, yte = _elapsed_data(
                handle,
                tokenizer,
                "test",
                n_test,
                k_values,
                random.Random(f"clock|{seed}|test"),
                max_tokens,
            )
    finally:
        handle.state = saved
    mean, std = Xtr.mean(0), Xtr.std(0, unbiased=False).clamp_min(1e-6)
    Z, Zte = (Xtr - mean) / std, (Xte - mean) / std
    W = torch.zeros(Z.shape[1], len(k_values), requires_grad=True)
    b = torch.zeros(len(k_values), requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Z @ W + b, ytr) + weight_decay * (W * W).sum()
        loss.backward()
        return loss

    t0 = time.perf_counter()
    with torch.enable_grad():
        opt.step(closure)
    pred = (Zte @ W.detach() + b.detach()).argmax(1)
    correct = int((pred == yte).sum())
    lo, hi = wilson_interval(correct, len(yte))
    kv = torch.tensor(k_values, dtype=torch.float32)
    confusion = torch.zeros(len(k_values), len(k_values), dtype=torch.long)
    for t, p in zip(yte.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    return {
        "k_values": list(k_values),
        "acc": correct / len(yte),
        "ci95": [lo, hi],
        "chance": 1 / len(k_values),
        "mae_ticks": float((kv[pred] - kv[yte]).abs().mean()),
        "mae_ticks_constant": float((kv - kv.median()).abs().mean()),  # always guess the median k
        "n_test": int(len(yte)),
        "n_train": int(len(ytr)),
        "confusion": confusion.tolist(),
        "fit_s": time.perf_counter() - t0,
    }


def rss_mb() -> float:
    """Resident memory of this process in MiB (``/proc/self/status``; else the peak from
    ``resource``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
