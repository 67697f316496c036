"""The non-destruction term of training: KL(base || injected) on plain text.

Used by :func:`ran.training.train.train` when ``TrainConfig.kl_weight > 0``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ran.injection.lowercache import reuse_lower
from ran.tasks.episodes import closed_gate

if TYPE_CHECKING:
    from ran.training.config import TrainConfig


class KLTerm:
    """Mean per-token KL(base || injected) on plain training-split text.

    The text blocks run as passes whose state is the one a question pass
    reads, i.e. a memory that holds a secret (the worst case for the base
    model: measured on smollm2, nearly all of the perplexity damage of a
    trained readout falls on the first pass after a write), except the last
    row, a stream of text passes whose state is carried from step to step
    (never reset, as in deployment). So the readout must make its slots
    matter to the question's queries and not to plain text.
    :meth:`base` must run before the step's graph is built (it closes the gate
    in place).
    """

    def __init__(self, cfg: TrainConfig, model, tok, handle):
        from ran.tasks.data import token_blocks

        if not hasattr(handle, "set_gate") or not handle.trainable_parameters():
            raise ValueError(f"kl_weight needs a trainable gated mechanism, not {cfg.kind!r}")
        self.cfg, self.model, self.h = cfg, model, handle
        n = min(cfg.steps * cfg.kl_batch, 512)  # a fixed pool of blocks, cycled
        self.blocks = token_blocks(tok, "train", cfg.kl_len, n)
        self.carried: torch.Tensor | None = None  # (kl_batch, N) state of the text stream

    def _ids(self, step: int) -> torch.Tensor:
        n, b = self.blocks.shape[0], self.cfg.kl_batch
        idx = [(step * b + i) % n for i in range(b)]
        return self.blocks[idx]

    def base(self, step: int) -> torch.Tensor:
        """Log-probabilities of the base model (gate closed) on this step's blocks."""
        with closed_gate(self.h), torch.no_grad(), reuse_lower(self.h):
            logits = self.model(input_ids=self._ids(step), use_cache=False).logits
        return torch.log_softmax(logits.float(), -1)

    def __call__(self, step: int, base_logp: torch.Tensor, read: torch.Tensor | None):
        """The KL on this step's blocks; ``read`` (B, N) is the state the questions read."""
        ids = self._ids(step)
        b = ids.shape[0]
        self.h.reset_state()
        if read is not None:
            state = read.detach()[torch.arange(b) % read.shape[0]]
            if self.carried is not None and b > 1:
                state = torch.cat([state[:-1], self.carried[-1:]])
            self.h.state = state
        with reuse_lower(self.h):  # the blocks' layers 0..L-1 were run by base()
            logits = self.model(input_ids=ids, use_cache=False).logits
        logp = torch.log_softmax(logits.float(), -1)
        self.carried = None if self.h.state is None else self.h.state.detach()
        self.h.reset_state()
        return (base_logp.exp() * (base_logp - logp)).sum(-1).mean()
