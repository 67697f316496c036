"""Notebook 06's computation: retention curves, half-lives and regime grids (their findings
text: :mod:`ran.study.retention_findings`).

A *configuration* is a trained :class:`ran.training.config.TrainConfig` on the
``fact_in_text`` probe (the key inside running text). Each is evaluated on
the held-out test split (keys, templates, distractor wordings and plays never
seen in training) along two axes, with every control on the identical
episodes:

* distractor passes ``d`` between the fact and the question;
* idle reservoir ticks ``n`` (u = 0) before the question.

The *retention half-life* of a curve is the number of passes (or ticks) after
which recall is halfway between its value at 0 and chance, interpolated
linearly between measured points; a curve that never falls that far within
the measured range has a half-life beyond its last point (reported as
``> max``). The in-distribution row (training keys and templates on test
text) sits beside the held-out one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ran.tasks import probes as P
from ran.tasks.episodes import CONTROLS, evaluate
from ran.training.recipes import DECODED_READ, FACT_MEMORY_SIDE
from ran.util.configio import updated
from ran.util.memo import cached, memo

H1_FACT = "It was late. Remember the word castle, it matters. The night was cold."
HELDOUT_TEXT = dict(lines_before=(1, 2), lines_after=(1, 2))  # the key always inside text


def test_episodes(cfg, n_test: int, probe_name: str | None = None, **override) -> list[P.Episode]:
    """Held-out test episodes of a run's probe (or ``probe_name`` with the same parameters):
    the key inside text, ``override`` applied (e.g. ``distractors=(8,)``,
    ``idle_steps=(32,)``, ``heldout=False``, ``k=64``)."""
    params = {"seed": cfg.seed} | dict(cfg.probe_params)
    params |= {"distractors": (0,), "idle_steps": (0,), "n_test": n_test} | HELDOUT_TEXT
    return P.make_probe(probe_name or cfg.probe, **(params | override)).splits()["test"]


def evaluate_condition(run, outputs, n_test: int, controls=CONTROLS, batch_size=32, **override):
    """Every control on the held-out test episodes of one condition (memoised by run).

    Each control is memoised by what it reads (:func:`control_key`), so conditions and runs
    that give it the same inputs share one computation (the d = 0 point, the idle curve's
    reset and stateless values, every run's stateless values)."""
    key = condition_key(run.hash, n_test, controls, **override)

    def compute():
        eps = test_episodes(run.config, n_test, **override)  # probe_name passes through
        res = {c: shared_control(run, outputs, c, eps, batch_size) for c in controls}
        return res | {"chance": 1.0 / len(eps[0].candidates), "n": len(eps)}

    res = memo(outputs, "retention", key, compute)
    return {c: {k: v for k, v in res[c].items() if k != "pred"} for c in controls} | {
        "chance": res["chance"],
        "n": res["n"],
    }


def control_key(run, control: str, episodes: list[P.Episode], batch_size: int) -> dict:
    """What ``control`` reads of ``run`` and ``episodes`` (in their batches), as a memo key.

    ``reservoir`` and ``shuffled`` read every pass and idle tick through the run's
    injection; ``reset`` wipes the state before the question, so it reads only the
    question passes (the same along an idle curve); ``stateless`` and ``oracle`` run with
    the gate closed, which makes the injected layer bit-identical to the base layer, so
    they read the base model and not the run (its LoRA, when it has one, excepted).
    """
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; controls are {CONTROLS}")
    cfg = run.config
    base_only = control in ("stateless", "oracle") and not cfg.lora_r
    who = dict(model=cfg.model_name, model_seed=cfg.model_seed) if base_only else run.hash
    if control in ("stateless", "reset"):
        parts = [(e.passes[-1], e.candidates, e.answer) for e in episodes]
    elif control == "oracle":
        parts = [(e.oracle_prompt, e.candidates, e.answer) for e in episodes]
    else:
        parts = [(e.passes, e.idle, e.candidates, e.answer) for e in episodes]
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    return dict(control=control, reads=who, episodes=digest, n=len(episodes), batch=batch_size)


def shared_control(run, outputs, control: str, episodes: list[P.Episode], batch_size: int = 32):
    """One control's accuracy and predictions on ``episodes``, memoised by
    :func:`control_key`: computed once for every condition and run that reads the same."""

    def compute():
        return evaluate(run.handle, run.tokenizer, episodes, (control,), batch_size)[control]

    return memo(
        outputs, "retention_control", control_key(run, control, episodes, batch_size), compute
    )


def condition_key(run_hash: str, n_test: int, controls=CONTROLS, **override) -> dict:
    """The memo key of :func:`evaluate_condition` (name ``"retention"``)."""
    return dict(run=run_hash, n=n_test, controls=list(controls), **override)


def curve(run, outputs, axis: str, values, n_test: int, controls=CONTROLS) -> list[dict]:
    """Recall along ``axis`` ("distractors" or "idle_steps") at each of ``values``."""
    if axis not in ("distractors", "idle_steps"):
        raise ValueError(f"axis must be 'distractors' or 'idle_steps', got {axis!r}")
    return [
        evaluate_condition(run, outputs, n_test, controls, **{axis: (int(v),)}) | {axis: int(v)}
        for v in values
    ]


def half_life(xs, accs, chance: float) -> float | None:
    """Passes until recall falls halfway from its value at ``xs[0]`` to ``chance``.

    Linear interpolation between measured points; ``math.inf`` when recall never
    falls that far within ``xs``; None when the first point is not above chance
    (there is nothing to retain).
    """
    if len(xs) != len(accs) or not xs:
        raise ValueError("half_life needs equal-length, non-empty xs and accs")
    start = accs[0]
    if not start > chance:
        return None
    mid = (start + chance) / 2
    pts = list(zip(xs, accs, strict=True))
    for (x0, a0), (x1, a1) in zip(pts[:-1], pts[1:], strict=True):
        if a1 <= mid:
            return x0 + (x1 - x0) * (a0 - mid) / (a0 - a1) if a0 != a1 else float(x1)
    return math.inf


# ----------------------------------------------------------------------------- configurations
# Write sides compared on the same probe and budget: TrainConfig overrides, those of
# TrainConfig.injection under "injection" (ran.util.configio.updated).
_INPUT = dict(drive_source="input")
WRITE_SIDES = {
    "pure": dict(injection=dict(pooling="last", drive_source="output", write_gate=False)),
    "mean": dict(injection=_INPUT | dict(pooling="mean", write_gate=False)),
    "attn": dict(injection=_INPUT | dict(pooling="attn", write_gate=False)),
    "attn+gate": dict(injection=_INPUT | dict(pooling="attn", write_gate=True)),
    "token+gate": dict(injection=_INPUT | dict(pooling="token", write_gate=True)),
    # the decoded read side (ran.injection.decoded): per-token write gates (init 1/2), the
    # state decoded back into the residual stream; its read gate starts open, it trains faster
    "decoded": dict(
        injection=DECODED_READ | dict(query_gate=False), learning_rate=0.05, kl_weight=0.0
    ),
    # the same with a query gate (open at init) and the KL term on plain text: the H1 trade.
    # It keeps its last step: selected by validation accuracy it would keep an early step,
    # recalling well before the KL has shaped its read side (dPPL +165% that way)
    "decoded+kl": dict(
        injection=DECODED_READ | dict(query_gate=True),
        learning_rate=0.05,
        kl_weight=3.0,
        kl_batch=2,
        kl_len=48,
        select="last",
    ),
    # the decoded read side with a read gate fitted before training and frozen
    # (ran.training.read_gate): open at the end of question passes, shut on text (H1). Read
    # at three tokens instead of everywhere, it needs distractor passes in training (a
    # curriculum) to hold a fact through 8 of them
    "decoded+asked": FACT_MEMORY_SIDE,  # the library recipe ran.training.recipes.fact_memory
    # references with a trained recurrence (GRU cell) and the prefix mechanism, same probe
    "gru": dict(kind="recurrent", injection=_INPUT | dict(pooling="attn", write_gate=True)),
    "prefix": dict(kind="prefix", injection=dict(query_gate=False)),
}
CURVE_CONTROLS = ("reservoir", "reset", "stateless")  # along the curves (cheap, every point)
POINT_CONTROLS = CONTROLS  # at d = 0: every control, the shuffled state and the oracle too


def config_for(base, write_side: str, lr: float | None = None, sr: float | None = None, **kw):
    """``base`` (a TrainConfig) with a named write side (its ``probe_params`` merged into
    ``base``'s), a reservoir regime (``lr``, ``sr``; None: ``base``'s) and overrides ``kw``
    (those of ``injection`` as a dict under it)."""
    if write_side not in WRITE_SIDES:
        raise ValueError(
            f"unknown write side {write_side!r}; choose one of {', '.join(WRITE_SIDES)}"
        )
    regime = {k: v for k, v in (("lr", lr), ("sr", sr)) if v is not None}
    side = dict(WRITE_SIDES[write_side])
    probe_params = side.pop("probe_params", {})  # merged into base's (e.g. a curriculum)
    cfg = updated(base, **side)
    if probe_params:
        cfg = updated(cfg, probe_params=cfg.probe_params | probe_params)
    cfg = updated(cfg, injection={"reservoir": regime})
    return updated(cfg, **kw)


def study(run, outputs, d_list, idle_list, n_test: int, two_facts: bool = True) -> dict:
    """Everything notebook 06 measures on one trained run: the distractor and idle curves
    (held-out), every control at d = 0, the in-distribution row and the two-facts probe."""
    out = {
        "hash": run.hash,
        "train_min": run.wall_time_s / 60,
        "loaded": run.loaded,
        "best_val": run.history.get("best_val_acc"),
        "distractors": curve(run, outputs, "distractors", d_list, n_test, CURVE_CONTROLS),
        "idle": curve(run, outputs, "idle_steps", idle_list, n_test, CURVE_CONTROLS),
        "all_controls": evaluate_condition(run, outputs, n_test, POINT_CONTROLS),
        "in_distribution": evaluate_condition(
            run, outputs, n_test, ("reservoir", "reset"), heldout=False
        ),
    }
    if two_facts and run.config.probe == "fact_in_text":
        out["two_facts"] = evaluate_condition(
            run, outputs, n_test, ("reservoir", "reset", "stateless"), probe_name="two_facts"
        )
    return out


@dataclass
class Swapped:
    """A trained run whose fixed reservoir is swapped for another regime at evaluation: the
    learned write and read sides (and LoRA, none here) are kept, only ``W``, ``W_in`` scale
    and the leak change. Quacks like a TrainResult for :func:`evaluate_condition`."""

    config: object
    hash: str
    model: object
    tokenizer: object
    handle: object


def swap_regime(run, lr: float, sr: float, build: bool = True) -> Swapped:
    """``run``'s model with its injection replaced by the same mechanism at reservoir
    regime ``(lr, sr)`` and the run's trained parameters copied in (same shapes: the
    reservoir's seed and size stay). Call :func:`restore` (or ``.handle.remove()``) after.
    ``build=False``: the config and hash only (model, tokenizer, handle None), for
    reading evaluations the memo holds."""
    cfg = updated(run.config, injection={"reservoir": {"lr": lr, "sr": sr}})
    key = f"{run.hash}@lr={lr:g},sr={sr:g}"
    if not build:
        return Swapped(cfg, key, None, None, None)
    return Swapped(cfg, key, run.model, run.tokenizer, _reinject(run.model, cfg, run.handle))


def _reinject(model, cfg, old):
    """Remove ``old`` from ``model`` and inject ``cfg`` (a TrainConfig) with ``old``'s trained
    parameters copied in (same shapes); returns the new handle."""
    from ran.mechanisms.registry import make

    old.remove()
    h = make(cfg.kind, model, cfg.injection_config())
    with torch.no_grad():
        for dst, src in zip(h.trainable_parameters(), old.trainable_parameters(), strict=True):
            dst.copy_(src)
    return h


def regime_grid(run, outputs, lrs, srs, n_test: int, idle: int, distractors: int) -> list[dict]:
    """Recall of ``run``'s learned sides under every fixed reservoir ``lr x sr`` (swapped at
    evaluation): at d = 0 (``d0``), after ``distractors`` passes (``d``) and after ``idle``
    ticks (``idle``), held-out. The run's own injection is restored afterwards."""
    conditions = (
        ("d0", {}),
        ("d", {"distractors": (distractors,)}),
        ("idle", {"idle_steps": (idle,)}),
    )
    rows, swapped = [], False
    for lr in lrs:
        for sr in srs:
            sw = swap_regime(run, lr, sr, build=False)
            keys = [condition_key(sw.hash, n_test, ("reservoir",), **ov) for _, ov in conditions]
            if not all(cached(outputs, "retention", key) for key in keys):
                sw, swapped = swap_regime(run, lr, sr), True  # the model is needed
            try:
                acc = {
                    name: evaluate_condition(sw, outputs, n_test, ("reservoir",), **ov)["reservoir"]
                    for name, ov in conditions
                }
            finally:
                if sw.handle is not None:
                    sw.handle.remove()
            rows.append(
                dict(lr=lr, sr=sr, distractors=distractors, idle_steps=idle, n=n_test)
                | {k: v["acc"] for k, v in acc.items()}
            )
    if swapped:
        restore(run)
    return rows


def restore(run) -> None:
    """Re-inject ``run``'s own mechanism and trained parameters (after :func:`swap_regime`)."""
    run.handle = _reinject(run.model, run.config, run.handle)


def plan(base, best, best_lr, best_sr, compare=(), grid_lr=(), grid_sr=(), k_large=0,
         large_steps=None):  # fmt: skip
    """Notebook 06's training runs: ``(configs, grid, large)``.

    ``configs``: the best write side at the best regime (first), each write side of
    ``compare`` at that regime, and the no-recurrence reference (W = 0); ``grid``:
    ``{(lr, sr): config}`` of the best write side; ``large``: the best at ``K = k_large``
    (None when 0), trained for ``large_steps`` (None: the base's steps). Runs shared by
    several entries have one hash and train once.
    """
    configs = {f"{best} lr={best_lr:g} sr={best_sr:g}": config_for(base, best, best_lr, best_sr)}
    for name in compare:
        configs[f"{name} lr={best_lr:g} sr={best_sr:g}"] = config_for(base, name, best_lr, best_sr)
    configs["no recurrence (W = 0)"] = config_for(
        base, best, best_lr, best_sr, injection={"recurrence": False}
    )
    grid = {(lr, sr): config_for(base, best, lr, sr) for lr in grid_lr for sr in grid_sr}
    large = None
    if k_large:
        first = next(iter(configs.values()))
        steps = {"steps": large_steps} if large_steps else {}
        params = first.probe_params | {"k": k_large}
        large = config_for(base, best, best_lr, best_sr, probe_params=params, **steps)
    return configs, grid, large


def save_adapter(run, outputs, name: str) -> str:
    """Save ``run``'s trained memory as the adapter ``data/adapters/<name>`` of the profile
    (with its TrainConfig, so ``python -m ran eval`` knows the probe); returns its path."""
    from ran.mechanisms.adapter import save_pretrained

    path = outputs.base / "data" / "adapters" / name
    if not adapter_current(path, run):
        save_pretrained(run.handle, path, run.config.model_name, run.config)
    return outputs.rel(path)


def adapter_current(path, run) -> bool:
    """Whether the adapter folder ``path`` holds ``run``: its config names the run's hash and
    was written after the run's parameters (a run trained anew, e.g. in a fresh clone whose
    committed adapter came from another machine, is written again)."""
    cfg_file, weights = Path(path) / "adapter_config.json", Path(path) / "adapter_model.safetensors"
    if not (cfg_file.is_file() and weights.is_file() and Path(run.params_path).is_file()):
        return False
    try:
        recorded = (json.loads(cfg_file.read_text()).get("training") or {}).get("hash")
    except (json.JSONDecodeError, AttributeError):
        return False
    newer = min(cfg_file.stat().st_mtime, weights.stat().st_mtime)
    return recorded == run.hash and newer >= Path(run.params_path).stat().st_mtime
