"""The mechanism registry: declarations, make(), and a toy mechanism added by one module.

The toy mechanism below is everything a new mechanism needs: one class that
subclasses a handle base of :mod:`ran.injection.handle` and one ``@register``
call. Nothing central is edited, yet ``make``, ``TrainConfig(kind=...)`` and
``train()`` run it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_RUN

from ran.injection.config import InjectionConfig
from ran.injection.handle import MemoryHandle, ReservoirHandle
from ran.mechanisms import registry
from ran.training.config import TrainConfig
from ran.training.train import train
from ran.util.results import Outputs


class ToyReadout(torch.nn.Module):
    """``tanh(g) * W r``: one vector per row added to every head's attention output."""

    def __init__(self, units: int, width: int, gate_init: float):
        super().__init__()
        self.proj = torch.nn.Linear(units, width, bias=False)
        torch.nn.init.normal_(self.proj.weight, std=0.1 / units**0.5)
        self.gate = torch.nn.Parameter(torch.full((1,), float(gate_init)))

    def forward(self, r):
        return torch.tanh(self.gate) * self.proj(r.to(self.proj.weight.dtype))


class ToyHandle(ReservoirHandle):
    """Layer L's attention output plus a readout of the fixed reservoir (tanh(0) = closed)."""

    def __init__(self, model, cfg: InjectionConfig):
        super().__init__(model, cfg)
        self.readout = ToyReadout(cfg.reservoir.units, self.input_dim, cfg.gate_init).to(
            self.device
        )

    def _attend(self, layer, module, query, key, value, mask, **kwargs):
        out, weights = self._base_fns[layer](module, query, key, value, mask, **kwargs)
        add = self.readout(self._read_state(query.shape[0]))  # (B, H*hd), read before the write
        out = out + add.view(out.shape[0], 1, *out.shape[2:]).to(out.dtype)
        self._drive(out)
        return out, weights


@pytest.fixture
def toy():
    registry.register("toy", trained=True, lower_reuse=True)(ToyHandle)
    yield "toy"
    registry.unregister("toy")


def test_builtin_declarations():
    assert registry.kinds() == (
        "reservoir", "prefix", "additive", "persistent", "attractor", "recurrent",
    )  # fmt: skip
    assert not registry.get("attractor").trained and registry.get("reservoir").trained
    assert not registry.get("prefix").lower_reuse and registry.get("additive").lower_reuse
    assert set(registry.get("recurrent").options) == {"cell"}
    for kind in registry.kinds():
        cls = registry.get(kind).cls
        assert issubclass(cls, MemoryHandle) and cls.kind == kind
    with pytest.raises(ValueError, match="unknown mechanism kind"):
        registry.get("nope")


def test_a_toy_mechanism_registers_and_trains_two_steps(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    assert toy in registry.kinds() and ToyHandle.kind == toy
    with pytest.raises(ValueError, match="takes no options"):
        registry.make(toy, torch.nn.Module(), InjectionConfig(), cell="gru")
    cfg = TrainConfig(**TINY_RUN | {"kind": toy})
    res = train(cfg, Outputs("smoke"), progress=False)
    assert isinstance(res.handle, ToyHandle) and len(res.history["step"]) == 2
    assert all(torch.isfinite(torch.tensor(v)).all() for v in res.history["loss"])
    assert res.handle.readout.gate.item() != TINY_RUN["injection"]["gate_init"]  # the gate trained
    res.handle.remove()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(toy)(ReservoirHandle)
