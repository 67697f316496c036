"""Dynamics metrics: memory capacity vs reservoirpy, ESP boundary, Lyapunov, sweep validation."""

import math

import numpy as np
import pytest
import torch

from ran.reservoir.config import ReservoirConfig
from ran.reservoir.dynamics import (
    esp_boundary,
    memory_capacity,
    participation_ratio,
    refine_boundary,
    summarize,
    sweep,
)
from ran.reservoir.esn import Reservoir


def _mc_pair(units, sr, input_scaling, k_max, ridge, seed, density=0.1):
    """Our MC and reservoirpy's on identical W, W_in and input series."""
    from reservoirpy.nodes import Reservoir as RpyReservoir
    from reservoirpy.nodes import Ridge
    from reservoirpy.observables import memory_capacity as rpy_mc

    cfg = ReservoirConfig(
        units=units, sr=sr, input_scaling=input_scaling, rc_connectivity=density, seed=seed
    )
    res = Reservoir(cfg, 1, dtype=torch.float64)
    series = np.random.default_rng(seed).uniform(-0.8, 0.8, size=(10 * k_max, 1))
    model = RpyReservoir(W=res.W.numpy().copy(), Win=res.W_in.numpy().copy(), bias=np.zeros(units))
    model = model >> Ridge(ridge=ridge)
    theirs = float(rpy_mc(model, k_max, series=series, test_size=0.2))
    u = torch.from_numpy(series[:, 0])
    states = res.run(u[k_max:, None])[:, None, :]  # zero initial state, as reservoirpy
    ours = float(memory_capacity(states, u, k_max, round(0.2 * len(u)), warmup=k_max, ridge=ridge))
    return ours, theirs


@pytest.mark.parametrize("sr, input_scaling", [(0.9, 0.1), (0.5, 1.0), (1.1, 0.5)])
def test_memory_capacity_matches_reservoirpy(sr, input_scaling):
    ours, theirs = _mc_pair(60, sr, input_scaling, k_max=60, ridge=1e-6, seed=3)
    assert abs(ours - theirs) / theirs < 0.02
    assert 0 < ours <= 60


def test_memory_capacity_bounded_by_units():
    # near-linear regime, many delays: MC approaches but never exceeds N
    for units in (10, 30):
        ours, _ = _mc_pair(units, 0.95, 0.01, k_max=3 * units, ridge=1e-10, seed=1, density=0.5)
        assert 0.3 * units < ours <= units


def test_memory_capacity_batched_with_two_threads_equals_one_group_at_a_time():
    # torch 2.13's batched LU solve fails on CPU for >= 2 systems with 2 threads (notebook
    # 05's eight seeds at N = 512 hit it); the readout solve must work and match per group
    g = torch.Generator().manual_seed(0)
    u = torch.rand(600, generator=g, dtype=torch.float64) * 2 - 1
    states = torch.tanh(
        torch.randn(600, 3, 64, generator=g, dtype=torch.float64) + u[:, None, None]
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batched = memory_capacity(states, u, 20, 100)
        alone = torch.cat([memory_capacity(states[:, i : i + 1], u, 20, 100) for i in range(3)])
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(batched, alone, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="singular"):
        memory_capacity(torch.zeros(600, 2, 8, dtype=torch.float64), u, 5, 100, ridge=0.0)


def test_participation_ratio_known_cases():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(20000, 1, 5, generator=g, dtype=torch.float64)
    assert abs(float(participation_ratio(iso)[0]) - 5) < 0.1
    one_dim = torch.randn(500, 1, 1, dtype=torch.float64, generator=g) * torch.ones(1, 1, 5)
    assert abs(float(participation_ratio(one_dim)[0]) - 1) < 1e-9
    assert math.isnan(float(participation_ratio(torch.zeros(10, 1, 5))[0]))


@pytest.fixture(scope="module")
def esp_df():
    srs = [round(x, 2) for x in np.arange(0.8, 1.21, 0.05)] + [1.5, 2.0]
    return sweep(srs, seeds=[0, 1, 2], units_list=[200], steps=500, washout=100, mc_k_max=50)


def test_autonomous_boundary_near_one(esp_df):
    b = esp_boundary(esp_df, "autonomous", 200)
    assert b["n_censored"] == 0 and 0.9 <= b["mean"] <= 1.1
    assert all(0.9 <= v <= 1.1 for v in b["per_seed"].values())


def test_refined_boundary_and_summary(esp_df):
    fine = refine_boundary(esp_df, "autonomous", 200, points=4)
    assert 0.9 <= fine["mean"] <= 1.1 and fine["resolution"] < 0.05 / 4
    assert fine["ci_low"] <= fine["mean"] <= fine["ci_high"]
    payload, findings = summarize(esp_df)
    assert findings[0]["kind"] == "table" and len(findings[0]["rows"]) == 1
    auto = payload["boundary"][200]["autonomous"]["mean"]
    assert any(f"{auto:.3f}" in f.get("text", "") for f in findings)


def test_driven_boundary_above_autonomous(esp_df):
    auto = esp_boundary(esp_df, "autonomous", 200)
    drv = esp_boundary(esp_df, "driven", 200)
    assert all(drv["per_seed"][s] > auto["per_seed"][s] for s in auto["per_seed"])
    assert drv["forgotten_range"][1] > auto["forgotten_range"][1]


def test_lyapunov_autonomous_contracting_is_log_sr(esp_df):
    # below sr = 1 the autonomous reservoir sits at the fixed point 0 whose Jacobian is W
    sub = esp_df[(esp_df.regime == "autonomous") & (esp_df.sr <= 0.85)]
    assert np.allclose(sub.lyapunov, np.log(sub.sr), atol=0.01)
    drv = esp_df[esp_df.regime == "driven"]
    assert (drv.memory_capacity <= drv.units).all() and (drv.memory_capacity > 0).all()
    assert ((drv.saturation >= 0) & (drv.saturation <= 1)).all()


def test_forgetting_time_consistent(esp_df):
    fg = esp_df[esp_df.forgotten]
    assert (fg.forgetting_time <= 500).all() and (fg.forgetting_time >= 1).all()
    # never below the tolerance => not forgotten (the converse need not hold: chaos)
    assert not esp_df[np.isinf(esp_df.forgetting_time)].forgotten.any()


@pytest.mark.parametrize(
    "kwargs, keyword",
    [
        ({"regimes": ("chaotic",)}, "regimes"),
        ({"washout": 50, "steps": 50}, "washout"),
        ({"drive": "cauchy"}, "drive"),
        ({"n_init": 1}, "n_init"),
    ],
)
def test_sweep_bad_input_one_sentence(kwargs, keyword):
    with pytest.raises(ValueError) as e:
        sweep([0.9], [0], [10], **kwargs)
    msg = str(e.value)
    assert keyword in msg and msg.endswith(".") and "\n" not in msg


def test_sweep_is_deterministic():
    a = sweep([0.9, 1.2], [0], [20], steps=120, washout=20, mc_k_max=10)
    b = sweep([0.9, 1.2], [0], [20], steps=120, washout=20, mc_k_max=10)
    assert a.equals(b)
