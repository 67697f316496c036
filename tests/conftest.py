"""Shared test setup: one torch thread per test module, and a per-module model cache."""

from __future__ import annotations

import pytest
import torch

from ran.models import load_model

_MODELS: dict = {}


def cached_model(name: str, impl: str = "sdpa"):
    """Each (model, attention implementation) is loaded once per test module."""
    if (name, impl) not in _MODELS:
        _MODELS[(name, impl)] = load_model(name, attn_implementation=impl)
    return _MODELS[(name, impl)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the 2 cores are shared, and oversubscription is very slow
    (two OpenMP threads ran dense eig and small batched matmuls several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    _MODELS.clear()


# A two-step tiny-llama secret-word run with the gate open (tests that need a trained run).
TINY_RUN = dict(
    model_name="tiny-llama",
    probe_params={"k": 4, "n_train": 32, "n_val": 8, "n_test": 8},
    steps=2,
    batch_size=4,
    eval_every=0,
    warmup_steps=1,
    gate_init=1.0,
)
