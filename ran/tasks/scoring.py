"""Tokenisation and forced-choice scoring of probe passes (:mod:`ran.tasks.probes`).

Pass texts are left-padded so the last column is every row's last real token.
A question pass is scored as a forced choice among its episode's candidates:
from the next-token logits when the candidates differ at their first token
(:func:`first_token_scores`), else by the summed log-likelihood of each
candidate continuation (:func:`sequence_scores`). Both are batched over
episodes and candidates; there is no Python loop over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ran.tasks.probes import Episode


def pad_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into ``(input_ids, attention_mask)`` LongTensors."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("pad_left needs a non-empty list of non-empty sequences")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, falling back to EOS (then 0)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def batch_encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise pass texts (special tokens as the tokenizer adds them), left-padded.

    Returns
    -------
    input_ids, attention_mask : torch.LongTensor
        Shape ``(len(texts), max_len)``; padding on the left so the last
        column is every row's last real token.
    """
    enc = tokenizer(list(texts))["input_ids"]
    return pad_left(enc, pad_id(tokenizer))


@dataclass
class QuestionBatch:
    """Tokenised question passes of a batch of episodes.

    ``prompts`` are token ids of each question text plus the candidates'
    shared token prefix (e.g. the space before a digit in SmolLM2). When
    ``first_token`` is true, the next token of every candidate is distinct, so
    the forced choice is read from the logits at the prompt's last token and
    ``first_ids`` (B, K) holds those tokens. Otherwise ``rest`` holds each
    candidate's remaining tokens and the scores are continuation log-likelihoods.
    """

    prompts: list[list[int]]
    rest: list[list[list[int]]]
    first_token: bool
    first_ids: torch.Tensor | None = field(default=None)


def _continuation(tokenizer, text: str, cont: str, base: list[int]) -> list[int]:
    full = tokenizer(text + cont)["input_ids"]
    if full[: len(base)] == base and len(full) > len(base):
        return full[len(base) :]
    return tokenizer(cont, add_special_tokens=False)["input_ids"]


def encode_question(tokenizer, episodes: list[Episode], mode: str = "auto") -> QuestionBatch:
    """Tokenise the question passes and candidate continuations of a batch.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    episodes : list of Episode
        All with the same number of candidates K.
    mode : {"auto", "first_token", "sequence"}
        ``auto`` uses first-token scoring when every episode's candidates are
        distinct at their first token after the common prefix, else sequence
        log-likelihoods; ``first_token`` raises if that is impossible.
    """
    if mode not in ("auto", "first_token", "sequence"):
        raise ValueError(f"unknown scoring mode {mode!r}; choose auto, first_token or sequence")
    if len({len(e.candidates) for e in episodes}) != 1:
        raise ValueError("all episodes of a batch must have the same number of candidates")
    prompts, rests, firsts, distinct = [], [], [], True
    for ep in episodes:
        base = tokenizer(ep.question)["input_ids"]
        conts = [_continuation(tokenizer, ep.question, c, base) for c in ep.candidates]
        n_common = 0
        while all(len(c) > n_common + 1 for c in conts) and len({c[n_common] for c in conts}) == 1:
            n_common += 1
        prompts.append(base + conts[0][:n_common])
        rest = [c[n_common:] for c in conts]
        rests.append(rest)
        heads = [r[0] for r in rest]
        distinct &= len(set(heads)) == len(heads)
        firsts.append(heads)
    if mode == "first_token" and not distinct:
        raise ValueError("candidates are not distinct at their first token; use mode='sequence'")
    use_first = distinct and mode != "sequence"
    first_ids = torch.tensor(firsts, dtype=torch.long) if use_first else None
    return QuestionBatch(prompts, rests, use_first, first_ids)


def first_token_scores(last_logits: torch.Tensor, cand_ids: torch.Tensor) -> torch.Tensor:
    """Forced-choice scores from next-token logits.

    Parameters
    ----------
    last_logits : torch.Tensor
        ``(B, V)`` logits at each prompt's last token.
    cand_ids : torch.LongTensor
        ``(B, K)`` first token of each candidate.

    Returns
    -------
    torch.Tensor
        ``(B, K)`` log-probabilities of the candidates' tokens (argmax = choice).
    """
    if last_logits.dim() != 2 or cand_ids.dim() != 2 or cand_ids.shape[0] != last_logits.shape[0]:
        raise ValueError("expected last_logits (B, V) and cand_ids (B, K) with the same B")
    return torch.log_softmax(last_logits.float(), dim=-1).gather(1, cand_ids)


def sequence_batch(qb: QuestionBatch, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``prompt + candidate`` rows, B*K of them (episode-major).

    Returns
    -------
    input_ids, attention_mask : torch.LongTensor
        ``(B*K, T)``.
    cont_mask : torch.BoolTensor
        ``(B*K, T)``, true at the candidate's tokens (the positions scored).
    """
    seqs, conts = [], []
    for prompt, rest in zip(qb.prompts, qb.rest, strict=True):
        for r in rest:
            seqs.append(prompt + r)
            conts.append(len(r))
    ids, mask = pad_left(seqs, pad)
    cont_mask = torch.zeros_like(mask, dtype=torch.bool)
    for i, n in enumerate(conts):
        cont_mask[i, ids.shape[1] - n :] = True
    return ids, mask, cont_mask


def sequence_scores(
    logits: torch.Tensor, input_ids: torch.Tensor, cont_mask: torch.Tensor, k: int
) -> torch.Tensor:
    """Summed log-likelihood of each candidate continuation.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B*K, T, V)`` logits of :func:`sequence_batch` rows.
    input_ids, cont_mask : torch.Tensor
        ``(B*K, T)`` from :func:`sequence_batch`.
    k : int
        Candidates per episode.

    Returns
    -------
    torch.Tensor
        ``(B, K)`` scores.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = logp.gather(2, input_ids[:, 1:, None]).squeeze(2)
    s = (tok * cont_mask[:, 1:].to(tok.dtype)).sum(1)
    return s.view(-1, k)
