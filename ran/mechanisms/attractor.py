"""An inference-time attractor memory at layer L: no training, a Hebbian-like update.

A attractors ``m_a`` (unit vectors in layer L's attention-output space, width
D = H * hd) with strengths ``s_a`` in [0, 1]. After every pass the pooled
attention output ``x`` of layer L (last real token, as for the reservoir)
updates them, per batch row:

.. math::

    c_a = \\cos(x, m_a), \\qquad p = \\mathrm{softmax}(c / \\tau) \\\\
    \\text{if } \\max_a c_a < \\theta_{new}:\\ \\text{recruit the weakest } a^*:
        m_{a^*} \\leftarrow \\hat x,\\ s_{a^*} \\leftarrow \\eta \\\\
    \\text{else}:\\ s_a \\leftarrow s_a + \\eta\\, p_a c_a^+ (1 - s_a), \\quad
        m_a \\leftarrow \\mathrm{normalize}\\big(m_a + \\mu\\, p_a (\\hat x - m_a)\\big) \\\\
    s \\leftarrow (1 - \\lambda)\\, s \\qquad \\text{(every pass and every idle pass)}

so a repeated input drives its attractor to the fixed point
``s* = eta (1 - lambda) / (lambda + eta (1 - lambda))`` (< 1), unused attractors
decay geometrically to 0, and every quantity stays bounded. On the next pass
the memory feeds back into the residual stream after block L, at every
position t:

.. math::

    f = W_O \\sum_a s_a m_a, \\qquad
    h_t \\leftarrow h_t + g\\, \\alpha\\, \\mathrm{rms}(h_t)\\, f / \\mathrm{rms}(f)

with ``W_O`` the layer's output projection (no bias), ``alpha = max_a s_a``
once the burn-in is over (at least ``burn_in`` passes seen and
``alpha >= threshold``) and 0 before; ``g = 0`` (the default) adds exact zeros.
The update is fast-weight / Hopfield-style associative memory (Hopfield 1982;
Ba et al. 2016, "Using fast weights to attend to the recent past") reduced to
a handful of prototype vectors, as in online competitive learning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ran.injection import slots as S
from ran.injection.config import InjectionConfig
from ran.injection.handle import LayerHandle
from ran.mechanisms.adapter import AdapterMixin
from ran.mechanisms.registry import register


@dataclass(frozen=True)
class AttractorConfig:
    """Hyper-parameters of the attractor memory."""

    n_attractors: int = 16  # A prototype vectors per batch row
    eta: float = 0.2  # strengthening rate, also the strength of a newly recruited attractor
    decay: float = 0.05  # lambda: strengths shrink by (1 - decay) every pass and idle pass
    move: float = 0.1  # mu: how far an activated attractor moves toward the input
    temperature: float = 0.1  # tau of the softmax over cosine similarities
    recruit_below: float = 0.5  # theta_new: a new attractor is recruited under this cosine
    burn_in: int = 2  # passes to see before any feedback
    threshold: float = 0.1  # no feedback until the strongest strength reaches this
    gate: float = 0.0  # feedback gain g; 0 keeps the model bit-exact

    def __post_init__(self):
        if not isinstance(self.n_attractors, int) or self.n_attractors < 1:
            raise ValueError(f"n_attractors must be a positive integer, got {self.n_attractors!r}.")
        if not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise ValueError(f"burn_in must be a non-negative integer, got {self.burn_in!r}.")
        for name in ("eta", "decay", "move", "threshold"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}.")
        if not isinstance(self.temperature, int | float) or not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}.")
        for name in ("recruit_below", "gate"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or v != v or abs(v) == float("inf"):
                raise ValueError(f"{name} must be a finite number, got {v!r}.")


class AttractorGate(torch.nn.Module):
    """Holds the (untrained) feedback gain as a buffer, where RANHandle keeps its gate."""

    def __init__(self, gate: float):
        super().__init__()
        self.register_buffer("gate", torch.tensor([float(gate)]))


@register(
    "attractor", trained=False, lower_reuse=True, options={"attractor": AttractorConfig},
    variants=lambda gain: variants(gain),
)  # fmt: skip
class AttractorHandle(AdapterMixin, LayerHandle):
    """Attractor memory at layer L with the handle interface of the reservoir injection.

    ``state`` is one flat tensor per row, (B, A + 1 + A * D): the strengths
    ``s`` (A), the number of passes seen (1), then the attractors ``m`` (A, D).
    The zero state is the empty memory. ``trainable_parameters()`` is empty.
    """

    def __init__(self, model, cfg: InjectionConfig, attractor: AttractorConfig | None = None):
        if attractor is not None and not isinstance(attractor, AttractorConfig):
            raise ValueError("attractor must be a ran.mechanisms.attractor.AttractorConfig.")
        super().__init__(model, cfg)
        self.acfg = attractor or AttractorConfig()
        self.readout = AttractorGate(self.acfg.gate).to(self.device)
        block = self.blocks[self.layer]
        self._o_proj = block.attn.c_proj if hasattr(block, "attn") else block.self_attn.o_proj
        self.state_dim = self.acfg.n_attractors * (self.input_dim + 1) + 1
        self._state: torch.Tensor | None = None
        self._feedback: torch.Tensor | None = None
        self._hooks.append(self.blocks[self.layer].register_forward_hook(self._after_block))

    # ------------------------------------------------------------------ state
    def options(self) -> dict:
        """``attractor``: the AttractorConfig (as a dict)."""
        return {"attractor": dataclasses.asdict(self.acfg)}

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """None: the attractors change at inference time only."""
        return []

    @property
    def state(self) -> torch.Tensor | None:
        """Flat memory (B, A + 1 + A*D), or None before the first pass (empty memory)."""
        return self._state

    @state.setter
    def state(self, value: torch.Tensor | None) -> None:
        if value is None:
            self._state = None
            return
        if (
            not isinstance(value, torch.Tensor)
            or value.dim() != 2
            or value.shape[1] != self.state_dim
        ):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"the attractor state must be a tensor of shape (batch, {self.state_dim}), got {shape}."
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError("the attractor state contains NaN or Inf values.")
        self._state = value.detach().to(device=self.device, dtype=torch.float32)

    def _split(self, state: torch.Tensor):
        """(strengths (B, A), passes (B,), attractors (B, A, D)) views of a flat state."""
        a = self.acfg.n_attractors
        return state[:, :a], state[:, a], state[:, a + 1 :].view(state.shape[0], a, -1)

    @property
    def strengths(self) -> torch.Tensor | None:
        """Attractor strengths s (B, A)."""
        return None if self._state is None else self._split(self._state)[0]

    @property
    def attractors(self) -> torch.Tensor | None:
        """Unit attractor vectors m (B, A, D) (zero rows are empty slots)."""
        return None if self._state is None else self._split(self._state)[2]

    def _empty(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.state_dim, device=self.device)

    def _check_batch(self, batch: int) -> None:
        if self._state is not None and self._state.shape[0] != batch:
            raise ValueError(
                f"the batch size changed from {self._state.shape[0]} to {batch} while the "
                f"attractors hold a state; call reset_state() (or set .state) first."
            )

    def reset_state(self) -> None:
        """Forget every attractor."""
        self._state, self.last_drive = None, None

    def detach_state(self) -> None:
        """No-op: the attractor state never carries a graph."""

    def idle(self, n: int, batch_size: int | None = None) -> torch.Tensor:
        """``n`` unprompted passes: strengths decay by ``(1 - decay) ** n``; returns the state."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"idle needs a non-negative integer number of passes, got {n!r}.")
        if self._state is None:
            self._state = self._empty(batch_size or 1)
        elif batch_size is not None:
            self._check_batch(batch_size)
        st = self._state.clone()
        st[:, : self.acfg.n_attractors] *= (1 - self.acfg.decay) ** n
        self._state = st
        return st

    # ------------------------------------------------------------------ update and feedback
    @torch.no_grad()
    def update(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One attractor update of ``state`` (B, state_dim) by the drive x (B, D)."""
        c = self.acfg
        s, n, m = (t.clone() for t in self._split(state))
        norm = x.norm(dim=-1, keepdim=True)
        live = norm[:, 0] > 0  # rows with a real token (a zero drive leaves the row alone)
        xh = x / norm.clamp_min(1e-12)  # (B, D)
        cos = torch.einsum("bad,bd->ba", m, xh)  # (B, A); empty slots give 0
        p = torch.softmax(cos / c.temperature, dim=-1)  # (B, A)
        best = cos.max(dim=-1).values  # (B,)
        recruit = live & (best < c.recruit_below)
        grow = live & ~recruit
        # strengthen and move the activated attractors (rows that matched)
        ds = c.eta * p * cos.clamp_min(0) * (1 - s)
        s = torch.where(grow[:, None], s + ds, s)
        moved = m + c.move * p[..., None] * (xh[:, None] - m)
        moved = moved / moved.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        m = torch.where((grow[:, None] & (s > 0))[..., None], moved, m)
        # recruit the weakest slot for a novel input
        weakest = s.argmin(dim=-1)  # (B,)
        onehot = torch.nn.functional.one_hot(weakest, s.shape[1]).bool() & recruit[:, None]
        m = torch.where(onehot[..., None], xh[:, None].expand_as(m), m)
        s = torch.where(onehot, torch.full_like(s, c.eta), s)
        s = s * (1 - c.decay)
        n = n + live.to(n.dtype)
        return torch.cat([s, n[:, None], m.flatten(1)], dim=1)

    def feedback_gain(self) -> torch.Tensor | None:
        """alpha (B,): the strongest strength after burn-in, 0 before; None if no memory."""
        if self._state is None:
            return None
        s, n, _ = self._split(self._state)
        top = s.max(dim=-1).values
        ok = (n >= self.acfg.burn_in) & (top >= self.acfg.threshold)
        return torch.where(ok, top, torch.zeros_like(top))

    def _direction(self) -> torch.Tensor:
        """f / rms(f) (B, d): the memory mapped through W_O and scaled to unit RMS."""
        s, _, m = self._split(self._state)
        v = torch.einsum("ba,bad->bd", s, m)  # (B, D)
        w = self._o_proj.weight  # Linear: (d, D); GPT-2's Conv1D: (D, d)
        f = v.to(w.dtype) @ (w.T if isinstance(self._o_proj, torch.nn.Linear) else w)  # (B, d)
        return f / f.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()

    def _attend(self, layer, module, query, key, value, mask, **kwargs):
        out, weights = self._base_fns[layer](module, query, key, value, mask, **kwargs)
        b = query.shape[0]
        gate = self.readout.gate.to(out.dtype)
        if self._state is not None:  # read before write: the feedback uses the previous passes
            self._feedback = gate * self.feedback_gain()[:, None].to(out.dtype) * self._direction()
        else:
            self._feedback = gate * torch.zeros(b, self.hidden, dtype=out.dtype, device=out.device)
        x = self._pooled(out).detach().float()
        self.last_drive = x
        self._state = self.update(self._state if self._state is not None else self._empty(b), x)
        if self._stop_after:
            raise S.StopAfterLayer
        return out, weights

    def _after_block(self, module, args, output):
        fb, self._feedback = self._feedback, None
        if fb is None:
            return output
        hs = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        rms = hs.pow(2).mean(-1, keepdim=True).sqrt()  # (B, T, 1)
        hs = hs + rms * fb[:, None, :].to(hs.dtype)
        return (hs, *output[1:]) if isinstance(output, tuple) else hs


def ungated(gate: float) -> AttractorConfig:
    """The attractor with feedback gain ``gate`` and no gating: no burn-in, no threshold."""
    return AttractorConfig(gate=gate, burn_in=0, threshold=0.0)


def gated(gate: float) -> AttractorConfig:
    """The attractor with feedback gain ``gate`` and the default burn-in and threshold."""
    return AttractorConfig(gate=gate)


def variants(gate: float) -> list[tuple[str, dict]]:
    """The two attractor settings compared side by side (notebook 04): (label, options)."""
    return [
        ("attractor (no gating)", {"attractor": ungated(gate)}),
        ("attractor (gating + burn-in)", {"attractor": gated(gate)}),
    ]
