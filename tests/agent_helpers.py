"""Shared setup of the agent tests: an untrained tiny-llama adapter on disk and its gate."""

from __future__ import annotations

from pathlib import Path

from ran.agent.gate_probe import GateProbe
from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.mechanisms.adapter import from_pretrained
from ran.mechanisms.reservoir_slots import inject
from ran.reservoir.config import ReservoirConfig

UNITS = 64  # a small reservoir: every pass takes milliseconds
SMALL_PROBE = GateProbe(n_train=10, n_val=4, n_test=6)  # ~160 turns: a gate in about a second


def make_adapter(folder, seed: int = 0, units: int = UNITS) -> Path:
    """An untrained tiny-llama adapter (gate open at tanh(1)) saved with save_pretrained."""
    model, _ = load_model("tiny-llama")
    cfg = InjectionConfig(reservoir=ReservoirConfig(units=units, seed=seed), gate_init=1.0)
    handle = inject(model, cfg)
    handle.save_pretrained(folder)
    handle.remove()
    return Path(folder)


def load_handle(folder):
    """``(handle, tokenizer)``: a fresh tiny-llama with the adapter injected."""
    model, tok = load_model("tiny-llama")
    return from_pretrained(model, folder), tok
