"""The Reservoir Agent's costs: idle tick latency, a prompted pass against a plain forward, memory over ticks.

One injected model (gate open, a fresh reservoir of ``units``: the costs do not
depend on trained weights) runs a :class:`ran.agent.ReservoirAgent` with its event
log on and a gate that stays silent (so a prompted pass is the pass itself, no
reply). Measured:

* **idle tick**: ``agent.step`` of an idle request (``handle.idle(1)``, the gate, the
  events and their log line), ``idle_ticks`` times; median and 99th percentile;
  resident memory sampled every ``rss_every`` ticks (memory flat: growth over the ticks);
* **checkpoint**: the same ticks with the crash-safe checkpoint after each one (two
  atomic, fsynced writes into the build folder), ``checkpoint_ticks`` times;
* **prompted pass / plain forward**: ``agent.send(message)`` (cleaning, tokenising,
  the forward with hidden states, the gate, the buffer, the events) against the
  untouched model's forward of the same tokens, and against the injected model's
  own forward (the agent's bookkeeping alone), interleaved in rotating order,
  ``reps`` each; median ratios with bootstrap CIs. No checkpoint in this arm (its
  cost is the checkpoint row).

Run: ``python -m ran bench agent [--profile default]``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ran.bench.store import bootstrap_median_ci, check, section_met
from ran.injection.models import SMOLLM2, load_model
from ran.util.results import Outputs
from ran.util.wording import ratio_text

TICK_TARGET_MS = 1.0  # idle tick latency budget (issue 19)
PASS_TARGET = 1.05  # prompted pass / plain forward
RSS_TARGET_MB = 5.0  # resident memory growth over the idle ticks ("memory flat")


@dataclass(frozen=True)
class AgentBenchConfig:
    """What the agent benchmark times (see the module docstring)."""

    model_name: str = SMOLLM2  # registry name of the model
    units: int = 512  # reservoir size N
    idle_ticks: int = 10000  # idle ticks timed; memory is watched over them
    rss_every: int = 1000  # ticks between resident-memory samples
    checkpoint_ticks: int = 50  # ticks timed with a checkpoint after each
    reps: int = 20  # prompted passes and plain forwards, interleaved
    warmup: int = 2  # untimed repetitions of each first
    message: str = "I walked along the harbor this morning and the boats were already out."
    seed: int = 0  # seed of the models' random weights (tiny models) and the readout

    def __post_init__(self):
        for name in ("units", "idle_ticks", "rss_every", "checkpoint_ticks", "reps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {v!r}.")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {self.warmup!r}.")


PROFILE_CONFIGS = {
    "smoke": AgentBenchConfig(
        model_name="tiny-llama",
        units=64,
        idle_ticks=2000,
        rss_every=500,
        checkpoint_ticks=10,
        reps=10,
    ),  # fmt: skip
    "default": AgentBenchConfig(),
    "paper": AgentBenchConfig(reps=40),
}


def _silent_gate(hidden_size: int, units: int):
    from ran.agent.gate import OutputGate
    from ran.agent.passes import PASS_KINDS

    dim = hidden_size + units + len(PASS_KINDS)
    zeros, ones = torch.zeros(dim), torch.ones(dim)
    return OutputGate(zeros, -20.0, zeros, ones, 0.5, hidden_size, units, True)


def _agent(handle, tok, folder: Path, checkpoint: bool):
    from ran.agent.config import AgentConfig
    from ran.agent.runtime import ReservoirAgent

    cfg = AgentConfig(checkpoint_dir=str(folder / "checkpoint") if checkpoint else None,
                      log_path=str(folder / "events.jsonl"))  # fmt: skip
    gate = _silent_gate(handle.model.config.hidden_size, handle.reservoir.units)
    return ReservoirAgent(handle, tok, gate, cfg)


def _ticks(agent, n: int, rss_every: int | None = None):
    from ran.agent.measure import rss_mb
    from ran.agent.runtime import Request

    times, computes, rss = [], [], []
    for i in range(n):
        if rss_every and i % rss_every == 0:
            rss.append(rss_mb())
        t0 = time.perf_counter()
        events = agent.step(Request("idle"))
        times.append(1000 * (time.perf_counter() - t0))
        computes.append(next(e.data["tick_ms"] for e in events if e.kind == "idle"))
    if rss_every:
        rss.append(rss_mb())
    return np.array(times), np.array(computes), rss


def measure(cfg: AgentBenchConfig, folder: Path) -> dict:
    from ran.injection.config import InjectionConfig
    from ran.mechanisms.reservoir_slots import inject
    from ran.reservoir.config import ReservoirConfig

    plain, tok = load_model(cfg.model_name, seed=cfg.seed)
    injected, _ = load_model(cfg.model_name, seed=cfg.seed)
    handle = inject(
        injected, InjectionConfig(reservoir=ReservoirConfig(units=cfg.units), seed=cfg.seed)
    )
    handle.set_gate(1.0)
    agent = _agent(handle, tok, folder / "ticks", checkpoint=False)
    _ticks(agent, min(200, cfg.idle_ticks))  # warm-up
    tick_ms, compute_ms, rss = _ticks(agent, cfg.idle_ticks, cfg.rss_every)
    finite = bool(torch.isfinite(agent.state).all())
    agent.close()
    handle.reset_state()
    ck_agent = _agent(handle, tok, folder / "checkpointed", checkpoint=True)
    ck_times = []
    for _ in range(cfg.checkpoint_ticks):
        t0 = time.perf_counter()
        ck_agent.idle(1)
        ck_times.append(1000 * (time.perf_counter() - t0))
    ck_agent.close()
    handle.reset_state()
    agent = _agent(handle, tok, folder / "passes", checkpoint=False)
    ids = tok(cfg.message, return_tensors="pt").input_ids
    arms = {"prompted": [], "plain": [], "injected": []}

    def forward(model):
        with torch.no_grad():
            model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=False,
                logits_to_keep=1,
            )

    run_arm = {"prompted": lambda: agent.send(cfg.message), "plain": lambda: forward(plain),
               "injected": lambda: forward(injected)}  # fmt: skip
    names = list(arms)
    for rep in range(cfg.warmup + cfg.reps):
        order = names[rep % 3 :] + names[: rep % 3]  # rotated, so load drifts hit every arm alike
        for arm in order if rep % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            run_arm[arm]()
            if rep >= cfg.warmup:
                arms[arm].append(time.perf_counter() - t0)
    agent.close()
    handle.remove()
    ratio = np.array(arms["prompted"]) / np.array(arms["plain"])
    own = np.array(arms["prompted"]) / np.array(arms["injected"])  # the agent's bookkeeping alone
    return {
        "config": asdict(cfg),
        "tokens": int(ids.shape[1]),
        "idle_tick_ms": {
            "median": float(np.median(tick_ms)),
            "p99": float(np.quantile(tick_ms, 0.99)),
            "ci95": list(bootstrap_median_ci(tick_ms, seed=cfg.seed)),
        },  # fmt: skip
        "idle_compute_ms": {
            "median": float(np.median(compute_ms)),
            "p99": float(np.quantile(compute_ms, 0.99)),
        },
        "checkpointed_tick_ms": {
            "median": float(np.median(ck_times)),
            "p99": float(np.quantile(ck_times, 0.99)),
        },
        "rss_mb": rss,
        "rss_growth_mb": float(rss[-1] - rss[0]),
        "state_finite": finite,
        "prompted_s": {"median": float(np.median(arms["prompted"])), "times": arms["prompted"]},
        "plain_s": {"median": float(np.median(arms["plain"])), "times": arms["plain"]},
        "injected_s": {"median": float(np.median(arms["injected"])), "times": arms["injected"]},
        "ratio_vs_injected": {
            "median": float(np.median(own)),
            "ci95": list(bootstrap_median_ci(own, seed=cfg.seed)),
        },
        "ratio": {
            "median": float(np.median(ratio)),
            "ci95": list(bootstrap_median_ci(ratio, seed=cfg.seed)),
        },
    }


def run(outputs: Outputs, cfg: AgentBenchConfig | None = None) -> dict:
    """Measure and return the ``agent`` section."""
    cfg = cfg or PROFILE_CONFIGS[outputs.profile]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    outputs.build.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="ran-bench-agent-", dir=outputs.build) as tmp:
            sec = measure(cfg, Path(tmp))
    finally:
        torch.set_num_threads(before)
    sec["model"] = cfg.model_name
    describe(sec)
    sec["wall_time_s"] = time.perf_counter() - t0
    return sec


def describe(sec: dict) -> dict:
    """Add the targets, checks, ``met`` and the summary sentence to a measured section."""
    cfg = sec["config"]
    tick, ratio, growth = (
        sec["idle_tick_ms"]["median"],
        sec["ratio"]["median"],
        sec["rss_growth_mb"],
    )
    ck = sec["checkpointed_tick_ms"]["median"]
    sec["target"] = {
        "idle_tick_ms": TICK_TARGET_MS,
        "pass_ratio": PASS_TARGET,
        "rss_growth_mb": RSS_TARGET_MB,
    }
    vs_injected = sec["ratio_vs_injected"]
    sec["checks"] = [
        check("idle tick latency, median (ms)", tick, TICK_TARGET_MS, "<=",
              ci=sec["idle_tick_ms"].get("ci95")),
        check("prompted pass / plain forward, median", ratio, PASS_TARGET, "<=",
              ci=sec["ratio"]["ci95"], ratio=True),
        check(f"resident memory growth over {cfg['idle_ticks']} idle ticks (MB)", growth,
              RSS_TARGET_MB, "<="),
        check("idle tick with its checkpoint, median (ms)", ck, None),
        check("prompted pass / the injected model's forward, median", vs_injected["median"],
              None, ci=vs_injected.get("ci95"), ratio=True),
    ]  # fmt: skip
    sec["met"] = section_met(sec["checks"])
    sec["summary"] = (
        f"On {cfg['model_name']} (N = {cfg['units']}), an idle tick takes {tick:.3f} ms (median "
        f"of {cfg['idle_ticks']}, p99 {sec['idle_tick_ms']['p99']:.3f} ms) and {ck:.1f} ms with "
        f"its fsynced checkpoint; a silent prompted pass of {sec['tokens']} tokens takes "
        f"{ratio_text(ratio, sec['ratio']['ci95'])} times a plain forward "
        f"({ratio_text(vs_injected['median'], vs_injected.get('ci95'))} times the injected "
        f"model's own forward); resident memory grew by {growth:.1f} MB over the ticks"
    )
    return sec
