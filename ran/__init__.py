"""RAN: a fixed random echo-state reservoir inside one attention layer of a pretrained LM.

Subpackages, each importing only from the ones before it (``tests/unit/test_import_layers.py``):

* ``ran.util``: atomic writes, config files, outputs and provenance, the evaluation
  cache, statistics (no other ran imports);
* ``ran.reservoir``: the batched ESN (one step function) and its dynamics;
* ``ran.injection``: model loading, the InjectionConfig, attention routing, slot
  attention and gates, the write side, the MemoryHandle base and its state;
* ``ran.mechanisms``: the registry and one module per memory mechanism, adapters on
  disk (``ran.from_pretrained(model, folder)``);
* ``ran.tasks``: data, word lists, probes, scoring, the episode runner and controls;
* ``ran.training``: TrainConfig, train(), the loop, the KL term, the recipes
  (``ran.fact_memory()``: notebook 06's best configuration), jobs and executors;
* ``ran.evaluation``: perplexity, generation and overhead against the base model;
* ``ran.study``: one module per notebook (its computation and findings);
* ``ran.report``: FINDINGS + PDF, the diagram, the figures;
* on top: ``ran.cli``, ``ran.agent``, ``ran.bench``, ``ran.pipeline`` (papermill runner),
  ``ran.lab``, ``ran.sweeps`` and ``python -m ran``.

Heavy modules are imported lazily so ``import ran`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ReservoirConfig": "ran.reservoir",
    "Reservoir": "ran.reservoir",
    "InjectionConfig": "ran.injection.config",
    "inject": "ran.mechanisms.reservoir_slots",
    "load_model": "ran.injection.models",
    "from_pretrained": "ran.mechanisms.adapter",
    "save_pretrained": "ran.mechanisms.adapter",
    "make": "ran.mechanisms.registry",
    "TrainConfig": "ran.training.config",
    "train": "ran.training.train",
    "fact_memory": "ran.training.recipes",
    "evaluate": "ran.tasks.episodes",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ran' has no attribute {name!r}")
