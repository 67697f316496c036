"""The model side of one agent pass: encode the pass text, run one forward, read its features.

Both the runtime (:mod:`ran.agent.runtime`) and the gate's feature collection
(:mod:`ran.agent.gate`) go through these functions, so the gate is trained on
exactly the features the agent has after a pass: the final hidden state at the
pass's last token (after the model's last norm) and the reservoir state r(t)
that the pass left.
"""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

PASS_KINDS = ("prompted", "idle", "review")


def encode(tokenizer, text: str, max_tokens: int) -> tuple[torch.Tensor, int]:
    """``(input_ids (1, T), n_cut)``: the text's tokens, cut to its last ``max_tokens``."""
    ids = tokenizer(text)["input_ids"]
    cut = max(0, len(ids) - max_tokens)
    if cut:
        ids = ids[cut:]
    if not ids:
        raise ValueError("the pass text encodes to no tokens.")
    return torch.tensor([ids], dtype=torch.long), cut


def forward(model, ids: torch.Tensor) -> torch.Tensor:
    """One forward pass (the handle advances r(t) once); the final hidden state (d,) at
    the last token, as float32."""
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
        )
    return out.hidden_states[-1][0, -1].detach().float()


def state_vector(handle) -> torch.Tensor | None:
    """The reservoir state r(t) of batch row 0 as float32 (None before the first pass)."""
    s = handle.state
    return None if s is None else s[0].detach().float()


class FirstToken:
    """A generate() streamer that records when the first new token appears.

    transformers calls ``put`` once with the prompt, then once per new token.
    """

    def __init__(self):
        self.calls = 0
        self.first_at: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first_at is None:
            self.first_at = time.perf_counter()

    def end(self) -> None:
        pass


class CloseReadAfterPrompt(LogitsProcessor):
    """Closes ``handle``'s read gate once the prompt's logits exist, so the memory is read
    by the prompt and not by the tokens generated after it; :meth:`restore` reopens it.
    The state still advances as usual (the gate blends the read, not the write)."""

    def __init__(self, handle):
        self.handle = handle
        self.saved: torch.Tensor | None = None

    def __call__(self, input_ids, scores):
        if self.saved is None:
            self.saved = self.handle.slots.gate.detach().clone()
            self.handle.set_gate(0.0)
        return scores

    def restore(self) -> None:
        if self.saved is not None:
            self.handle.set_gate(self.saved)
            self.saved = None


def generate(
    model, tokenizer, ids: torch.Tensor, max_new_tokens: int, read_handle=None
) -> tuple[str, int, float | None]:
    """Greedy reply to ``ids``: ``(text, n_new_tokens, perf_counter time of the first token)``.

    ``read_handle``: the memory handle whose read closes after the prompt
    (:class:`CloseReadAfterPrompt`); None: the model reads as it is at every token.
    """
    streamer = FirstToken()
    close = CloseReadAfterPrompt(read_handle) if read_handle is not None else None
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                streamer=streamer,
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([close] if close is not None else []),
            )
    finally:
        if close is not None:
            close.restore()
    new = out[0, ids.shape[1] :]
    return (
        tokenizer.decode(new, skip_special_tokens=True).strip(),
        int(new.numel()),
        streamer.first_at,
    )
