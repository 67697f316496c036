"""A read gate fitted before training: read the memory where a pass asks for it, not on text.

The decoded read side (:mod:`ran.injection.decoded`) writes the remembered word's residual
direction into every query that reads it, with nearly all of a query's attention mass.
Read everywhere, that recalls well and wrecks plain text (H1: dPPL in the thousands of
percent after a fact pass). Its per-token query gate ``s = sigmoid(w . x + b)`` (``x``
layer L's attention input; :meth:`ran.injection.slots.SlotReadout.select`) is what should
tell the two apart, but trained by the recall loss and the KL term in the same steps it
stayed open on text and questions alike (notebook 06's trade-off). Here it is fitted
*before* training, as its own supervised problem, and then frozen:

* positives: layer L's input at the last ``tail`` tokens of every training question pass
  (where the answer is about to be said), and of the extra training question templates
  :data:`ran.tasks.wordlists.GATE_QUESTIONS` on their own;
* negatives: every other token of those episodes (the fact passes, the distractor passes,
  the text before the question) and every token of ``n_blocks`` training-split text blocks;
* an L2 logistic regression (:func:`ran.util.stats.fit_logistic`, float64, the positives
  weighted by n_neg / n_pos), copied into every head's row of the query gate, its bias
  moved by ``shift`` (> 0 opens more).

Layer L's input depends only on the frozen layers below it, so the fit needs no trained
part and no state; the gate is then excluded from the optimiser
(:func:`frozen_names`): training learns the rest of the read and write sides with reads
happening where the gate opens. Validation and test use their own keys and question
templates, never seen by the fit (:data:`ran.tasks.wordlists.GATE_QUESTIONS` is
disjoint from them; a test checks it).

``TrainConfig.read_gate`` turns it on: a dict of :data:`DEFAULTS`' keys (empty: off).
"""

from __future__ import annotations

import itertools

import torch

from ran.injection.slots import StopAfterLayer, model_layers
from ran.tasks import wordlists as WL
from ran.tasks.data import token_blocks
from ran.util.stats import fit_logistic

DEFAULTS = dict(
    tail=3,  # positives: the last `tail` tokens of each training question pass
    shift=2.0,  # added to the fitted bias (> 0: the gate opens more)
    weight_decay=1e-3,  # L2 on the standardised weights
    n_episodes=300,  # training episodes whose passes give positives and negatives
    n_blocks=160,  # training-split text blocks (128 tokens) of negatives
    steps=500,  # L-BFGS iterations
)


def options(spec: dict) -> dict:
    """``spec`` (``TrainConfig.read_gate``) over :data:`DEFAULTS`; unknown keys or bad values
    raise ValueError."""
    bad = set(spec) - set(DEFAULTS)
    if bad:
        raise ValueError(f"read_gate has no option(s) {sorted(bad)}; options: {sorted(DEFAULTS)}")
    out = DEFAULTS | dict(spec)
    for name in ("tail", "n_episodes", "steps", "n_blocks"):
        low = 0 if name == "n_blocks" else 1
        if isinstance(out[name], bool) or int(out[name]) != out[name] or out[name] < low:
            raise ValueError(f"read_gate.{name} must be an integer >= {low}, got {out[name]!r}")
        out[name] = int(out[name])
    out["shift"], out["weight_decay"] = float(out["shift"]), float(out["weight_decay"])
    if out["weight_decay"] < 0:
        raise ValueError(f"read_gate.weight_decay must be >= 0, got {out['weight_decay']}")
    return out  # types normalised: the same options give the same config hash


def layer_inputs(handle, tokenizer, texts: list, batch_rows: int = 32) -> list[torch.Tensor]:
    """Layer L's attention input (T_i, d) float64 of each text (a string, or token ids
    (T_i,)), run only as far as layer L (the handle's state is left as it was).

    Texts of equal token length run together, up to ``batch_rows`` at a time (no padding,
    so no mask: each row is the pass a text would have alone), in a fixed order, inside
    :func:`ran.injection.lowercache.reuse_lower`: the layers below L are frozen, so another
    run that fits a gate on the same episodes (the same probe, curriculum and seed; shared
    across processes through ``RAN_LOWER_DISK``) reads them back instead of recomputing.
    """
    from ran.injection.lowercache import reuse_lower

    attn = model_layers(handle.model)[0][handle.layer].self_attn
    grabbed: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        hs = kwargs.get("hidden_states", args[0] if args else None)
        grabbed.append(hs.detach().double())
        raise StopAfterLayer

    device = next(handle.model.parameters()).device
    ids = [
        tokenizer(t)["input_ids"] if isinstance(t, str) else torch.as_tensor(t).tolist()
        for t in texts
    ]
    by_len: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_len.setdefault(len(seq), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(ids)
    hook = attn.register_forward_pre_hook(grab, with_kwargs=True)
    saved = handle.state
    handle.reset_state()
    try:
        with torch.no_grad(), reuse_lower(handle):
            for length in sorted(by_len):
                rows = by_len[length]
                for start in range(0, len(rows), batch_rows):
                    chunk = rows[start : start + batch_rows]
                    batch = torch.tensor([ids[i] for i in chunk], device=device)  # (b, T)
                    try:
                        handle.model(input_ids=batch, use_cache=False)
                    except StopAfterLayer:
                        pass
                    hs = grabbed.pop()  # (b, T, d)
                    for j, i in enumerate(chunk):
                        out[i] = hs[j]
    finally:
        hook.remove()
        handle.state = saved
    return out


def features(handle, tokenizer, episodes, tail: int, n_blocks: int, extra=WL.GATE_QUESTIONS):
    """``(X, y)``: layer-L inputs (T, d) float64 and labels (T,) (1: the last ``tail``
    tokens of a question pass or of an ``extra`` question template; 0: everything else)."""
    xs, ys = [], []

    def add(x: torch.Tensor, n_pos: int) -> None:
        n_pos = min(n_pos, x.shape[0])
        xs.append(x)
        ys.append(torch.cat([torch.zeros(x.shape[0] - n_pos), torch.ones(n_pos)]))

    texts = [p for ep in episodes for p in ep.passes] + list(extra)  # one batched call
    last = {i - 1 for i in itertools.accumulate(len(ep.passes) for ep in episodes)}
    last |= set(range(len(texts) - len(extra), len(texts)))  # a question's last pass
    if n_blocks:
        texts += list(token_blocks(tokenizer, "train", 128, n_blocks))
    for i, x in enumerate(layer_inputs(handle, tokenizer, texts)):
        add(x, tail if i in last else 0)
    return torch.cat(xs), torch.cat(ys).double()


def fit_read_gate(handle, tokenizer, episodes, spec: dict) -> dict:
    """Fit the query gate of ``handle``'s readout (see the module doc) on training
    ``episodes`` and install it; returns the fit's numbers (counts, the training-set
    openness of positives and negatives)."""
    gate = getattr(handle.slots, "query_gate", None) if hasattr(handle, "slots") else None
    if gate is None:
        raise ValueError(
            "read_gate needs a readout with a query gate: set injection.query_gate=True"
        )
    opt = options(spec)
    X, y = features(handle, tokenizer, episodes[: opt["n_episodes"]], opt["tail"], opt["n_blocks"])
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError("read_gate needs question passes and other text to fit on")
    w, b, mean, std = fit_logistic(
        X, y, float(opt["weight_decay"]), int(opt["steps"]), (len(y) - n_pos) / n_pos, 1e-6
    )
    weight = w / std
    bias = b - float((mean * weight).sum()) + float(opt["shift"])
    with torch.no_grad():
        gate.weight.copy_(weight.to(gate.weight.dtype)[None].expand_as(gate.weight))
        gate.bias.fill_(bias)
        s = torch.sigmoid(X @ weight + bias)
    return dict(
        n_pos=n_pos, n_neg=len(y) - n_pos, open_pos=float(s[y == 1].mean()),
        open_neg=float(s[y == 0].mean()), neg_open_frac=float((s[y == 0] > 0.5).double().mean()),
        options=opt,
    )  # fmt: skip


def frozen_names(named: dict, handle) -> set[str]:
    """The names in ``named`` (stable parameter names) of the fitted query gate's tensors."""
    gate = handle.slots.query_gate
    ids = {id(p) for p in gate.parameters()}
    return {n for n, p in named.items() if id(p) in ids}
