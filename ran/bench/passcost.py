"""Per-pass cost over many passes: the carried reservoir state vs carrying history in context.

A conversation of ``t`` short passes (``pass_len`` tokens each, batch 1) can carry what
came before in two ways:

(a) **reservoir**: the injected model (gate open) carries r(t); pass t is one forward
    of its own ``pass_len`` tokens whatever t is. The state at pass t is reached by
    advancing the model's own fixed reservoir t-1 times with random unit drives (the
    update a pass performs, without the LM forward: a pass's cost depends on the
    state's shape (1, N), not its values), then set as ``handle.state``; the timed pass
    is a real full forward from that state.
(b) **context**: the untouched model sees every earlier pass's text; pass t feeds its
    ``pass_len`` new tokens with a KV cache holding ``(t-1) * pass_len`` earlier tokens.
    The cache is filled with random tensors of the right shape (a real prefill of
    ~16k tokens is too slow for a benchmark; attention cost does not depend on the
    values) and cropped back after each timed pass. Positions past the model's trained
    context (8192 for SmolLM2) are computed anyway: the cost is what is measured.

Passes are consecutive ``pass_len``-token blocks of the Shakespeare train split. Each
repetition times every (arm, t) once, in an order rotated per repetition, so machine
load drifts hit every condition alike. Reported: median time per pass with bootstrap
CIs, and per arm the median over repetitions of time(t_last) / time(t=1) with its CI.

Run: ``python -m ran bench passcost [--profile default]``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ran.bench.store import bootstrap_median_ci, check, section_met
from ran.injection import slots as S
from ran.injection.config import InjectionConfig
from ran.injection.models import SMOLLM2, load_model
from ran.mechanisms.reservoir_slots import inject
from ran.tasks.data import token_blocks
from ran.util.results import Outputs
from ran.util.wording import ratio_text

TARGET = 1.05  # reservoir arm: pass-t_last / pass-1 time must not grow beyond this
ARMS = ("reservoir", "context")
FIGURE = "bench_pass_cost.png"


@dataclass(frozen=True)
class PassCostConfig:
    """What the pass-cost benchmark times.

    Parameters
    ----------
    model_name : str
        Registry name of the model (see :func:`ran.injection.models.available_models`).
    pass_len : int
        Tokens per pass.
    points : tuple of int
        Pass indices timed, increasing, starting at 1; the last is the far pass.
    reps : int
        Timed repetitions of every (arm, pass index).
    warmup : int
        Untimed repetitions first.
    seed : int
        Seed of the drives, the cache contents and the model.
    """

    model_name: str = SMOLLM2
    pass_len: int = 16
    points: tuple[int, ...] = (1, 10, 100, 300, 1000)
    reps: int = 6
    warmup: int = 1
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.pass_len, int) or self.pass_len < 1:
            raise ValueError(f"pass_len must be a positive integer, got {self.pass_len!r}.")
        pts = tuple(self.points)
        if len(pts) < 2 or pts[0] != 1 or any(b <= a for a, b in zip(pts, pts[1:], strict=False)):
            raise ValueError(f"points must increase strictly from 1 (two or more), got {pts!r}.")
        if not isinstance(self.reps, int) or self.reps < 2:
            raise ValueError(f"reps must be an integer >= 2, got {self.reps!r}.")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {self.warmup!r}.")


PROFILE_CONFIGS = {
    "smoke": PassCostConfig(model_name="tiny-llama", points=(1, 10, 50), reps=3),
    "default": PassCostConfig(),
    "paper": PassCostConfig(reps=10),
}


def states_at(handle, points, seed: int) -> dict[int, torch.Tensor]:
    """r(t) at every pass index in ``points``: the fixed reservoir advanced t-1 times
    from zeros with random unit drives (normalised as the handle normalises drives)."""
    gen = torch.Generator().manual_seed(seed)
    res = handle.reservoir
    r, out = res.zero_state(1), {}
    for t in range(1, max(points) + 1):
        if t in points:
            out[t] = r.clone()
        u = torch.randn(1, res.input_dim, generator=gen, dtype=r.dtype)
        if handle.config.normalize_drive:
            u = S.normalize_drive(u, handle.config.reservoir.input_connectivity)
        r = res.step(r, u)
    return out


def filled_cache(model, n_tokens: int, seed: int):
    """A DynamicCache holding ``n_tokens`` random keys/values per layer (shape only)."""
    from transformers import DynamicCache

    cfg = model.config
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache = DynamicCache(config=cfg)
    gen = torch.Generator().manual_seed(seed)
    for layer in range(cfg.num_hidden_layers):
        k, v = (torch.randn(1, n_kv, n_tokens, hd, generator=gen) for _ in range(2))
        cache.update(k, v, layer)
    return cache


def _timed(fn) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        fn()
    return time.perf_counter() - t0


def measure(cfg: PassCostConfig) -> dict:
    """Time both arms at every pass index; see the module docstring."""
    plain, tok = load_model(cfg.model_name, seed=cfg.seed)
    injected, _ = load_model(cfg.model_name, seed=cfg.seed)
    handle = inject(injected, InjectionConfig())
    handle.set_gate(1.0)
    last = cfg.points[-1]
    blocks = token_blocks(tok, "train", cfg.pass_len, n_blocks=last)
    states = states_at(handle, cfg.points, cfg.seed)
    caches = {t: filled_cache(plain, (t - 1) * cfg.pass_len, cfg.seed + t) for t in cfg.points}
    cache_mb = {t: _cache_mb(caches[t]) for t in cfg.points}

    def run(arm: str, t: int) -> float:
        ids = blocks[t - 1 : t]
        if arm == "reservoir":
            handle.state = states[t]
            return _timed(lambda: injected(input_ids=ids, use_cache=False))
        cache = caches[t]
        dt = _timed(lambda: plain(input_ids=ids, past_key_values=cache, use_cache=True))
        cache.crop(-cfg.pass_len)  # back to (t-1) * pass_len tokens for the next repetition
        return dt

    conds = [(arm, t) for arm in ARMS for t in cfg.points]
    times = {c: [] for c in conds}
    for rep in range(cfg.warmup + cfg.reps):
        order = conds[rep % len(conds) :] + conds[: rep % len(conds)]
        for c in order if rep % 2 == 0 else order[::-1]:
            dt = run(*c)
            if rep >= cfg.warmup:
                times[c].append(dt)
    for t in cfg.points:  # every cache is back to its prefix length
        assert caches[t].get_seq_length() == (t - 1) * cfg.pass_len
    handle.remove()
    return _summarise(cfg, times, cache_mb, handle.reservoir.units)


def _cache_mb(cache) -> float:
    """Size of the cached keys and values in MiB (float32)."""
    if cache.get_seq_length() == 0:
        return 0.0
    return sum(2 * layer.keys.numel() * 4 for layer in cache.layers) / 2**20


def _summarise(cfg: PassCostConfig, times: dict, cache_mb: dict, units: int) -> dict:
    last = cfg.points[-1]
    curve = {arm: [] for arm in ARMS}
    ratio = {}
    for arm in ARMS:
        for t in cfg.points:
            x = np.array(times[(arm, t)])
            lo, hi = bootstrap_median_ci(x, seed=cfg.seed)
            curve[arm].append({"t": t, "median_s": float(np.median(x)), "ci95_s": [lo, hi],
                               "times_s": x.tolist()})  # fmt: skip
        r = np.array(times[(arm, last)]) / np.array(times[(arm, 1)])
        ratio[arm] = {"median": float(np.median(r)), "ci95": list(bootstrap_median_ci(r))}
    for row, t in zip(curve["context"], cfg.points, strict=True):
        row["cached_tokens"] = (t - 1) * cfg.pass_len
        row["kv_cache_mb"] = cache_mb[t]
    return {"config": asdict(cfg), "units": units, "curve": curve, "ratio": ratio}


def caption(sec: dict) -> str:
    """The figure caption, from the numbers."""
    c, last = sec["config"], sec["config"]["points"][-1]
    a, b = sec["curve"]["reservoir"], sec["curve"]["context"]
    return (
        f"Time per pass of {c['pass_len']} new tokens vs pass index t (log x; median of "
        f"{c['reps']} interleaved repetitions, bars: 95% bootstrap CI), {c['model_name']}, "
        f"batch 1. Reservoir state carried: {1000 * a[0]['median_s']:.0f} ms at t = 1, "
        f"{1000 * a[-1]['median_s']:.0f} ms at t = {last}. History in context (KV cache of "
        f"(t-1) x {c['pass_len']} tokens): {1000 * b[0]['median_s']:.0f} ms at t = 1, "
        f"{1000 * b[-1]['median_s']:.0f} ms at t = {last}."
    )


def plot(sec: dict, path) -> None:
    """Time per pass vs pass index (log x) for both arms, saved deterministically."""
    from matplotlib.figure import Figure

    from ran.report.figures.axes import log_axis

    labels = {"reservoir": "reservoir state carried (injected)", "context": "history in context"}
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")  # no pyplot: no global backend state
    ax = fig.subplots()
    for arm, color in zip(ARMS, ("tab:green", "tab:red"), strict=True):
        rows = sec["curve"][arm]
        t = [r["t"] for r in rows]
        med = np.array([1000 * r["median_s"] for r in rows])
        ci = np.array([[1000 * v for v in r["ci95_s"]] for r in rows])
        err = np.clip(np.stack([med - ci[:, 0], ci[:, 1] - med]), 0, None)
        ax.errorbar(t, med, yerr=err, marker="o", capsize=3, color=color, label=labels[arm])
    log_axis(ax, "x", sec["config"]["points"])
    ax.set_xlabel("pass index t (log scale)")
    ax.set_ylabel("time per pass (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(f"Per-pass cost, {sec['config']['model_name']}, batch 1")
    fig.savefig(path, dpi=120, metadata={"Software": None})


def run(outputs: Outputs, cfg: PassCostConfig | None = None) -> dict:
    """Measure, draw the figure and return the ``pass_cost`` section."""
    cfg = cfg or PROFILE_CONFIGS[outputs.profile]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        sec = measure(cfg)
    finally:
        torch.set_num_threads(before)
    sec["model"] = cfg.model_name
    path = outputs.figure_path(FIGURE)
    plot(sec, path)
    sec["figure"] = outputs.rel(path)
    sec["caption"] = caption(sec)
    describe(sec)
    sec["wall_time_s"] = time.perf_counter() - t0
    return sec


def describe(sec: dict) -> dict:
    """Add the target, checks, ``met`` and the summary sentence to a measured section."""
    last, pass_len = sec["config"]["points"][-1], sec["config"]["pass_len"]
    ra, rb = sec["ratio"]["reservoir"], sec["ratio"]["context"]
    sec["target"] = TARGET
    sec["checks"] = [
        check(f"reservoir arm, time(pass {last}) / time(pass 1)", ra["median"], TARGET, "<=",
              ci=ra["ci95"], ratio=True),
        check(f"context arm, time(pass {last}) / time(pass 1)", rb["median"], None,
              ci=rb["ci95"], ratio=True),
    ]  # fmt: skip
    sec["met"] = section_met(sec["checks"])
    sec["summary"] = (
        f"With the reservoir state carried, pass {last} takes "
        f"{ratio_text(ra['median'], ra['ci95'])} times as long as pass 1; carrying the history "
        f"in context instead, pass {last} (KV cache of {(last - 1) * pass_len} tokens) takes "
        f"{ratio_text(rb['median'], rb['ci95'], digits=1)} times as long"
    )
    return sec
