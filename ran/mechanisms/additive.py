"""``additive``: the reservoir readout added to the residual stream after layer L.

``h_t <- h_t + tanh(g) (W r(t) + c)`` at every position; r(t) is the state at the
start of the pass (the fixed reservoir of ``cfg.reservoir``, driven like the
reservoir slots by layer L's pooled attention output).
"""

from __future__ import annotations

import torch

from ran.injection.config import InjectionConfig
from ran.injection.handle import ReservoirHandle
from ran.mechanisms.adapter import AdapterMixin
from ran.mechanisms.registry import register


class AdditiveReadout(torch.nn.Module):
    """``tanh(g) * (W r + c)``: one residual-stream vector (B, d) per state r (B, N)."""

    def __init__(self, units: int, hidden: int, gate_init: float, init_scale: float):
        super().__init__()
        self.proj = torch.nn.Linear(units, hidden)
        torch.nn.init.normal_(self.proj.weight, std=init_scale / units**0.5)
        torch.nn.init.zeros_(self.proj.bias)
        self.gate = torch.nn.Parameter(torch.full((1,), float(gate_init)))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gate) * self.proj(r.to(self.proj.weight.dtype))


@register("additive", trained=True, lower_reuse=True)
class AdditiveHandle(AdapterMixin, ReservoirHandle):
    """The reservoir readout added to every position's hidden state after block L.

    ``h_t <- h_t + tanh(g) (W r(t) + c)``; r(t) is the state at the start of the
    pass, so the current prompt's write only shows in the next pass. ``g = 0``
    adds exact zeros (bit-identical output).
    """

    def __init__(self, model, cfg: InjectionConfig):
        super().__init__(model, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.readout = AdditiveReadout(
                cfg.reservoir.units, self.hidden, cfg.gate_init, cfg.readout_scale
            ).to(device=self.device, dtype=self.dtype)
        self._add: torch.Tensor | None = None
        self._hooks.append(self.blocks[self.layer].register_forward_hook(self._after_block))

    def _attend(self, layer, module, query, key, value, mask, **kwargs):
        out, weights = self._base_fns[layer](module, query, key, value, mask, **kwargs)
        self._add = self.readout(self._read_state(query.shape[0]))  # (B, d), before the write
        self._drive(out)
        return out, weights

    def _after_block(self, module, args, output):
        add, self._add = self._add, None
        if add is None:
            return output
        hs = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        hs = hs + add[:, None, :].to(hs.dtype)
        return (hs, *output[1:]) if isinstance(output, tuple) else hs
