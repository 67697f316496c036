"""``persistent``: M learned static K/V slots at layer L, no state.

Sukhbaatar et al. 2019, "Augmenting self-attention with persistent memory": the
reference with the same read side as the reservoir slots and nothing carried
across passes.
"""

from __future__ import annotations

import torch

from ran.injection import slots as S
from ran.injection.config import InjectionConfig
from ran.mechanisms.registry import register
from ran.mechanisms.reservoir_slots import RANHandle


class PersistentSlots(S.SlotReadout):
    """M learned constant K/V slots per KV head (Sukhbaatar et al. 2019); r is ignored."""

    def __init__(self, n_slots, n_kv, head_dim, n_heads, gate_init, init_scale):
        super().__init__(1, n_slots, n_kv, head_dim, n_heads, gate_init, init_scale)
        del self.proj
        self.kv = torch.nn.Parameter(init_scale * torch.randn(2, n_kv, n_slots, head_dim))

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.kv[:, None].expand(2, r.shape[0], *self.kv.shape[1:])  # (2, B, n_kv, M, hd)
        return kv[0], kv[1]


@register("persistent", trained=True, lower_reuse=True)
class PersistentHandle(RANHandle):
    """The K/V slot injection with learned static slots: nothing crosses passes.

    The reservoir still runs (so ``state`` works for the controls) but the
    slots never read it, so pass t+1 cannot depend on pass t by construction.
    """

    def __init__(self, model, cfg: InjectionConfig):
        super().__init__(model, cfg)
        old = self.slots
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.slots = PersistentSlots(
                cfg.n_slots, self.slots.shape[1], self.slots.shape[2], old.gate.numel(),
                cfg.gate_init, cfg.readout_scale,
            ).to(device=old.gate.device, dtype=old.gate.dtype)  # fmt: skip
