"""Slots as pseudo-tokens in layer L's input space, projected by the layer's own k/v weights.

:class:`HiddenReadout` (``InjectionConfig.readout = "hidden"``) maps the state
r (B, N) to M vectors in the space of layer L's (normalised) input,
``xhat = G r`` (B, M, d), and makes each slot's key and value with the layer's
own frozen projections, ``k = W_K xhat``, ``v = W_V xhat`` (no position). A
slot is then what a token with hidden state ``xhat`` would be to that layer,
so copying a word told in an earlier pass needs only ``xhat ~ x_word``: one
map, the same for every word, which is what lets the memory carry keys it
never saw in training.

Initialisation: with the layer input as the drive (``drive_source="input"``),
one write from a zero state gives ``r ~ lr W_in x / ||x||`` while the units stay
out of saturation, so ``G`` starts at ``gain * pinv(W_in)`` (plus small noise
per slot to break their symmetry): at init each slot already holds the
direction of what was written. ``gain`` is learned.
"""

from __future__ import annotations

import torch

from ran.injection.slots import SlotReadout


def kv_projector(attn, model_type: str):
    """``f(x) -> (k, v)``: layer L's own key/value projections of x (B, M, d), each
    (B, n_kv, M, hd), for the supported architectures."""
    if model_type == "gpt2":
        d = attn.embed_dim
        n, hd = attn.num_heads, attn.head_dim

        def gpt2(x):
            _, k, v = attn.c_attn(x).split(d, dim=2)
            b, m = x.shape[:2]
            return (
                k.view(b, m, n, hd).transpose(1, 2),
                v.view(b, m, n, hd).transpose(1, 2),
            )

        return gpt2
    hd = attn.head_dim

    def llama(x):
        b, m = x.shape[:2]
        k = attn.k_proj(x).view(b, m, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(b, m, -1, hd).transpose(1, 2)
        return k, v

    return llama


class HiddenReadout(SlotReadout):
    """Readout to M pseudo-token hidden states, keyed and valued by the layer's own weights.

    Parameters
    ----------
    units, n_slots, n_heads, gate_init, init_scale, query_dim
        As for :class:`ran.injection.slots.SlotReadout` (the gates are the same).
    hidden : int
        Width d of layer L's input.
    kv : callable
        :func:`kv_projector` of the injected layer (frozen weights).
    w_in : Tensor (N, d) or None
        The reservoir's input matrix when the layer input drives it: ``G``
        starts at ``pinv(W_in)`` (else at random, std ``init_scale / sqrt(N)``).
    """

    def __init__(
        self, units, n_slots, n_heads, hidden, kv, w_in=None, gate_init=0.0, init_scale=0.1,
        query_dim=0,
    ):  # fmt: skip
        super().__init__(units, 1, 1, 1, n_heads, gate_init, init_scale, query_dim)
        self.shape = (n_slots, hidden)
        self.proj = torch.nn.Linear(units, n_slots * hidden)
        torch.nn.init.normal_(self.proj.weight, std=init_scale / units**0.5)
        torch.nn.init.zeros_(self.proj.bias)
        self.gain = torch.nn.Parameter(torch.tensor(float(hidden) ** 0.5))  # ~ ||x|| of a token
        if w_in is not None:
            pinv = torch.linalg.pinv(w_in.double()).to(self.proj.weight.dtype)  # (d, N)
            with torch.no_grad():  # every slot starts at the pseudo-inverse (+ 10% of its noise)
                w = self.proj.weight.view(n_slots, hidden, units)
                w.mul_(0.1).add_(pinv[None])
        self._kv = [kv]  # a list: the layer's projections are not parameters of the readout

    def hidden_slots(self, r: torch.Tensor) -> torch.Tensor:
        """The slots' pseudo-token hidden states (B, M, d) from r (B, N)."""
        m, d = self.shape
        return self.gain * self.proj(r.to(self.proj.weight.dtype)).view(r.shape[0], m, d)

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot keys and values, each (B, n_kv, M, hd), from r (B, N)."""
        xhat = self.hidden_slots(r)
        return self._kv[0](xhat.to(self.proj.weight.dtype))
