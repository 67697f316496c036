"""Shared test setup: one torch thread per test module, a per-module model cache, and the
rule that a test which loads the embedded SmolLM2 model is marked ``slow`` (so that
``pytest -m "not slow"`` skips every one of them: an unmarked test that loads it fails)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ran.injection.models import load_model

# tests/ on the path, so tests in tests/unit/<subpackage>/, tests/integration/ and
# tests/acceptance/ import the shared helpers (conftest, agent_helpers) by name
sys.path.insert(0, str(Path(__file__).resolve().parent))

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


@pytest.fixture(autouse=True)
def embedded_model_only_in_slow_tests(request, monkeypatch):
    """Loading the embedded SmolLM2 (in this process) fails a test not marked ``slow``."""
    if request.node.get_closest_marker("slow") is None:
        from ran.injection import models

        def refuse():
            raise AssertionError(
                f"{request.node.nodeid} loads the embedded {models.SMOLLM2}: mark it slow"
            )

        monkeypatch.setattr(models, "_smollm2_cache", refuse)
    yield


@pytest.fixture
def browser_page(tmp_path, request):
    """A headless Chromium page for the tests marked ``browser`` (tests/browser_helpers.py)."""
    import browser_helpers

    # a later -m replaces addopts' "not browser" (e.g. `pytest -m "not slow"`): run only
    # when asked for by name
    if "browser" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("browser test: run `make test-browser` (or `pytest -m browser`)")
    if not browser_helpers.CHROMIUM.exists():
        pytest.fail(
            f"{browser_helpers.CHROMIUM} is missing: `make test-browser` installs Debian's chromium"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed in .venv: run `make test-browser`")
    with browser_helpers.chromium_page(tmp_path / "chromium-profile") as page:
        yield page


# A two-step tiny-llama secret-word run with the gate open (tests that need a trained run).
TINY_RUN = dict(
    model_name="tiny-llama",
    probe_params={"k": 4, "n_train": 32, "n_val": 8, "n_test": 8},
    steps=2,
    batch_size=4,
    eval_every=0,
    warmup_steps=1,
    injection={"gate_init": 1.0},
)
