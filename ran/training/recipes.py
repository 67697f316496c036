"""Named recipes: the library's default configuration for a job, the one a notebook measured best.

:func:`fact_memory` is notebook 06's best configuration, the recipe to use for a memory
that holds a fact told in running text through unrelated passes and idle ticks:

* write side: the layer input drives the fixed reservoir token by token through learned
  per-token write gates (closed-ish at init), so a pass with nothing worth keeping leaves
  the state almost untouched;
* reservoir: N = 1024 units, leak rate 0.01 (a slow leaky integrator), spectral radius
  0.9, input scaling 0.1 (the near-linear regime the decoder inverts);
* read side: the decoded slot (:mod:`ran.injection.decoded`), with a read gate fitted
  before training and frozen (:mod:`ran.training.read_gate`): open at the end of a
  question, shut on plain text, which keeps H1;
* training: 40 steps at learning rate 0.05 on the ``fact_in_text`` probe with a curriculum
  of distractor passes (:data:`FACT_MEMORY_DISTRACTORS`); 80 steps recalled no better
  held-out (its validation peaked at step 40) at twice the cost.

``tests/unit/training/test_recipes.py`` checks that this recipe's hash is the hash of the
best configuration in ``data/results/06_retention.json``: the default and the measurement
cannot drift apart. Notebook 06 builds its configurations from the same pieces
(:data:`DECODED_READ`, :data:`FACT_MEMORY_SIDE`).
"""

from __future__ import annotations

from ran.injection.config import InjectionConfig
from ran.reservoir import ReservoirConfig
from ran.training.config import TrainConfig
from ran.util.configio import updated

# the decoded read side and its token-wise, gated write side (InjectionConfig fields)
DECODED_READ = dict(
    pooling="token", drive_source="input", write_gate=True, write_gate_init=0.0,
    readout="decoded", n_slots=1, gate_init=3.0,
)  # fmt: skip
FACT_MEMORY_DISTRACTORS = (0, 1, 2, 4)  # distractor passes mixed in training (the curriculum)
# the best write/read side as TrainConfig overrides (``probe_params`` merged into the base's)
FACT_MEMORY_SIDE = dict(
    injection=DECODED_READ | dict(query_gate=True),
    learning_rate=0.05,
    kl_weight=0.0,
    read_gate=dict(tail=3, shift=2.0),
    probe_params=dict(distractors=FACT_MEMORY_DISTRACTORS),
)
FACT_MEMORY_REGIME = dict(lr=0.01, sr=0.9, units=1024, input_scaling=0.1)


def fact_memory(model_name: str = "smollm2-135m", k: int = 16, layer: int | None = 15,
                seed: int = 0, probe_params: dict | None = None, **overrides) -> TrainConfig:  # fmt: skip
    """Notebook 06's best configuration as a :class:`TrainConfig` (see the module doc).

    Parameters
    ----------
    model_name : a :mod:`ran.injection.models` name or a local HF id.
    k : candidates per question of the ``fact_in_text`` probe (chance 1/k).
    layer : the injected layer (15 is SmolLM2-135M's; None: the model's middle layer).
    seed : readout init, data order and probe episodes.
    probe_params : merged into the recipe's ``fact_in_text`` parameters (e.g.
        ``{"n_train": 96}``); ``k`` is set by the argument.
    overrides : TrainConfig fields to change, those of ``injection`` as a dict under it
        (e.g. ``steps=80``, ``injection={"reservoir": {"seed": 3}}``).

    >>> fact_memory(steps=80).steps
    80
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 (candidates per question), got {k}")
    if probe_params and "k" in probe_params:
        raise ValueError("set k with the k argument, not in probe_params")
    side = dict(FACT_MEMORY_SIDE)
    params = dict(k=k, n_train=3200, n_val=64, n_test=32, idle_steps=(0,))
    params |= side.pop("probe_params") | dict(probe_params or {})
    injection = InjectionConfig(layer=layer, reservoir=ReservoirConfig(**FACT_MEMORY_REGIME),
                                **side.pop("injection"))  # fmt: skip
    cfg = TrainConfig(model_name=model_name, injection=injection, probe="fact_in_text",
                      probe_params=params, steps=40, batch_size=16, warmup_steps=5,
                      eval_every=20, patience=0, seed=seed, kl_batch=2, kl_len=48, **side)  # fmt: skip
    return updated(cfg, **overrides)
