"""A read side that generalises to words it never saw: decode the state, write it as the slot.

:class:`DecodedReadout` (``InjectionConfig.readout = "decoded"``, with the layer
input driving the reservoir, ``drive_source = "input"``) reads one slot per
query head out of r (B, N) by three fixed maps and a few learned scalars:

1. decode: ``xhat = P (r / lr)`` with ``P = pinv(W_in)`` (d, N). In the
   near-linear regime (small ``input_scaling``, small ``lr``) one gated write
   from a zero state gives ``r ~ g lr W_in u``, so ``xhat ~ g u``: the
   normalised layer input that was written, whatever word it was;
2. undo the layer's input norm: ``xhat / gamma`` (``gamma`` the RMSNorm /
   LayerNorm weight of layer L's input norm), back in the residual stream's
   directions;
3. value: ``v = pinv(W_O) (a * xhat / ||xhat||)``, cut into one ``head_dim``
   piece per query head, so that ``o_proj`` of the slot's output is that vector: the
   slot writes the remembered token's residual direction into every query
   that reads it. ``a = exp(log_gain)`` is learned (:func:`calibrate`
   sets it from the residual norm of real text before training).

The slot's key is learned (zeros at init) and its attention logit gets a
learned per-head bias ``beta`` (init :data:`BIAS_INIT`: the slot takes nearly
all the mass of a query that reads it); how much each token reads is the
model's usual gate ``tanh(g)`` times the query gate. Nothing here is fitted to
particular words: the learned parameters are ``H * head_dim + 2 H + 1``
numbers, which is why this readout can carry keys outside its training set,
where the free K/V readout (:class:`ran.injection.slots.SlotReadout`) memorises them.

The unit norm makes the read depend on the direction of the state only, so the write
gates set the relative weight of what was written (a fact vs the distractors around it) and
closing every gate cannot silence a wrong memory; a zero (reset) state reads as zero.

Why these maps (ad hoc checks on notebook 06's held-out episodes, outside the pipeline): adding
the key token's residual (2x its norm) at every position of a fresh question
pass at layer 15 of SmolLM2 makes the model answer the key in 0.99 of the
episodes; transplanting the write pass's keys/values into layer 15's
attention (one layer, own k/v projections) answers at chance.
"""

from __future__ import annotations

import math

import torch

from ran.injection.slots import SlotReadout

BIAS_INIT = 10.0  # slot logit bias at init: softmax mass ~ 1 against typical token logits
QUERY_GATE_INIT = 3.0  # query-gate bias at init: sigmoid(3) = 0.95, every token reads
NORM_EPS = 1e-12  # the decoded direction is unit-normed; a zero (reset) state reads as zero
GAIN_INIT = 2.0  # residual norm multiple of the decoded slot (calibrate() sets the norm)


def input_norm_weight(block) -> torch.Tensor | None:
    """The per-channel weight of a decoder block's attention input norm (None if absent)."""
    for name in ("input_layernorm", "ln_1"):
        norm = getattr(block, name, None)
        if norm is not None and getattr(norm, "weight", None) is not None:
            return norm.weight.detach()
    return None


class DecodedReadout(SlotReadout):
    """One slot per query head: the decoded state, written through ``pinv(W_O)``.

    Parameters
    ----------
    w_in : Tensor (N, d)
        The reservoir's fixed input matrix (the layer input drives it).
    leak : float
        The reservoir's leak rate (the decoder divides by it).
    o_proj : Tensor (d, H * hd)
        Layer L's output projection weight.
    gamma : Tensor (d,) or None
        Layer L's input-norm weight (None: no correction).
    n_heads, head_dim : int
        Query heads H and their width.
    gate_init, query_dim
        As for :class:`ran.injection.slots.SlotReadout`.
    """

    def __init__(self, w_in, leak, o_proj, gamma, n_heads, head_dim, gate_init=0.0, query_dim=0):
        super().__init__(w_in.shape[0], 1, 1, 1, n_heads, gate_init, 0.0, query_dim)
        del self.proj  # no free readout matrix: the maps below are fixed
        w = torch.float64
        dec = torch.linalg.pinv(w_in.to(w)) / leak  # (d, N)
        if gamma is not None:
            g = gamma.to(w)
            inv = g / (g * g + 1e-4)  # 1 / gamma, safely
            dec = dec * (inv / inv.pow(2).mean().sqrt())[:, None]  # unit drive -> ~unit norm
        self.register_buffer("decode", dec.to(w_in.dtype), persistent=False)
        self.register_buffer("out_inv", torch.linalg.pinv(o_proj.to(w)).to(w_in.dtype), False)
        self.heads = (n_heads, head_dim)
        self.key = torch.nn.Parameter(torch.zeros(n_heads, head_dim))
        self.bias = torch.nn.Parameter(torch.full((n_heads,), BIAS_INIT))
        self.log_gain = torch.nn.Parameter(torch.tensor(math.log(GAIN_INIT)))
        if self.query_gate is not None:  # open at init: the read side learns where to close
            torch.nn.init.constant_(self.query_gate.bias, QUERY_GATE_INIT)

    def decoded(self, r: torch.Tensor) -> torch.Tensor:
        """The remembered residual direction (B, d) from r (B, N), before the gain."""
        return r.to(self.decode.dtype) @ self.decode.T

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot keys and values, each (B, H, 1, hd), from r (B, N)."""
        h, hd = self.heads
        x = self.decoded(r)  # (B, d)
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS) * self.log_gain.exp()
        v = (x @ self.out_inv.T).view(r.shape[0], h, 1, hd)
        k = self.key.to(v.dtype)[None, :, None].expand(r.shape[0], h, 1, hd)
        return k, v

    def slot_bias(self) -> torch.Tensor:
        """Per-head logit bias (H,) added to the slot's attention logit."""
        return self.bias

    def calibrate(self, handle, tokenizer, texts: list[str], multiple: float = GAIN_INIT):
        """Set the gain to ``multiple`` x the residual norm of layer L on ``texts``; returns it."""
        gain = multiple * residual_norm(handle, tokenizer, texts)
        with torch.no_grad():
            self.log_gain.fill_(math.log(gain))
        return gain


def residual_norm(handle, tokenizer, texts: list[str]) -> float:
    """Median norm of the residual stream entering layer L over the tokens of ``texts`` (the
    median: the first token of a text, an attention sink, has a norm many times the rest)."""
    from ran.injection.slots import model_layers

    block = model_layers(handle.model)[0][handle.layer]
    norms: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        hs = kwargs.get("hidden_states", args[0] if args else None)
        norms.append(hs.detach().float().norm(dim=-1).flatten())

    hook = block.register_forward_pre_hook(grab, with_kwargs=True)
    saved = handle.state
    try:
        with torch.no_grad():
            for t in texts:
                ids = tokenizer(t, return_tensors="pt")["input_ids"]
                handle.model(ids.to(next(handle.model.parameters()).device))
    finally:
        hook.remove()
        handle.state = saved
    if not norms:
        raise ValueError("calibrate needs at least one non-empty text")
    return float(torch.cat(norms).median())


def calibrate(handle, tokenizer, texts: list[str], multiple: float = GAIN_INIT) -> float | None:
    """Set a decoded readout's gain to ``multiple`` x the residual norm on ``texts``;
    returns the gain. A no-op (returns None) for other readouts."""
    if not isinstance(handle.slots, DecodedReadout):
        return None
    return handle.slots.calibrate(handle, tokenizer, texts, multiple)
