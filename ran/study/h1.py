"""Notebook 03 (H1, non-destruction, and the capacity curve): its computation.

* :func:`nondestruction`: every perplexity condition of H1 and the stability check
  for one trained run; :func:`generation_pair`: base vs trained generations;
* :func:`readout_for` / :func:`probe_test_episodes`: which trained readout serves
  which K in the capacity curve, and test episodes of a probe variant;
* :func:`overhead` (from :mod:`ran.evaluation.quality`) and :func:`timed`.
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
from ran.tasks import probes as P


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
    ppl["trained, carried from a probe pass"] = perplexity_after_write(
        run.model, H, run.tokenizer, blocks
    )
    carry = carry_passes(H, run.tokenizer, lines)
    ppl[f"trained, after {len(lines)} carried passes"], _ = perplexity(run.model, blocks)
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
