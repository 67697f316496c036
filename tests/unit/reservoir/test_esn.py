"""Reservoir weights: exact spectral radius, determinism across processes, validation, bank."""

import hashlib
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from ran.reservoir.config import ReservoirConfig
from ran.reservoir.esn import (
    DENSE_EIG_MAX,
    Reservoir,
    ReservoirBank,
    base_weights,
    spectral_radius,
)


def _one_sentence(msg: str) -> bool:
    return msg.endswith(".") and "\n" not in msg and ". " not in msg[:-1]


@pytest.mark.parametrize("sr", [0.5, 0.9, 1.3])
@pytest.mark.parametrize("units", [20, 150])
def test_spectral_radius_exact_small(units, sr):
    res = Reservoir(ReservoirConfig(units=units, sr=sr, seed=3), 2, dtype=torch.float64)
    rho = float(torch.linalg.eigvals(res.W).abs().max())
    assert abs(rho - sr) / sr < 1e-5


@pytest.mark.parametrize(
    "units",
    [1100, pytest.param(2048, marks=pytest.mark.slow)],  # 2048: ~20-50 s dense eig
)
def test_spectral_radius_large_n_sparse_solver_matches_dense(units):
    assert units > DENSE_EIG_MAX
    cfg = ReservoirConfig(units=units, sr=1.0, rc_connectivity=0.05, seed=1)
    W0, _, _ = base_weights(cfg, 1)  # rescaled with ARPACK (N > DENSE_EIG_MAX)
    dense = float(torch.linalg.eigvals(torch.from_numpy(W0)).abs().max())  # exact (dense)
    assert abs(dense - 1.0) < 0.01
    assert abs(spectral_radius(W0 * 3.7) - 3.7) < 0.037  # ARPACK on a raw matrix


_SCRIPT = """
import hashlib, torch
from ran.reservoir.config import ReservoirConfig
from ran.reservoir.esn import Reservoir
res = Reservoir(ReservoirConfig(units=64, sr=0.95, bias=0.2, input_connectivity=0.5, seed=7), 3)
u = torch.linspace(-1, 1, 60, dtype=torch.float32).reshape(20, 1, 3)
h = hashlib.sha256()
for t in (res.W, res.W_in, res.b, res.run(u)):
    h.update(t.contiguous().numpy().tobytes())
print(h.hexdigest())
"""


def test_same_seed_bit_identical_across_processes():
    procs = [
        subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs[0] == outs[1] and len(outs[0]) == 64
    res = Reservoir(ReservoirConfig(units=64, sr=0.95, bias=0.2, input_connectivity=0.5, seed=7), 3)
    u = torch.linspace(-1, 1, 60, dtype=torch.float32).reshape(20, 1, 3)
    h = hashlib.sha256()
    for t in (res.W, res.W_in, res.b, res.run(u)):
        h.update(t.contiguous().numpy().tobytes())
    assert h.hexdigest() == outs[0]


def test_different_seed_different_weights_and_config_hash():
    a, b = ReservoirConfig(units=32, seed=0), ReservoirConfig(units=32, seed=1)
    assert not torch.equal(Reservoir(a, 2).W, Reservoir(b, 2).W)
    assert a.config_hash(2) != b.config_hash(2) != a.config_hash(3)
    assert a.config_hash(2) == ReservoirConfig(units=32, seed=0).config_hash(2)


@pytest.mark.parametrize(
    "kwargs, keyword",
    [
        ({"sr": 0.0}, "sr"),
        ({"sr": -1.0}, "sr"),
        ({"units": 0}, "units"),
        ({"units": -5}, "units"),
        ({"rc_connectivity": 0.0}, "rc_connectivity"),
        ({"rc_connectivity": 1.5}, "rc_connectivity"),
        ({"input_connectivity": 0.0}, "input_connectivity"),
        ({"lr": 0.0}, "leak"),
        ({"lr": 1.2}, "leak"),
        ({"input_scaling": -0.1}, "input_scaling"),
        ({"sr": float("nan")}, "finite"),
        ({"input_scaling": float("inf")}, "finite"),
    ],
)
def test_bad_config_one_sentence(kwargs, keyword):
    with pytest.raises(ValueError) as e:
        ReservoirConfig(**kwargs)
    assert keyword in str(e.value) and _one_sentence(str(e.value))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_drive_one_sentence(bad):
    res = Reservoir(ReservoirConfig(units=16), 2)
    u = torch.zeros(5, 2)
    u[3, 1] = bad
    with pytest.raises(ValueError) as e:
        res.run(u)
    assert "NaN or Inf" in str(e.value) and _one_sentence(str(e.value))
    with pytest.raises(ValueError):
        res.step(res.zero_state(), u[3])


def test_mismatched_input_width_one_sentence():
    res = Reservoir(ReservoirConfig(units=16), 2)
    with pytest.raises(ValueError) as e:
        res.step(res.zero_state(4), torch.zeros(4, 3))
    assert "width" in str(e.value) and _one_sentence(str(e.value))


def test_step_differentiable_weights_are_buffers():
    res = Reservoir(ReservoirConfig(units=16, lr=0.5, bias=0.1), 3)
    assert list(res.parameters()) == [] and {n for n, _ in res.named_buffers()} == {
        "W",
        "W_in",
        "b",
    }
    r = torch.randn(2, 16, requires_grad=True)
    u = torch.randn(2, 3, requires_grad=True)
    out = res.step(res.step(r, u), u)
    out.sum().backward()
    assert r.grad is not None and u.grad is not None and r.grad.abs().sum() > 0


def test_leaky_update_equation():
    cfg = ReservoirConfig(units=8, lr=0.3, bias=0.5, rc_connectivity=0.5, seed=2)
    res = Reservoir(cfg, 2, dtype=torch.float64)
    r, u = torch.randn(8, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    want = 0.7 * r + 0.3 * torch.tanh(res.W @ r + res.W_in @ u + res.b)
    assert torch.allclose(res.step(r, u), want)


@pytest.mark.parametrize("density", [0.1, 0.5])  # sparse (CSR) and dense (bmm) paths
def test_bank_equals_individual_reservoirs(density):
    cfg = ReservoirConfig(units=40, input_scaling=0.8, lr=0.7, bias=0.1, rc_connectivity=density)
    srs, seeds = [0.5, 1.0, 1.4], [0, 5]
    bank = ReservoirBank(cfg, 2, srs, seeds, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    r0 = torch.randn(2, 3, 4, 40, generator=g, dtype=torch.float64)
    u = torch.rand(25, 4, 2, generator=g, dtype=torch.float64) * 2 - 1
    states = bank.run(u, r0)
    for s, seed in enumerate(seeds):
        for k, sr in enumerate(srs):
            one = Reservoir(replace(cfg, sr=sr, seed=seed), 2, dtype=torch.float64)
            assert torch.allclose(one.run(u, r0[s, k]), states[:, s, k], atol=1e-10)
            assert torch.allclose(bank.weights(s, k), one.W, atol=1e-12)


def test_bank_fast_run_equals_steps():
    cfg = ReservoirConfig(units=30, input_scaling=1.0, rc_connectivity=0.1)  # sparse, lr 1, no bias
    bank = ReservoirBank(cfg, 1, [0.3, 1.7], [0, 1, 2], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    r0 = torch.randn(3, 2, 4, 30, generator=g, dtype=torch.float64)
    u = torch.rand(15, 4, 1, generator=g, dtype=torch.float64)
    r = r0
    for t in range(15):
        r = bank.step(r, u[t])
        if t == 4:
            early = r
    fast = bank.run(u, r0, keep=[5, 15])
    assert torch.allclose(fast[0], early, atol=1e-12) and torch.allclose(fast[1], r, atol=1e-12)
