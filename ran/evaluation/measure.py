"""Measurements of an injected model against its base: perplexity, generation, overhead.

* :func:`base_reference`: the untouched model, its held-out perplexity blocks,
  first-block logits and greedy generations, measured once (:class:`Base`).
* :func:`dppl_at_init`: a mechanism injected with its gate closed; ΔPPL must
  be exactly 0 and the logits ``torch.equal`` to the base's.
* :func:`dppl_carried`: ΔPPL of a (trained) injected model with the state
  carried from one probe pass and then from block to block.
* :func:`dppl`: ΔPPL with a paired percentile bootstrap 95% CI over blocks.
* :func:`generate`: greedy generations, their 4-gram repetition, distinct-2
  and perplexity under the base, as means with Student-t 95% CIs.
* :func:`overhead`: interleaved forward timing, median ratio with a bootstrap
  95% CI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ran.evaluation import quality as h1
from ran.util.memo import memo
from ran.util.stats import mean_ci, median_ci


@dataclass
class Base:
    """The untouched model and everything measured on it once."""

    model: object
    tokenizer: object
    blocks: torch.Tensor
    ppl: h1.PPL
    logits: list
    prompts: list[str]
    generation: dict


def base_reference(
    model_name: str,
    block_len: int,
    ppl_blocks: int,
    gen_tokens: int = 0,
    n_gen_prompts: int = 1,
    model_seed: int = 0,
    outputs=None,
) -> Base:
    """Load the untouched model: its perplexity, first-block logits and generations.

    ``gen_tokens = 0`` skips the generations (``Base.generation`` stays empty).
    With ``outputs``, the measurements are cached (:mod:`ran.util.memo`).
    """
    from ran.injection.models import load_model
    from ran.tasks.data import shakespeare_lines, token_blocks

    plain, tok = load_model(model_name, seed=model_seed)
    blocks = token_blocks(tok, "test", block_len, ppl_blocks)
    lines = [ln for ln in shakespeare_lines("test") if len(ln) >= 40]
    prompts = [lines[i * len(lines) // n_gen_prompts] for i in range(n_gen_prompts)]
    base = Base(plain, tok, blocks, None, [], prompts, {})

    def measure():
        ppl, logits = h1.perplexity(plain, blocks, keep_logits=1)
        return ppl, logits, generate(plain, None, base, gen_tokens) if gen_tokens else {}

    key = dict(model=model_name, seed=model_seed, block_len=block_len, blocks=ppl_blocks,
               gen=gen_tokens, prompts=n_gen_prompts)  # fmt: skip
    done = memo(outputs, "base", key, measure)
    base.ppl, base.logits, base.generation = done
    return base


def dppl(base: Base, ppl: h1.PPL, n_boot: int = 2000, seed: int = 0) -> dict:
    """ΔPPL (%) against the base with a paired percentile bootstrap 95% CI over blocks."""
    a, b = np.asarray(base.ppl.block_nll), np.asarray(ppl.block_nll)
    idx = np.random.default_rng(seed).integers(0, len(a), (n_boot, len(a)))
    boot = 100 * (np.exp(b[idx].mean(1) - a[idx].mean(1)) - 1)
    return ppl.summary | {
        "dppl_pct": 100 * (ppl.ppl / base.ppl.ppl - 1),
        "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
    }


def dppl_at_init(base: Base, kind: str, cfg, **options) -> dict:
    """Perplexity with ``kind`` injected into the base model, gate closed; then removed."""
    ppl, logits = h1.perplexity_at_init(base.model, base.blocks, cfg, kind, 1, **options)
    equal = all(torch.equal(a, b) for a, b in zip(base.logits, logits, strict=True))
    return dppl(base, ppl) | {"logits_equal": equal}


def dppl_carried(base: Base, model, handle, seed: int = 0) -> dict:
    """Perplexity of an injected model with the state carried from one probe pass."""
    return dppl(
        base, h1.perplexity_after_write(model, handle, base.tokenizer, base.blocks), seed=seed
    )


def generate(model, handle, base: Base, n_tokens: int) -> dict:
    """Greedy generations from ``base.prompts`` (fresh state each); means with t-CIs."""
    per = h1.generations(model, handle, base.tokenizer, base.model, base.prompts, n_tokens)
    if handle is not None:
        handle.reset_state()
    stats = {m: mean_ci([s[m] for s in per]) for m in ("rep4", "distinct2", "base_ppl")}
    return {"per_prompt": per, **stats}


def overhead(plain, injected, seq_len: int, reps: int, seed: int = 0) -> dict:
    """:func:`ran.evaluation.quality.overhead` plus a bootstrap 95% CI of the median ratio."""
    out = h1.overhead(plain, injected, seq_len, reps, seed)
    return out | {"ci95": list(median_ci(np.array(out["ratios"]), seed=seed))}
