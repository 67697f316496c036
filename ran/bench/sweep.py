"""Benchmark: the batched dynamics sweep against ReservoirPy running the identical sweep.

Both sides advance the same reservoirs (identical float64 ``W``, ``W_in``,
zero bias, leak 1) from the same initial states under the same drive, over a
grid of ``srs x seeds x regimes x initial states``:

    r(t+1) = tanh(W r(t) + W_in u(t))      (Jaeger 2001)

ReservoirPy advances one reservoir at a time (one ``Reservoir.run`` per grid
point, its own per-step numpy loop); :class:`ran.reservoir.ReservoirBank`
advances the whole grid with one batched matrix product per step. Only the
time stepping is timed on both sides (weights are built once, untimed), best of
``repeats`` runs each. torch
uses one thread (``torch.set_num_threads(1)``): the per-step matrices are
small and the 2 shared cores are contended, where two OpenMP threads were
measured slower than one. To prove it is the same computation the states
after ``check_step`` steps and at the end are compared; final states are
compared only where the dynamics contract (both initial states converge),
since chaotic trajectories amplify float64 rounding differences.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ran.bench.store import check, section_met
from ran.reservoir.config import ReservoirConfig
from ran.reservoir.dynamics import make_drive
from ran.reservoir.esn import ReservoirBank
from ran.util.results import Outputs

SIZES = {  # profile -> grid of the benchmark
    "smoke": dict(units=50, n_sr=4, n_seeds=2, steps=100),
    "default": dict(units=200, n_sr=20, n_seeds=5, steps=500),
    "paper": dict(units=200, n_sr=20, n_seeds=5, steps=2000),
}
REGIMES = ("autonomous", "driven")
N_INIT = 2  # initial states per regime
SEED = 0
TARGET_SPEEDUP = 20.0  # the target for the batched sweep over ReservoirPy


def _grid(units: int, n_sr: int, n_seeds: int, steps: int):
    srs = [float(x) for x in np.round(np.linspace(0.1, 2.0, n_sr), 4)]
    seeds = list(range(n_seeds))
    cfg = ReservoirConfig(units=units, input_scaling=1.0, lr=1.0, bias=0.0)
    bank = ReservoirBank(cfg, 1, srs, seeds, dtype=torch.float64)
    u = make_drive(steps, "uniform", SEED)
    g = torch.Generator().manual_seed(SEED)
    init = torch.rand(len(REGIMES) * N_INIT, units, generator=g, dtype=torch.float64) * 2 - 1
    drv = torch.tensor([float(r == "driven") for r in REGIMES for _ in range(N_INIT)])
    return bank, u, init, drv.to(torch.float64)


def _run_torch(bank, u, init, drv, check_step, dtype):
    S, K = bank.shape
    r0 = init.to(dtype).expand(S, K, *init.shape).contiguous()
    ud = (u[:, None] * drv[None, :]).to(dtype)[:, :, None]  # (T, B, 1)
    t0 = time.perf_counter()
    early, r = bank.run(ud, r0, keep=[check_step, len(u)])
    return time.perf_counter() - t0, early.double(), r.double()


def _run_reservoirpy(bank, u, init, drv, check_step):
    from reservoirpy.nodes import Reservoir as RpyReservoir

    S, K = bank.shape
    B, N = init.shape
    nodes = [
        RpyReservoir(W=bank.weights(s, k).numpy(), Win=bank.W_in[s].numpy(), bias=np.zeros(N))
        for s in range(S)
        for k in range(K)
    ]
    xs = [(u.numpy() * float(drv[b]))[:, None] for b in range(B)]
    for node in nodes:
        node.initialize(xs[0])
    early, final = np.empty((S * K, B, N)), np.empty((S * K, B, N))
    t0 = time.perf_counter()
    for i, node in enumerate(nodes):
        for b in range(B):
            node.state = {"out": init[b].numpy().copy()}
            states = node.run(xs[b])
            early[i, b], final[i, b] = states[check_step - 1], states[-1]
    wall = time.perf_counter() - t0
    return wall, early.reshape(S, K, B, N), final.reshape(S, K, B, N)


def run(outputs: Outputs | None = None, threads: int = 1, repeats: int = 3) -> dict:
    """Time the identical sweep in ReservoirPy and the batched bank; return the ``sweep`` section."""
    outputs = outputs or Outputs("default")
    sizes = SIZES[outputs.profile]
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    bank, u, init, drv = _grid(**sizes)
    check_step = min(20, sizes["steps"])
    rpy = [_run_reservoirpy(bank, u, init, drv, check_step) for _ in range(repeats)]
    b32 = ReservoirBank(bank.cfg, 1, bank.srs, bank.seeds, dtype=torch.float32)
    r64 = [_run_torch(bank, u, init, drv, check_step, torch.float64) for _ in range(repeats)]
    r32 = [_run_torch(b32, u, init, drv, check_step, torch.float32) for _ in range(repeats)]
    # best of `repeats` on each side: the 2 cores are shared, so the minimum is the least noisy
    (t_rpy, e_rpy, f_rpy), (t64, e64, f64), (t32, e32, f32) = (
        min(x, key=lambda y: y[0]) for x in (rpy, r64, r32)
    )
    e_rpy, f_rpy = torch.from_numpy(e_rpy), torch.from_numpy(f_rpy)
    S, K, B, N = f_rpy.shape
    v = f_rpy.view(S, K, len(REGIMES), N_INIT, N)
    contracting = (v[:, :, :, 1:] - v[:, :, :, :1]).abs().amax((-1, -2)) < 1e-9  # (S, K, R)
    mask = contracting[:, :, :, None].expand(S, K, len(REGIMES), N_INIT).reshape(S, K, B)
    fin = (f64 - f_rpy).abs().amax(-1)
    fin32 = (f32 - f_rpy).abs().amax(-1)
    payload = {
        "grid": {
            **sizes,
            "regimes": list(REGIMES),
            "n_init": N_INIT,
            "srs": bank.srs,
            "seeds": bank.seeds,
            "drive": "uniform[-1,1], input_scaling 1",
        },  # fmt: skip
        "runs": S * K * B,
        "torch_threads": threads,
        "repeats": repeats,
        "timing": "best of repeats, time stepping only",
        "all_times_s": {
            "reservoirpy": [x[0] for x in rpy],
            "torch_float64": [x[0] for x in r64],
            "torch_float32": [x[0] for x in r32],
        },  # fmt: skip
        "reservoirpy_s": t_rpy,
        "torch_float64_s": t64,
        "torch_float32_s": t32,
        "speedup_float64": t_rpy / t64,
        "speedup_float32": t_rpy / t32,
        "check_step": check_step,
        "max_abs_diff_early_float64": float((e64 - e_rpy).abs().max()),
        "max_abs_diff_early_float32": float((e32 - e_rpy).abs().max()),
        "n_contracting": int(mask.sum()),
        "max_abs_diff_final_contracting_float64": float(fin[mask].max()) if mask.any() else None,
        "max_abs_diff_final_contracting_float32": float(fin32[mask].max()) if mask.any() else None,
    }
    flop = 2.0 * N * N * S * K * B * sizes["steps"]  # dense-equivalent recurrent products
    payload["dense_equiv_gflop_per_s"] = {"reservoirpy": flop / t_rpy / 1e9, "torch_float64": flop / t64 / 1e9,
                              "torch_float32": flop / t32 / 1e9}  # fmt: skip
    payload["same_computation"] = bool(
        payload["max_abs_diff_early_float64"] < 1e-10
        and (payload["max_abs_diff_final_contracting_float64"] or 0.0) < 1e-10
    )
    describe(payload)
    payload["wall_time_s"] = time.perf_counter() - t_start
    return payload


def describe(payload: dict) -> dict:
    """Add the checks, ``met`` and the summary sentence to a measured sweep payload."""
    speed = {p: payload[f"speedup_{p}"] for p in ("float64", "float32")}
    best = max(speed, key=speed.get)  # the target holds if either precision reaches it
    other = "float32" if best == "float64" else "float64"
    sizes = payload["grid"]
    payload["target"] = TARGET_SPEEDUP
    payload["checks"] = [
        check(f"batched sweep / ReservoirPy speed-up, {best} (best)", speed[best],
              TARGET_SPEEDUP, ">="),
        check(f"batched sweep / ReservoirPy speed-up, {other}", speed[other], None),
    ]  # fmt: skip
    payload["met"] = section_met(payload["checks"])
    payload["summary"] = (
        f"The identical sweep ({payload['runs']} reservoirs = {sizes['n_sr']} sr x "
        f"{sizes['n_seeds']} seeds x 2 regimes x 2 initial states, N = {sizes['units']}, "
        f"{sizes['steps']} steps, best of {payload['repeats']}): ReservoirPy "
        f"{payload['reservoirpy_s']:.2f} s, batched torch {payload['torch_float64_s']:.2f} s in "
        f"float64 ({payload['speedup_float64']:.1f}x) and {payload['torch_float32_s']:.2f} s in "
        f"float32 ({payload['speedup_float32']:.1f}x); same computation (states agree to "
        f"{payload['max_abs_diff_early_float64']:.1e} at step {payload['check_step']}): "
        f"{'yes' if payload['same_computation'] else 'no'}"
    )
    return payload
