"""RAN: a fixed random echo-state reservoir inside one attention layer of a pretrained LM.

Modules (one concept each): ``reservoir`` (the batched ESN), ``dynamics`` (ESP,
memory capacity, Lyapunov exponent, sweeps), ``models`` (registry),
``surgery`` (injection of reservoir K/V slots), ``adapter`` (trained adapters
on disk: ``ran.from_pretrained(model, folder)``), ``results`` (outputs and
provenance), ``pipeline`` (papermill runner), ``report`` (FINDINGS + PDF).
Heavy modules are imported lazily so ``import ran`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ReservoirConfig": "ran.reservoir",
    "Reservoir": "ran.reservoir",
    "InjectionConfig": "ran.surgery",
    "inject": "ran.surgery",
    "load_model": "ran.models",
    "from_pretrained": "ran.adapter",
    "save_pretrained": "ran.adapter",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ran' has no attribute {name!r}")
