"""Language-model quality of an injected model: does the memory leave the model intact?

The measurements (logic only; notebooks 03 and 04 choose the settings, and
:mod:`ran.study.h1` runs them for notebook 03):

* :func:`perplexity`: held-out perplexity over token blocks, one block per
  forward pass (batch 1), so an injected model's state is carried from block
  to block exactly as in deployment; optionally returns the logits of the
  first blocks for bit-exactness checks (:func:`torch.equal`).
* :func:`carry_passes`: drive the state through many short passes (write-only
  passes up to the injected layer, which advance the state exactly as a full
  forward pass does, because the drive is read at layer L) and report its norm.
* :func:`idle_passes`: many zero-input passes; norm and finiteness.
* :func:`greedy_generate`, :func:`repetition`, :func:`distinct_n` and
  :func:`continuation_nll`: greedy generation with the state advancing once
  per forward call, its n-gram repetition, and its perplexity under the base.
* :func:`overhead`: interleaved forward timing of the base vs the injected model.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ran.injection.lowercache import reuse_lower
from ran.tasks import scoring as S


@dataclass
class PPL:
    """Perplexity of a set of blocks (``nll`` is the mean per predicted token)."""

    nll: float
    ppl: float
    tokens: int
    block_nll: list[float]
    finite: bool

    @property
    def summary(self) -> dict:
        return {"nll": self.nll, "ppl": self.ppl, "tokens": self.tokens, "finite": self.finite}


def token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per-token next-token negative log-likelihood, ``(B, T-1)``, in float64."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    return -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def perplexity(model, blocks: torch.Tensor, keep_logits: int = 0) -> tuple[PPL, list[torch.Tensor]]:
    """Perplexity of ``blocks`` (n, T), one forward pass per block, in order.

    Parameters
    ----------
    model : causal LM (injected or not); an injected model's state is carried
        across the blocks (and is whatever it was before the call).
    blocks : torch.LongTensor
        ``(n_blocks, block_len)`` token ids (e.g. :func:`ran.tasks.data.token_blocks`).
    keep_logits : int
        Return the logits of the first ``keep_logits`` blocks.

    Returns
    -------
    PPL, list of torch.Tensor
    """
    if blocks.dim() != 2 or blocks.shape[1] < 2:
        raise ValueError("blocks must have shape (n_blocks, block_len >= 2)")
    nlls, kept = [], []
    with torch.no_grad():
        for i in range(blocks.shape[0]):
            ids = blocks[i : i + 1]
            logits = model(input_ids=ids, use_cache=False).logits
            if i < keep_logits:
                kept.append(logits.detach().clone())
            nlls.append(token_nll(logits, ids).sum().item())
    tokens = blocks.shape[0] * (blocks.shape[1] - 1)
    nll = float(sum(nlls) / tokens)
    per_block = [x / (blocks.shape[1] - 1) for x in nlls]
    return PPL(nll, math.exp(nll), tokens, per_block, bool(np.isfinite(nlls).all())), kept


def state_stats(handle) -> dict:
    """Norm (L2, and RMS per unit) of the handle's state and whether it is finite; with
    several rows (a batch), the largest row's norm and RMS."""
    s = handle.state
    if s is None:
        return {"norm": 0.0, "rms": 0.0, "finite": True}
    s = s.reshape(-1, s.shape[-1])
    return {
        "norm": float(s.norm(dim=-1).max()),
        "rms": float(s.pow(2).mean(-1).sqrt().max()),
        "finite": bool(torch.isfinite(s).all()),
    }


def carry_passes(handle, tokenizer, texts: list[str], record_every: int = 50) -> dict:
    """Drive the state through ``texts``, one write pass (batch 1) each, carrying it.

    Returns the state norms every ``record_every`` passes and the final stats.
    """
    norms = []
    with torch.no_grad():
        for i, t in enumerate(texts):
            ids, mask = S.batch_encode(tokenizer, [t])
            handle.write_only(ids, mask)
            if (i + 1) % record_every == 0 or i + 1 == len(texts):
                norms.append((i + 1, state_stats(handle)["norm"]))
    return {"passes": len(texts), "norm_trace": norms, **state_stats(handle)}


def idle_passes(handle, n: int, record_every: int = 1000) -> dict:
    """Run ``n`` zero-input passes from the current state; norms along the way."""
    norms = []
    with torch.no_grad():
        done = 0
        while done < n:
            step = min(record_every, n - done)
            handle.idle(step, batch_size=1)
            done += step
            norms.append((done, state_stats(handle)["norm"]))
    return {"idle_passes": n, "norm_trace": norms, **state_stats(handle)}


def greedy_generate(model, tokenizer, prompt: str, n_tokens: int) -> tuple[list[int], list[int]]:
    """Greedy continuation of ``prompt`` by exactly ``n_tokens`` tokens (KV cache on).

    With an injected model (``advance="forward"``) the state advances once per
    forward call, i.e. once per generated token. Returns (prompt ids, new ids).
    """
    return greedy_generate_batch(model, tokenizer, [prompt], n_tokens)[0]


def greedy_generate_batch(
    model, tokenizer, prompts: list[str], n_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """:func:`greedy_generate` of every prompt in one left-padded batch.

    Decoding one token at batch 1 reads every weight once per token (memory-bound on
    a CPU), so a batch of B prompts costs little more than one. An injected model
    keeps one state row per prompt. Returns (prompt ids, new ids) per prompt.
    """
    if not prompts:
        raise ValueError("no prompts to generate from")
    ids, mask = S.batch_encode(tokenizer, list(prompts))
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,
            do_sample=False,
            pad_token_id=S.pad_id(tokenizer),
        )
    width = ids.shape[1]
    return [
        (ids[i, width - int(mask[i].sum()) :].tolist(), out[i, width:].tolist())
        for i in range(len(prompts))
    ]


def _ngrams(seq: list[int], n: int) -> list[tuple]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def repetition(seq: list[int], n: int = 4) -> float:
    """Fraction of the n-grams of ``seq`` that already occurred earlier in it (0 = none)."""
    grams = _ngrams(list(seq), n)
    if not grams:
        raise ValueError(f"sequence of length {len(seq)} has no {n}-grams")
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(seq: list[int], n: int = 2) -> float:
    """Distinct-n: number of distinct n-grams over the number of n-grams."""
    return 1.0 - repetition(seq, n)


def continuation_nll(model, prompt: list[int], cont: list[int]) -> float:
    """Mean NLL of ``cont`` given ``prompt`` under ``model`` (one forward pass)."""
    ids = torch.tensor([list(prompt) + list(cont)])
    with torch.no_grad():
        nll = token_nll(model(input_ids=ids, use_cache=False).logits, ids)
    return float(nll[0, len(prompt) - 1 :].mean())


def generation_stats(prompt: list[int], gen: list[int], base_model) -> dict:
    """Repetition (4-gram), distinct-1/2 and base-model perplexity of a generation."""
    nll = continuation_nll(base_model, prompt, gen)
    return {
        "rep4": repetition(gen, 4),
        "distinct1": distinct_n(gen, 1),
        "distinct2": distinct_n(gen, 2),
        "base_ppl": math.exp(nll),
        "n_tokens": len(gen),
    }


def time_forward(model, ids: torch.Tensor, inner: int = 1) -> float:
    """The fastest of ``inner`` forward passes (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(inner):
        t0 = time.perf_counter()
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
        best = min(best, time.perf_counter() - t0)
    return best


def overhead(plain, injected, seq_len: int = 256, reps: int = 10, seed: int = 0) -> dict:
    """Median forward-time ratio injected / plain, interleaved (same run, batch 1)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, plain.config.vocab_size, (1, seq_len), generator=gen)
    time_forward(plain, ids), time_forward(injected, ids)  # warm-up
    tp, ti = [], []
    for i in range(reps):
        pair = [(plain, tp), (injected, ti)]
        for m, acc in pair if i % 2 == 0 else pair[::-1]:
            acc.append(time_forward(m, ids))
    r = np.array(ti) / np.array(tp)
    return {
        "seq_len": seq_len,
        "reps": reps,
        "median_plain_s": float(np.median(tp)),
        "median_injected_s": float(np.median(ti)),
        "median_ratio": float(np.median(r)),
        "ratio_q25_q75": [float(np.quantile(r, 0.25)), float(np.quantile(r, 0.75))],
        "ratios": r.tolist(),
    }


PROBE_TEXT = "The secret word is apple."  # the write pass whose state the perplexity carries


def perplexity_at_init(
    model, blocks, cfg, kind: str = "reservoir", keep_logits: int = 0, **options
):
    """:func:`perplexity` with ``kind`` injected into ``model`` with its gate closed
    (whatever ``cfg.gate_init`` says), then removed; ``cfg`` is an InjectionConfig."""
    from ran.mechanisms.registry import make

    h = make(kind, model, dataclasses.replace(cfg, gate_init=0.0), **options)
    try:
        h.set_gate(0.0)
        with reuse_lower(h):
            return perplexity(model, blocks, keep_logits=keep_logits)
    finally:
        h.remove()


def perplexity_after_write(model, handle, tokenizer, blocks, text: str = PROBE_TEXT) -> PPL:
    """:func:`perplexity` of an injected model whose state is that of one write pass of
    ``text`` from an empty state, then carried block to block; the state is reset after."""
    handle.reset_state()
    ids, mask = S.batch_encode(tokenizer, [text])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    with reuse_lower(handle):
        ppl, _ = perplexity(model, blocks)
    handle.reset_state()
    return ppl


def generations(model, handle, tokenizer, base_model, prompts: list[str], n_tokens: int):
    """Greedy generations from ``prompts``, one batch (``handle``'s state reset first, one
    row per prompt; None: an untouched model): :func:`generation_stats` plus the decoded
    ``text``, per prompt."""
    if handle is not None:
        handle.reset_state()  # every prompt's row starts from the empty state
    pairs = greedy_generate_batch(model, tokenizer, prompts, n_tokens)
    return [
        generation_stats(pid, gen, base_model) | {"text": tokenizer.decode(gen)}
        for pid, gen in pairs
    ]
