"""Running probe episodes pass by pass, and scoring them with every control.

:class:`EpisodeRunner` resets the memory, runs every pass but the last
through ``handle.write_only`` (the model only up to the injected layer) and
scores the question pass as a forced choice among the episode's candidates.

:func:`evaluate` runs the controls on the identical test episodes, in the same
batches: the trained reservoir, ``reset`` (state wiped before the question),
``shuffled`` (states rolled by one across the batch, so every question sees
another episode's state), ``stateless`` (gate closed, which
:mod:`ran.injection.slots` makes bit-identical to the base model; with LoRA enabled it
is the adapted model) and ``oracle`` (every pass text in the question's
context, gate closed). Accuracies carry 95% Wilson intervals.
"""

from __future__ import annotations

import contextlib

import torch

from ran.injection.lowercache import reuse_lower
from ran.tasks import probes as P
from ran.tasks import scoring as S
from ran.util.stats import accuracy_summary

CONTROLS = ("reservoir", "reset", "shuffled", "stateless", "oracle")


# ----------------------------------------------------------------------------- running episodes
def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 at each row's first real token (left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class EpisodeRunner:
    """Runs batches of episodes pass by pass through an injected model.

    Episodes of different lengths are right-aligned so every question pass
    happens in the same final call; a row whose episode has not started yet
    (or whose pass has fewer idle steps) keeps its state through the extra
    calls, so mixed schedules batch exactly. A write pass runs only the rows
    whose episode has started. Equal schedules need no masking.
    """

    def __init__(self, handle, tokenizer, scoring: str = "auto"):
        self.h = handle
        self.model = handle.model
        self.tok = tokenizer
        self.scoring = scoring
        self.pad = S.pad_id(tokenizer)
        self.read_state: torch.Tensor | None = None  # set by run(): the state the question read
        # True: a write pass runs every row of the batch, rows whose episode has not started
        # included, and puts their state back (the former way; ran.bench.mixedwrites times it)
        self.write_all_rows = False

    # -- state helpers
    def _state(self, batch: int) -> torch.Tensor:
        s = self.h.state
        return s if s is not None else torch.zeros(batch, self._units())

    def _units(self) -> int:
        from ran.mechanisms.registry import state_width

        return state_width(self.h)

    def _keep(self, active: torch.Tensor, old: torch.Tensor) -> None:
        if not bool(active.all()):
            self.h.state = torch.where(active[:, None], self.h.state, old)

    def _idle(self, counts: list[int]) -> None:
        c = torch.tensor(counts)
        for m in range(int(c.max()) if len(counts) else 0):
            old = self._state(len(counts))
            self.h.idle(1, batch_size=len(counts))
            self._keep(c > m, old)

    def write(self, texts: list[str], active: torch.Tensor | None = None) -> None:
        """One cheap write pass (up to the injected layer) over a batch of texts.

        ``active`` (B,) bool: only those rows are run (the model sees just their texts);
        the others keep their state (zeros before their first pass). A row whose episode
        has not started yet costs nothing: in a batch of mixed schedules (the elapsed
        probe, mixed distractor counts) such rows were about half of the write passes.
        """
        partial = active is not None and not bool(active.all())
        if partial and not self.write_all_rows:
            return self._write_rows(texts, active)
        old = self._state(len(texts)) if partial else None
        ids, mask = S.batch_encode(self.tok, texts)
        with reuse_lower(self.h):
            self.h.write_only(ids, mask)
        if partial:  # write_all_rows: every row was run, the inactive ones are put back
            self._keep(active, old)

    def _write_rows(self, texts: list[str], active: torch.Tensor) -> None:
        """:meth:`write` on the ``active`` rows only; the state of the others is kept."""
        full = self._state(len(texts))  # what an inactive row keeps (zeros if empty)
        rows = active.nonzero().squeeze(1)
        if len(rows) == 0:
            self.h.state = full
            return
        self.h.state = None if self.h.state is None else full.index_select(0, rows)
        ids, mask = S.batch_encode(self.tok, [texts[i] for i in rows.tolist()])
        with reuse_lower(self.h):
            self.h.write_only(ids, mask)
        self.h.state = full.index_put((rows,), self.h.state)  # differentiable, out of place

    # -- the question pass
    def question_scores(self, episodes: list[P.Episode]) -> torch.Tensor:
        """``(B, K)`` forced-choice scores of the question passes under the current state."""
        with reuse_lower(self.h):
            return self._question_scores(episodes)

    def _question_scores(self, episodes: list[P.Episode]) -> torch.Tensor:
        qb = S.encode_question(self.tok, episodes, self.scoring)
        if qb.first_token:
            ids, mask = S.pad_left(qb.prompts, self.pad)
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=_position_ids(mask),
                logits_to_keep=1,
            )
            return S.first_token_scores(out.logits[:, -1], qb.first_ids)
        k = len(episodes[0].candidates)
        ids, mask, cont = S.sequence_batch(qb, self.pad)
        if self.h is not None and self.h.state is not None:
            self.h.state = self.h.state.repeat_interleave(k, 0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask))
        return S.sequence_scores(out.logits, ids, cont, k)

    def run(self, episodes: list[P.Episode], control: str = "reservoir") -> torch.Tensor:
        """Reset the reservoir, run every pass, and score the question pass.

        Parameters
        ----------
        episodes : list of Episode
        control : str
            ``reservoir`` (normal), ``reset`` (state wiped before the question)
            or ``shuffled`` (states rolled by one across the batch before the
            question: each question sees another episode's state).

        Returns
        -------
        torch.Tensor
            ``(B, K)`` candidate scores (differentiable w.r.t. the readout).
        """
        if control not in ("reservoir", "reset", "shuffled"):
            raise ValueError("EpisodeRunner.run control must be reservoir, reset or shuffled")
        B = len(episodes)
        T = max(len(e.passes) for e in episodes)
        offsets = [T - len(e.passes) for e in episodes]
        self.h.reset_state()
        if control == "reset":  # the state is wiped before the question: its passes change nothing
            self.read_state = None
            return self.question_scores(episodes)
        for s in range(T):
            js = [s - o if s >= o else None for o in offsets]
            active = torch.tensor([j is not None for j in js])
            self._idle([episodes[i].idle[j] if j is not None else 0 for i, j in enumerate(js)])
            if s == T - 1:
                break
            texts = [episodes[i].passes[j if j is not None else 0] for i, j in enumerate(js)]
            self.write(texts, None if bool(active.all()) else active)
        if control == "shuffled":
            if B < 2:
                raise ValueError("the shuffled control needs batches of at least 2 episodes")
            self.h.state = self._state(B).roll(1, 0)
        self.read_state = self.h.state  # what the question pass reads (None: empty)
        return self.question_scores(episodes)


# ----------------------------------------------------------------------------- evaluation
def evaluate(
    handle,
    tokenizer,
    episodes: list[P.Episode],
    controls: tuple[str, ...] = CONTROLS,
    batch_size: int = 32,
    scoring: str = "auto",
) -> dict:
    """Forced-choice accuracy of every control on the identical episodes.

    Parameters
    ----------
    handle : ran.mechanisms.reservoir_slots.RANHandle
        The trained (or untrained) injection; ``handle.model`` is the model.
    tokenizer
        The model's tokenizer.
    episodes : list of Episode
        The test episodes; every control sees exactly these, in this order and
        batching.
    controls : tuple of str
        Any of ``reservoir``, ``reset``, ``shuffled``, ``stateless`` (the base
        model on the question pass alone) and ``oracle`` (the base model with
        every pass text in the question's context).
    batch_size : int
        Episodes per batch (also the pool the shuffled control draws from).
    scoring : {"auto", "first_token", "sequence"}

    Returns
    -------
    dict
        ``{control: {"acc", "ci_low", "ci_high", "correct", "n", "chance",
        "pred"}}`` plus ``"answers"``, ``"n"`` and ``"chance"``.
    """
    bad = [c for c in controls if c not in CONTROLS]
    if bad or not episodes:
        raise ValueError(f"unknown controls {bad} or no episodes; controls are {CONTROLS}")
    ks = {len(e.candidates) for e in episodes}
    if len(ks) != 1:
        raise ValueError("all episodes must have the same number of candidates")
    chance = 1.0 / ks.pop()
    runner = EpisodeRunner(handle, tokenizer, scoring)
    model = handle.model
    answers = torch.tensor([e.answer for e in episodes])
    out: dict = {"answers": answers.tolist(), "n": len(episodes), "chance": chance}
    chunks = [episodes[i : i + batch_size] for i in range(0, len(episodes), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:  # the shuffled control needs >= 2 per batch
        chunks[-2:] = [chunks[-2] + chunks[-1]]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for control in controls:
            preds = []
            for chunk in chunks:
                if control in ("stateless", "oracle"):
                    preds.append(_base_scores(runner, chunk, oracle=control == "oracle").argmax(1))
                else:
                    preds.append(runner.run(chunk, control).argmax(1))
            pred = torch.cat(preds)
            out[control] = accuracy_summary(pred == answers, chance) | {"pred": pred.tolist()}
        handle.reset_state()
    model.train(was_training)
    return out


def _base_scores(runner: EpisodeRunner, episodes: list[P.Episode], oracle: bool) -> torch.Tensor:
    """Question scores of the base model (injection disabled), optionally in-context."""
    if oracle:
        episodes = [
            P.Episode((e.oracle_prompt,), (0,), e.candidates, e.answer, e.probe, e.info)
            for e in episodes
        ]
    with closed_gate(runner.h):
        return runner.question_scores(episodes)


@contextlib.contextmanager
def closed_gate(handle):
    """Run the base model through an injected one: state wiped, gate closed, both restored.

    tanh(0) = 0 makes the injected layer bit-identical to the base layer. The
    gate is changed in place, so no graph that uses it may be built inside.
    """
    saved = handle.slots.gate.detach().clone()
    handle.reset_state()
    handle.set_gate(0.0)
    try:
        yield handle
    finally:
        handle.set_gate(saved)
        handle.reset_state()
