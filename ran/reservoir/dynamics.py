"""Dynamics of echo-state reservoirs: ESP, memory, saturation, dimension, chaos.

Every metric is computed for a whole (seed x sr) grid at once on a
:class:`ran.reservoir.ReservoirBank`, in one pass over time.

References
----------
H. Jaeger (2001). The "echo state" approach to analysing and training recurrent
neural networks. GMD Report 148. (echo-state property, ESP)
H. Jaeger (2002). Short term memory in echo state networks. GMD Report 152.
(memory capacity)
G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn (1980). Lyapunov
characteristic exponents for smooth dynamical systems. Meccanica 15, 9-20.
M. Lukoševičius (2012). A practical guide to applying echo state networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ran.reservoir.config import ReservoirConfig
from ran.reservoir.esn import ReservoirBank

REGIMES = ("autonomous", "driven")
DRIVES = ("uniform", "gaussian")
SATURATION_LEVEL = 0.95  # a unit is saturated when |r_i| > this


def memory_capacity(
    states: torch.Tensor,
    u: torch.Tensor,
    k_max: int,
    test_len: int,
    warmup: int = 0,
    ridge: float = 1e-8,
    per_delay: bool = False,
) -> torch.Tensor:
    """Short-term memory capacity (Jaeger 2002) of many reservoirs at once.

    .. math:: MC = \\sum_{k=1}^{k_{max}} \\rho^2\\big(u(t-k), y_k(t)\\big)

    where ``y_k = r(t) w_k + c_k`` is a ridge readout (unpenalised intercept)
    fitted on the training rows and ``rho`` the Pearson correlation on the last
    ``test_len`` rows (the same protocol as ``reservoirpy.observables``).

    Parameters
    ----------
    states : tensor (T, G, N)
        ``states[t]`` is the state after consuming ``u[L - T + t]``.
    u : tensor (L,)
        Scalar drive, ``L >= T``; the first ``L - T`` values are history
        (used only as lagged targets).
    k_max : int
        Largest delay.
    test_len : int
        Number of final rows used for evaluation.
    warmup : int
        Training rows discarded at the start (at least the rows without a
        complete lag history are always discarded).
    ridge : float
        Tikhonov regularisation of the readout.
    per_delay : bool
        Return ``(G, k_max)`` squared correlations instead of their sum.
    """
    T, G, N = states.shape
    off = u.shape[0] - T
    if off < 0 or not 0 < test_len < T or k_max < 1:
        raise ValueError("memory capacity needs len(u) >= T, 0 < test_len < T and k_max >= 1.")
    x = states.to(torch.float64)
    lags = torch.arange(1, k_max + 1)
    t_all = torch.arange(T)
    start = max(warmup, k_max - off)
    tr, te = t_all[start : T - test_len], t_all[T - test_len :]
    if len(tr) < 2:
        raise ValueError("memory capacity has no training rows left; use more steps.")
    y = u.to(torch.float64)[(off + t_all)[:, None] - lags[None, :]]  # (T, k_max), u(t-k)
    xtr, ytr = x[tr].transpose(0, 1), y[tr]  # (G, n, N), (n, k)
    xm, ym = xtr.mean(1, keepdim=True), ytr.mean(0)
    xc = xtr - xm
    gram = xc.transpose(1, 2) @ xc + ridge * torch.eye(N, dtype=torch.float64)
    # Cholesky, not torch.linalg.solve: the batched LU solve of torch 2.13's CPU build
    # fails (oneMKL DLASWP) for a batch of >= 2 systems with 2 threads; gram is SPD.
    chol, info = torch.linalg.cholesky_ex(gram)
    if bool(info.any()):
        raise ValueError(
            f"memory capacity: the state Gram matrix is singular; raise ridge ({ridge})"
        )
    w = torch.cholesky_solve(xc.transpose(1, 2) @ (ytr - ym), chol)  # (G, N, k)
    pred = (x[te].transpose(0, 1) - xm) @ w + ym  # (G, m, k)
    yt = y[te] - y[te].mean(0)
    pc = pred - pred.mean(1, keepdim=True)
    cov = (pc * yt).sum(1)
    r2 = cov**2 / ((pc**2).sum(1) * (yt**2).sum(0))
    r2 = torch.nan_to_num(r2, nan=0.0)
    return r2 if per_delay else r2.sum(-1)


def participation_ratio(states: torch.Tensor) -> torch.Tensor:
    """Effective dimension ``(sum lambda)^2 / sum lambda^2`` of the state covariance.

    ``states`` is ``(T, ..., N)``; computed as ``tr(C)^2 / ||C||_F^2`` with
    ``C`` the covariance over time (no eigen-decomposition); NaN when the
    covariance vanishes (a fixed point).
    """
    x = states.to(torch.float64)
    x = (x - x.mean(0)).movedim(0, -1)  # (..., N, T)
    cov = x @ x.transpose(-1, -2) / x.shape[-1]
    tr = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    fro = (cov**2).sum((-2, -1))
    return torch.where(tr > 1e-12, tr**2 / fro.clamp_min(1e-300), torch.full_like(tr, math.nan))


def _participation(ref: torch.Tensor, block: int = 16) -> torch.Tensor:
    """Participation ratio of ``ref`` (T, S, K, R, N) in blocks of grid points (bounded memory)."""
    T, S, K, R, N = ref.shape
    flat = ref.reshape(T, S * K * R, N)
    out = [participation_ratio(flat[:, i : i + block]) for i in range(0, S * K * R, block)]
    return torch.cat(out).reshape(S, K, R)


def make_drive(steps: int, drive: str, seed: int) -> torch.Tensor:
    """I.i.d. scalar drive: ``uniform`` on [-1, 1] or standard ``gaussian``, float64 (T,)."""
    if drive not in DRIVES:
        raise ValueError(f"drive must be one of {', '.join(DRIVES)}, got {drive!r}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    u = rng.uniform(-1.0, 1.0, steps) if drive == "uniform" else rng.standard_normal(steps)
    return torch.from_numpy(u)


def sweep(
    srs: Sequence[float],
    seeds: Sequence[int],
    units_list: Sequence[int],
    regimes: Sequence[str] = REGIMES,
    steps: int = 1000,
    washout: int = 200,
    input_scaling: float = 1.0,
    lr: float = 1.0,
    drive: str = "uniform",
    rc_connectivity: float = 0.1,
    n_init: int = 2,
    esp_tol: float = 1e-6,
    mc_k_max: int = 100,
    mc_test: float = 0.2,
    ridge: float = 1e-8,
    lyap_eps: float = 1e-8,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    memory: bool = True,
) -> pd.DataFrame:
    """Every metric for every (units, seed, sr, regime): one tidy row each.

    Regimes: ``autonomous`` (u = 0, no bias, so the zero state is a fixed
    point) and ``driven`` (one shared i.i.d. scalar drive, ``uniform`` on
    [-1, 1] or standard ``gaussian``, times ``input_scaling`` through a +-1
    ``W_in``). Each regime starts ``n_init`` trajectories from i.i.d.
    uniform[-1, 1] initial states plus one copy of the first one perturbed by
    ``lyap_eps`` (Benettin renormalisation every step).

    Columns: ``esp_dist`` (max over initial states of ``||r_i(T) - r_0(T)|| /
    sqrt(N)``), ``esp_dist0`` (the same at t = 0), ``forgotten`` (``esp_dist <
    esp_tol``), ``forgetting_time`` (first step with distance below
    ``esp_tol``, inf if never), ``saturation`` (fraction of |r_i| > 0.95 after
    washout), ``participation_ratio``, ``memory_capacity`` (driven only,
    ``mc_k_max`` delays, last ``mc_test`` fraction of the post-washout steps
    for evaluation), ``lyapunov`` (largest exponent per step, mean over the
    post-washout steps; skipped, NaN, with ``memory=False``).
    """
    bad = [r for r in regimes if r not in REGIMES]
    if bad or not regimes:
        raise ValueError(f"regimes must be a non-empty subset of {REGIMES}, got {tuple(regimes)}.")
    if not 0 <= washout < steps:
        raise ValueError(f"washout must be in [0, steps), got washout={washout}, steps={steps}.")
    if n_init < 2:
        raise ValueError(f"n_init must be at least 2 to compare trajectories, got {n_init}.")
    u_all = make_drive(steps, drive, seed)
    test_len = max(1, round(mc_test * (steps - washout)))
    R, P = len(regimes), n_init + 1
    drv = torch.tensor([float(r == "driven") for r in regimes for _ in range(P)], dtype=dtype)
    rows = []
    for units in units_list:
        cfg = ReservoirConfig(units=int(units), input_scaling=input_scaling, lr=lr,
                              rc_connectivity=rc_connectivity, seed=seed)  # fmt: skip
        bank = ReservoirBank(cfg, 1, srs, seeds, dtype=dtype)
        S, K, N = len(seeds), len(srs), cfg.units
        g = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, 2, N]).generate_state(1)[0])
        )
        init = torch.rand(R, P, N, generator=g, dtype=torch.float64).to(dtype) * 2 - 1
        pert = torch.randn(R, N, generator=g, dtype=torch.float64).to(dtype)
        init[:, -1] = init[:, 0] + lyap_eps * pert / pert.norm(dim=-1, keepdim=True)
        r = init.reshape(1, 1, R * P, N).expand(S, K, R * P, N).contiguous()
        dist = torch.empty(steps + 1, S, K, R, dtype=dtype)
        view = r.view(S, K, R, P, N)
        dist[0] = _esp_dist(view, n_init)
        lyap = torch.zeros(S, K, R, dtype=torch.float64)
        keep = []  # post-washout reference trajectories, float32 (n, S, K, R, N)
        for t in range(steps):
            r = bank.step(r, (u_all[t] * drv).to(dtype)[:, None], check=False)
            view = r.view(S, K, R, P, N)
            dist[t + 1] = _esp_dist(view, n_init)
            diff = view[:, :, :, -1] - view[:, :, :, 0]
            d = diff.norm(dim=-1).clamp_min(1e-300)
            view[:, :, :, -1] = view[:, :, :, 0] + diff * (lyap_eps / d)[..., None]
            if t >= washout:
                lyap += torch.log(d.to(torch.float64) / lyap_eps)
                keep.append(view[:, :, :, 0].to(torch.float32))
        n = steps - washout
        lyap = lyap / n
        ref = torch.stack(keep)
        sat = (ref.abs() > SATURATION_LEVEL).to(torch.float64).mean((0, -1))
        pr = _participation(ref)
        mc = torch.full((S, K), math.nan, dtype=torch.float64)
        if memory and "driven" in regimes and n - test_len > mc_k_max + 1:
            di = regimes.index("driven")
            st = ref[:, :, :, di].reshape(n, S * K, N)
            mc = memory_capacity(st, u_all, mc_k_max, test_len, ridge=ridge).reshape(S, K)
        below = dist[1:] < esp_tol
        first = torch.where(below.any(0), below.to(torch.int8).argmax(0).to(torch.float64) + 1,
                            torch.full(below.shape[1:], math.inf, dtype=torch.float64))  # fmt: skip
        for si, sd in enumerate(seeds):
            for k, sr in enumerate(srs):
                for ri, regime in enumerate(regimes):
                    rows.append({
                        "units": N, "seed": int(sd), "sr": float(sr), "regime": regime,
                        "esp_dist0": float(dist[0, si, k, ri]),
                        "esp_dist": float(dist[-1, si, k, ri]),
                        "forgotten": bool(dist[-1, si, k, ri] < esp_tol),
                        "forgetting_time": float(first[si, k, ri]),
                        "saturation": float(sat[si, k, ri]),
                        "participation_ratio": float(pr[si, k, ri]),
                        "memory_capacity": float(mc[si, k]) if regime == "driven" else math.nan,
                        "lyapunov": float(lyap[si, k, ri]),
                    })  # fmt: skip
    df = pd.DataFrame(rows)
    for key, val in dict(steps=steps, washout=washout, input_scaling=input_scaling, lr=lr,
                         drive=drive, esp_tol=esp_tol, mc_k_max=mc_k_max,
                         rc_connectivity=rc_connectivity, seed_data=seed).items():  # fmt: skip
        df[key] = val
    return df


def _esp_dist(view: torch.Tensor, n_init: int) -> torch.Tensor:
    """Max over initial states i of ||r_i - r_0|| / sqrt(N); view is (S, K, R, P, N)."""
    d = view[:, :, :, 1:n_init] - view[:, :, :, :1]
    return d.norm(dim=-1).amax(-1) / math.sqrt(view.shape[-1])


def esp_boundary(df: pd.DataFrame, regime: str, units: int, level: float = 0.95) -> dict:
    """The smallest sr at which the initial state is not forgotten, per seed, with a CI.

    Per seed: ``sr* = min{sr : esp_dist(sr) >= esp_tol}`` (``inf`` if it is
    forgotten at every sr of the grid: censored above ``max(sr)``). Across
    seeds: the mean and a Student-t ``level`` interval of the finite values.
    Also returns ``forgotten_range``: ``[min sr, s]`` where every seed forgets
    its initial state at every grid sr up to ``s`` (None if not at min sr).
    """
    sub = df[(df.regime == regime) & (df.units == units)]
    if sub.empty:
        raise ValueError(f"no rows for regime {regime!r} and units {units} in the sweep.")
    per_seed = {}
    for sd, g in sub.groupby("seed"):
        lost = g[~g.forgotten].sr
        per_seed[int(sd)] = float(lost.min()) if len(lost) else math.inf
    vals = np.array([v for v in per_seed.values() if math.isfinite(v)])
    mean, lo, hi = math.nan, math.nan, math.nan
    if len(vals):
        mean = float(vals.mean())
        lo = hi = mean
        if len(vals) > 1 and vals.std(ddof=1) > 0:
            lo, hi = stats.t.interval(level, len(vals) - 1, loc=mean, scale=stats.sem(vals))
    all_fg = sub.groupby("sr").forgotten.all().sort_index()
    fg = all_fg.index[: int(np.argmin(all_fg.values))] if not all_fg.all() else all_fg.index
    return {
        "regime": regime, "units": int(units), "per_seed": per_seed, "mean": mean,
        "ci_low": float(lo), "ci_high": float(hi), "level": level, "method": "Student t",
        "n_seeds": len(per_seed), "n_censored": int(len(per_seed) - len(vals)),
        "sr_max": float(sub.sr.max()),
        "forgotten_range": [float(fg.min()), float(fg.max())] if len(fg) else None,
    }  # fmt: skip


def refine_boundary(df: pd.DataFrame, regime: str, units: int, points: int = 8, **kw) -> dict:
    """:func:`esp_boundary` re-measured on ``points`` srs inside the bracketing grid cell.

    The bracket spans, over seeds, the last grid sr below each ``sr*`` to the
    largest ``sr*``; the sweep is rerun there with the settings stored in
    ``df`` (plus ``kw``) for this regime only, so sr* is resolved to
    ``bracket / (points + 1)`` instead of the coarse grid spacing.
    """
    coarse = esp_boundary(df, regime, units)
    finite = [v for v in coarse["per_seed"].values() if math.isfinite(v)]
    grid = np.sort(df.sr.unique())
    if not finite or min(finite) <= grid[0]:
        return coarse
    lo, hi = float(grid[grid < min(finite)].max()), max(finite)
    srs = [float(x) for x in np.linspace(lo, hi, points + 2)]
    settings = {k: df[k].iloc[0].item() if hasattr(df[k].iloc[0], "item") else df[k].iloc[0]
                for k in ("steps", "washout", "input_scaling", "lr", "drive", "esp_tol",
                          "rc_connectivity", "seed_data")}  # fmt: skip
    settings["seed"] = settings.pop("seed_data")
    fine = sweep(srs, sorted(coarse["per_seed"]), [units], regimes=(regime,), memory=False,
                 **{**settings, **kw})  # fmt: skip
    out = esp_boundary(pd.concat([df[(df.units == units) & (df.regime == regime)], fine]),
                       regime, units)  # fmt: skip
    out["refined_bracket"] = [lo, hi]
    out["resolution"] = (hi - lo) / (points + 1)
    return out


def summarize(df: pd.DataFrame, refine_points: int = 0) -> tuple[dict, list[dict]]:
    """Boundaries, memory and chaos per size, plus findings whose numbers all come from ``df``.

    With ``refine_points > 0`` the autonomous boundary is re-measured inside its
    bracketing grid cell (:func:`refine_boundary`).

    Returns ``(payload, findings)``; findings are ``ran.util.results`` text and
    table entries (figures are added by the caller, which owns their paths).
    """
    from ran.util.results import table, text

    regimes = [r for r in REGIMES if r in set(df.regime)]
    payload: dict = {"boundary": {}, "memory": {}, "chaos": {}}
    rows = []
    for units in sorted(df.units.unique()):
        b = {reg: esp_boundary(df, reg, int(units)) for reg in regimes}
        if refine_points and "autonomous" in b:
            b["autonomous"] = refine_boundary(df, "autonomous", int(units), refine_points)
        payload["boundary"][int(units)] = b
        row = [int(units)]
        for reg in regimes:
            m = df[(df.units == units) & (df.regime == reg)].groupby("sr").lyapunov.mean()
            pos = m[m > 1e-3].index
            payload["chaos"].setdefault(reg, {})[int(units)] = (
                float(pos.min()) if len(pos) else None
            )
        drv = df[(df.units == units) & (df.regime == "driven")]
        if len(drv):
            mc = drv.groupby("sr").memory_capacity.agg(["mean", "std"])
            payload["memory"][int(units)] = {
                "max_mean": float(mc["mean"].max()),
                "sr_at_max": float(mc["mean"].idxmax()),
                "by_sr": {float(k): float(v) for k, v in mc["mean"].items()},
            }
        for reg in regimes:
            br = b[reg]
            row += [br["mean"], br["ci_low"], br["ci_high"], br["n_censored"]]
        row.append(payload["memory"].get(int(units), {}).get("max_mean", math.nan))
        rows.append(row)
    cols = ["units"]
    for reg in regimes:
        cols += [f"{reg} sr*", "CI low", "CI high", "censored seeds"]
    findings = [table("ESP boundary sr* (mean over seeds, 95% Student-t CI; censored = seeds "
                      "that forget their initial state at every sr of the grid) and the best "
                      "mean memory capacity of the driven reservoir.", cols + ["max MC"], rows)]  # fmt: skip
    steps, tol = int(df.steps.iloc[0]), float(df.esp_tol.iloc[0])
    grid = np.sort(df.sr.unique())
    step = float(np.diff(grid).min()) if len(grid) > 1 else math.nan
    payload["sr_grid_step"] = step
    for units, b in payload["boundary"].items():
        a = b.get("autonomous")
        if a and math.isfinite(a["mean"]):
            findings.append(text(
                f"Autonomous (u = 0), N = {units}: the initial state is no longer forgotten "
                f"(distance > {tol:g} after {steps} steps) from sr* = {a['mean']:.3f} "
                f"(95% CI {a['ci_low']:.3f}-{a['ci_high']:.3f}, {a['n_seeds']} seeds; "
                f"sr* resolved to {a.get('resolution', step):.3g})."))  # fmt: skip
            # README headline: the N = 200 boundary (the size the issue names), else the largest N
            findings[-1]["headline"] = units == (
                200 if 200 in payload["boundary"] else max(payload["boundary"])
            )
        d = b.get("driven")
        if d and d["forgotten_range"]:
            lo, hi = d["forgotten_range"]
            tail = (f"at every sr of the grid ({lo:.2f}-{d['sr_max']:.2f})" if d["n_censored"] ==
                    d["n_seeds"] else f"at every sr from {lo:.2f} to {hi:.2f}; mean sr* = "
                    f"{d['mean']:.3f} over the {d['n_seeds'] - d['n_censored']} seeds that "
                    "ever keep it")  # fmt: skip
            findings.append(text(
                f"Driven ({df.drive.iloc[0]} i.i.d. input, input_scaling "
                f"{float(df.input_scaling.iloc[0]):g}), N = {units}: every seed forgets its "
                f"initial state {tail}."))  # fmt: skip
    return payload, findings
