"""``recurrent``: the reservoir K/V slots with a TRAINED recurrence (the trained reference).

``cell="esn"`` trains W, W_in and b of the leaky-tanh update (initialised from
the fixed reservoir); ``cell="gru"`` replaces it by a GRU cell.
"""

from __future__ import annotations

import torch

from ran.injection.config import InjectionConfig
from ran.mechanisms.registry import register
from ran.mechanisms.reservoir_slots import RANHandle
from ran.reservoir.esn import Reservoir, leaky_update


def _check_cell(cell: str) -> None:
    if cell not in ("esn", "gru"):
        raise ValueError(f"recurrent cell must be 'esn' or 'gru', got {cell!r}.")


class TrainedRecurrence(torch.nn.Module):
    """A trainable recurrence of size N in place of the fixed reservoir.

    ``cell="esn"``: the leaky-tanh update of :class:`ran.reservoir.Reservoir`
    with ``W``, ``W_in`` and ``b`` trainable and initialised from the fixed
    reservoir (so at init it is the reservoir). ``cell="gru"``: a GRU cell
    (Cho et al. 2014), r(t+1) = GRU(u(t), r(t)).
    """

    def __init__(self, reservoir: Reservoir, cell: str = "esn"):
        super().__init__()
        _check_cell(cell)
        self.cfg, self.input_dim, self.cell = reservoir.cfg, reservoir.input_dim, cell
        if cell == "esn":
            self.W = torch.nn.Parameter(reservoir.W.clone())
            self.W_in = torch.nn.Parameter(reservoir.W_in.clone())
            self.b = torch.nn.Parameter(reservoir.b.clone())
        else:
            self.gru = torch.nn.GRUCell(reservoir.input_dim, reservoir.units)
            self.gru.to(device=reservoir.W.device, dtype=reservoir.W.dtype)
            self.W = self.gru.weight_hh  # StateMixin reads .W for the device and dtype

    @property
    def units(self) -> int:
        return self.cfg.units

    def zero_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.units, dtype=self.W.dtype, device=self.W.device)

    def step(self, r: torch.Tensor, u: torch.Tensor, gate: torch.Tensor | None = None):
        """r (B, N), u (B, d_in) -> r(t+1) (B, N); ``gate`` (B,) scales the update per row."""
        u, r = u.to(self.W.dtype), r.to(self.W.dtype)
        if self.cell == "gru":
            h = self.gru(u, r)
            return h if gate is None else r + gate.to(h.dtype)[:, None] * (h - r)
        pre = r @ self.W.T + u @ self.W_in.T + self.b
        return leaky_update(r, pre, self.cfg.lr, gate)


@register("recurrent", trained=True, lower_reuse=True, options={"cell": str}, query_gate=True)
class RecurrentHandle(RANHandle):
    """The reservoir K/V slots with a trained recurrence (the trained-recurrence reference)."""

    def __init__(self, model, cfg: InjectionConfig, cell: str = "esn"):
        _check_cell(cell)  # before injecting: a failed constructor leaves no hooks behind
        super().__init__(model, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.reservoir = TrainedRecurrence(self.reservoir, cell)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Readout, gate, the learned write side (if any) and every recurrence weight."""
        return super().trainable_parameters() + list(self.reservoir.parameters())

    def options(self) -> dict:
        """``cell``: "esn" or "gru"."""
        return {"cell": self.reservoir.cell}

    def _state_hash(self) -> str:
        return f"{super()._state_hash()}-{self.reservoir.cell}"
