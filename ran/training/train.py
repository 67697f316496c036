"""Training the reservoir readout across passes, and evaluating it with controls.

One training step takes a batch of probe episodes, resets the reservoir, runs
every pass but the last through :meth:`handle.write_only` (the model only up
to the injected layer), runs the question pass through the full model, and
minimises the cross-entropy of the forced choice among the K candidates. The
gradient flows back through the slots into the state, through the fixed
reservoir and into the earlier passes (truncated at the episode boundary by
``detach_state``). Only the readout and gate (``handle.trainable_parameters()``,
plus LoRA adapters if enabled) are trained.

Non-destruction term (``kl_weight > 0``): each step also runs ``kl_batch``
blocks of training-split Shakespeare through the injected model, with the
state the step's question passes read (a memory holding a secret) and, in the
last row, a text stream carried from step to step (see :class:`ran.training.kl.KLTerm`), and
adds ``kl_weight`` times the mean per-token KL(base || injected) of the
next-token distributions; the base
distribution is the same model with the gate closed (bit-identical to the
untouched model). Without it the readout is free to open the gate as far as
the probe likes, and the language model pays for it (notebook 03).

Every run is keyed by a hash of its :class:`TrainConfig`: the config, seed,
wall time and curves go to ``outputs.results/runs/<hash>.json`` and the trained
parameters to ``outputs.cache/runs/<hash>/params.safetensors``; a run whose
hash exists is loaded instead of retrained.

The optimisation loop itself is :func:`ran.training.fit.fit`; evaluation with every
control lives in :mod:`ran.tasks.episodes` (re-exported here).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ran.mechanisms.adapter import _named_trainable
from ran.tasks.episodes import CONTROLS, evaluate
from ran.training.config import RUN_FORMAT, TrainConfig  # noqa: F401  (RUN_FORMAT: public here)
from ran.training.fit import fit
from ran.util.memo import memo, tensor_digest
from ran.util.results import Outputs, package_versions, to_jsonable


@dataclass
class TrainResult:
    """A trained (or loaded) run: the live model and handle, curves and paths."""

    config: TrainConfig
    hash: str
    model: object
    tokenizer: object
    handle: object
    history: dict
    wall_time_s: float
    loaded: bool
    run_path: Path
    params_path: Path
    episodes: dict = field(repr=False, default_factory=dict)
    outputs: Outputs | None = field(repr=False, default=None)

    def evaluate(self, split: str = "test", controls: tuple[str, ...] = CONTROLS) -> dict:
        """:func:`evaluate` on this run's ``split`` episodes (cached by :mod:`ran.util.memo`
        under the run's hash when the run has ``outputs``)."""
        eps = self.episodes[split]
        bs = self.config.eval_batch_size

        def run():
            return evaluate(self.handle, self.tokenizer, eps, controls, bs, self.config.scoring)

        key = {"run": self.hash, "params": self.params_digest(), "split": split,
               "controls": list(controls)}  # fmt: skip
        return memo(self.outputs, "evaluate", key, run)

    def params_digest(self) -> str:
        """:func:`tensor_digest` of the trainable parameters in name order (the live ones: a
        caller may have changed them)."""
        named = _named_trainable(self.model, self.handle)
        return tensor_digest(named[n] for n in sorted(named))


class LazyTrainResult(TrainResult):
    """A cached run (:func:`train` with ``lazy=True``) whose model, tokenizer, handle and
    episodes are built on first use: a warm rerun whose evaluations all hit the memo
    (:mod:`ran.util.memo`, keyed by the run's hash) never loads the model. Built exactly as
    :func:`train` builds a cached run (same RNG isolation), so the values are the same."""

    _LIVE = ("model", "tokenizer", "handle")

    def __getattr__(self, name: str):
        if name in self._LIVE:
            loader = self.__dict__.pop("_loader", None)
            if loader is None:
                raise AttributeError(f"this run's {name} was deleted")
            self.__dict__.update(zip(self._LIVE, loader(), strict=True))
            return self.__dict__[name]
        if name == "episodes":
            self.__dict__["episodes"] = self.config.make_probe().splits()
            return self.__dict__["episodes"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str):
        if name in self._LIVE and name not in self.__dict__:
            self.__dict__.pop("_loader", None)  # never built: nothing to free
            return
        super().__delattr__(name)

    def __repr__(self) -> str:  # the dataclass repr would build the model
        state = "built" if self.built else "not built"
        return f"LazyTrainResult(hash={self.hash!r}, probe={self.config.probe!r}, {state})"

    def params_digest(self) -> str:
        """As :meth:`TrainResult.params_digest`; before the model is built, from the saved
        parameters (which the build copies in), without building it."""
        if self.built:
            return super().params_digest()
        from safetensors.torch import load_file

        saved = load_file(str(self.params_path))
        return tensor_digest(saved[n] for n in sorted(saved))

    @property
    def built(self) -> bool:
        """Whether the model has been built (by an attribute access)."""
        return "model" in self.__dict__


# Runs trained for this process by worker jobs (ran.training.jobs.train_all, or a sweep it
# ran): a later train() that loads one of them reports loaded=False, since it was not a reuse.
TRAINED_BY_WORKERS: set[str] = set()


# ----------------------------------------------------------------------------- training
def _build(cfg: TrainConfig):
    """Load the model, freeze it, add LoRA if asked, and inject the reservoir."""
    from ran.injection.models import load_model
    from ran.mechanisms.registry import make

    model, tok = load_model(cfg.model_name, seed=cfg.model_seed)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    if cfg.lora_r:
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets)
        )
        model = inject_adapter_in_model(lora, model)
    handle = make(cfg.kind, model, cfg.injection_config())
    return model, tok, handle


def _paths(cfg: TrainConfig, outputs: Outputs) -> tuple[str, Path, Path]:
    h = cfg.config_hash()
    return (
        h,
        outputs.results / "runs" / f"{h}.json",
        outputs.cache / "runs" / h / "params.safetensors",
    )


def train(
    cfg: TrainConfig, outputs: Outputs | None = None, progress: bool = True, lazy: bool = False
) -> TrainResult:
    """Train (or load, if its hash exists) the readout of one configuration.

    Parameters
    ----------
    cfg : TrainConfig
    outputs : Outputs, optional
        Output roots; defaults to ``Outputs()``.
    progress : bool
        Show a tqdm progress bar.
    lazy : bool
        For a cached run, return a :class:`LazyTrainResult`: the model, tokenizer,
        handle and episodes are built on first use (a run that is not cached trains
        as usual).

    Returns
    -------
    TrainResult
        The live model, tokenizer and handle with the best-validation
        parameters loaded, curves and the probe's episodes by split.
    """
    from ran.util.atomic import atomic_save_safetensors, atomic_write_json

    outputs = outputs or Outputs()
    key, run_path, params_path = _paths(cfg, outputs)
    if run_path.is_file() and params_path.is_file():
        doc = json.loads(run_path.read_text())
        fields = (doc["history"], doc["wall_time_s"], key not in TRAINED_BY_WORKERS, run_path,
                  params_path)  # fmt: skip
        if lazy:
            run = LazyTrainResult(cfg, key, None, None, None, *fields, outputs=outputs)
            for name in (*LazyTrainResult._LIVE, "episodes"):
                del run.__dict__[name]
            run.__dict__["_loader"] = functools.partial(_load_cached, cfg, params_path)
            return run
        return TrainResult(cfg, key, *_load_cached(cfg, params_path), *fields,
                           cfg.make_probe().splits(), outputs)  # fmt: skip
    episodes = cfg.make_probe().splits()
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        model, tok, handle = _build(cfg)
        named = _named_trainable(model, handle)
        handle.calibrate(tok, [e.passes[0] for e in episodes["train"][:8]])  # e.g. a slot gain
        fixed, gate_fit = set(), None
        t_gate = time.perf_counter()
        if cfg.read_gate:  # the query gate fitted first, then frozen (ran.training.read_gate)
            from ran.training.read_gate import fit_read_gate, frozen_names

            gate_fit = fit_read_gate(handle, tok, episodes["train"], cfg.read_gate)
            fixed = frozen_names(named, handle)
        t_fit = time.perf_counter()
        history = fit(cfg, model, tok, handle, named, episodes, progress, fixed)
        # where the wall time went, in seconds (the loop's includes validation); beside the
        # history, which is identical between two runs of one config, timings are not
        phase_s = dict(
            setup=t_gate - t0, read_gate=t_fit - t_gate, loop=time.perf_counter() - t_fit,
            validation=history.pop("validation_s"),
        )  # fmt: skip
        if gate_fit is not None:
            history["read_gate"] = gate_fit
    wall = time.perf_counter() - t0
    params_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors({n: p.detach().clone() for n, p in named.items()}, params_path)
    run_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "hash": key,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "wall_time_s": wall,
        "phase_s": phase_s,
        "versions": package_versions(),
        "params": outputs.rel(params_path) if _inside(outputs, params_path) else str(params_path),
        "history": history,
    }
    atomic_write_json(run_path, to_jsonable(doc), indent=1)  # last: it marks the run done
    return TrainResult(
        cfg, key, model, tok, handle, history, wall, False, run_path, params_path, episodes, outputs
    )


def _load_cached(cfg: TrainConfig, params_path: Path) -> tuple:
    """``(model, tokenizer, handle)`` of a cached run: built as :func:`train` builds it, with
    the saved parameters copied in (the global RNG left as it was)."""
    from safetensors.torch import load_file

    with torch.random.fork_rng(devices=[]):
        model, tok, handle = _build(cfg)
        named = _named_trainable(model, handle)
        saved = load_file(str(params_path))
        if set(saved) != set(named):
            raise RuntimeError(f"cached run {params_path} does not match the model; delete it")
        with torch.no_grad():
            for name, p in named.items():
                p.copy_(saved[name])
    return model, tok, handle


def _inside(outputs: Outputs, path: Path) -> bool:
    try:
        outputs.rel(path)
        return True
    except ValueError:
        return False
