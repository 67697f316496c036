"""The write side: how a pass drives the fixed reservoir (pooling, per-token steps, write gate).

After a pass, layer L's gated attention output ``o_t`` (B, Q, H, hd) and the
layer's (normalised) input ``x_t`` (B, Q, d) decide the update of r(t). The
reservoir (``W``, ``W_in``) stays fixed and random; only the parts here learn,
like the readout on the read side.

Drives (``InjectionConfig.pooling``):

* ``"last"``: ``u = o_T`` at the last real token (the original RAN).
* ``"mean"``: ``u`` is the mean of ``o_t`` over the real tokens.
* ``"attn"``: learned attention pooling, one softmax over tokens per head:
  ``a_{t,h} = softmax_t(w_h . x_t + c_h)``, ``u_h = sum_t a_{t,h} o_{t,h}``
  (the write-side twin of the readout; ``w = 0`` at init = mean pooling).
* ``"token"``: the reservoir steps once per real token,
  ``r <- step(r, o_t / ||o_t||)``, so the state integrates the pass.

Write gate (``write_gate=True``): ``g = sigmoid(v . xbar + c)`` scales the
leak of the update, ``r(t+1) = r + g lr (tanh(W r + W_in u + b) - r)``
(:func:`ran.reservoir.leaky_update`), with ``xbar`` the layer input pooled like
the drive (per token for ``"token"``). A pass with nothing worth keeping can
learn ``g ~ 0`` and leave the state (almost) untouched; ``c`` starts at
``write_gate_init`` (``sigmoid(2) = 0.88``: open; very negative: closed).
"""

from __future__ import annotations

import torch

POOLINGS = ("last", "mean", "attn", "token")


def real_mask(pad2d: torch.Tensor | None, b: int, q_len: int, like: torch.Tensor) -> torch.Tensor:
    """(B, Q) float mask of the real query tokens (1) from the forward call's 2-D mask."""
    if pad2d is None or pad2d.shape[-1] < q_len:
        return torch.ones(b, q_len, dtype=like.dtype, device=like.device)
    return pad2d[:, -q_len:].to(device=like.device, dtype=like.dtype)


def pool_fixed(out, x, real, pooling: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unlearned poolings: ``u`` (B, H*hd) at the ``"last"`` real token or the ``"mean"``
    over real tokens of out (B, Q, H, hd), and the layer input x (B, Q, d) pooled alike
    (None when x is None). Rows without a real token get ``u = 0``."""
    b, q_len = out.shape[:2]
    flat = out.reshape(b, q_len, -1)  # (B, Q, H*hd)
    if pooling == "mean":
        n = real.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
        u = (flat * real[..., None]).sum(1) / n
        return u, None if x is None else (x * real[..., None].to(x.dtype)).sum(1) / n
    pos = torch.arange(1, q_len + 1, device=out.device, dtype=real.dtype)
    last = (real * pos).argmax(dim=1)  # (B,) index of the last real token
    rows = torch.arange(b, device=out.device)
    u = flat[rows, last] * (real.sum(1, keepdim=True) > 0).to(flat.dtype)
    return u, None if x is None else x[rows, last]


class WriteSide(torch.nn.Module):
    """Learned pooling scores and write gate around the fixed reservoir.

    Parameters
    ----------
    hidden : int
        Width d of the layer input ``x``.
    n_heads : int
        Query heads H of the layer (one pooling softmax per head).
    pooling : str
        One of :data:`POOLINGS`.
    write_gate : bool
        Learn a gate on how strongly each pass (or token) writes.
    gate_init : float
        Initial bias ``c`` of the write gate.
    """

    def __init__(self, hidden, n_heads, pooling="last", write_gate=False, gate_init=2.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}.")
        self.pooling = pooling
        self.score = None
        if pooling == "attn":
            self.score = torch.nn.Linear(hidden, n_heads)  # zeros: uniform = mean pooling
            torch.nn.init.zeros_(self.score.weight)
            torch.nn.init.zeros_(self.score.bias)
        self.gate = None
        if write_gate:
            self.gate = torch.nn.Linear(hidden, 1)
            torch.nn.init.zeros_(self.gate.weight)
            torch.nn.init.constant_(self.gate.bias, float(gate_init))

    @property
    def needs_input(self) -> bool:
        """Whether the layer input x must be captured (scores or gate)."""
        return self.score is not None or self.gate is not None

    def pool(self, out, x, real) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The drive ``u`` (B, H*hd) and the pooled layer input ``xbar`` (B, d) or None.

        out (B, Q, H, hd) gated attention output; x (B, Q, d) layer input or None;
        real (B, Q) mask of real tokens. Rows without a real token get ``u = 0``.
        """
        if self.pooling in ("last", "mean"):
            return pool_fixed(out, x, real, self.pooling)
        b, q_len, h, hd = out.shape
        any_real = (real.sum(1, keepdim=True) > 0).to(out.dtype)  # (B, 1)
        if self.pooling != "attn":
            raise ValueError(f"pool() does not apply to pooling {self.pooling!r}")
        if x is None:
            raise RuntimeError("attention pooling needs the layer input, which was not captured")
        s = self.score(x.to(self.score.weight.dtype))  # (B, Q, H)
        s = s.masked_fill(real[..., None] <= 0, float("-inf"))
        a = torch.softmax(s, dim=1).nan_to_num(0.0)  # (B, Q, H); all-pad rows -> 0
        u = torch.einsum("bqh,bqhd->bhd", a.to(out.dtype), out).reshape(b, h * hd)
        xbar = torch.einsum("bq,bqd->bd", a.mean(-1).to(x.dtype), x)
        return u * any_real, xbar

    def pass_gate(self, xbar: torch.Tensor | None) -> torch.Tensor | None:
        """Write gate (B,) in (0, 1) of a pass from its pooled input; None without a gate."""
        if self.gate is None:
            return None
        if xbar is None:
            raise RuntimeError("the write gate needs the layer input, which was not captured")
        return torch.sigmoid(self.gate(xbar.to(self.gate.weight.dtype))).squeeze(-1)

    def token_gates(self, x: torch.Tensor | None, real: torch.Tensor) -> torch.Tensor:
        """Per-token write strength (B, Q): the gate times the real-token mask (pads: 0)."""
        if self.gate is None:
            return real
        if x is None:
            raise RuntimeError("the write gate needs the layer input, which was not captured")
        g = torch.sigmoid(self.gate(x.to(self.gate.weight.dtype))).squeeze(-1)  # (B, Q)
        return g * real.to(g.dtype)
