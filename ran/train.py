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
last row, a text stream carried from step to step (see :class:`ran.kl.KLTerm`), and
adds ``kl_weight`` times the mean per-token KL(base || injected) of the
next-token distributions; the base
distribution is the same model with the gate closed (bit-identical to the
untouched model). Without it the readout is free to open the gate as far as
the probe likes, and the language model pays for it (notebook 03).

Every run is keyed by a hash of its :class:`TrainConfig`: the config, seed,
wall time and curves go to ``outputs.results/runs/<hash>.json`` and the trained
parameters to ``outputs.cache/runs/<hash>/params.safetensors``; a run whose
hash exists is loaded instead of retrained.

The optimisation loop itself is :func:`ran.fit.fit`; evaluation with every
control lives in :mod:`ran.episodes` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ran import probes as P
from ran.episodes import (  # noqa: F401  (re-exported: the public names of ran.train)
    CONTROLS,
    EpisodeRunner,
    accuracy_summary,
    closed_gate,
    evaluate,
    wilson_interval,
)
from ran.fit import fit
from ran.memo import memo, tensor_digest
from ran.reservoir import ReservoirConfig
from ran.results import Outputs, package_versions, to_jsonable

RUN_FORMAT = 1  # bump when the meaning of a saved run changes (invalidates the cache)
# Per-feature versions, hashed only into the runs that use the feature (so every other run
# keeps its hash): (hash key, predicate on the config dict, version).
#   kl_version 2: the KL term's rows start from the state a question reads.
#   prefix_version 2: the prefix readout's bias starts at real token embeddings, not zeros
#   (which gave NaN gradients); 3: its output scale is the whole embedding table's RMS.
_FEATURE_VERSIONS = (
    ("kl_version", lambda d: bool(d.get("kl_weight")), 2),
    ("prefix_version", lambda d: d.get("kind") == "prefix", 3),
)
# Fields added after runs were cached: left out of the hash while at their default.
_HASH_OPTIONAL = {
    "kind": "reservoir",
    "kl_weight": 0.0,
    "kl_batch": 4,
    "kl_len": 64,
    "query_gate": False,
    "write_gate": False,
    "write_gate_init": 2.0,
    "recurrence": True,
    "drive_source": "output",
    "readout": "kv",
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (its hash keys the run cache)."""

    model_name: str = "tiny-llama"  # a ran.models name or a local HF id
    model_seed: int = 0  # seed of the tiny random models (ignored by real weights)
    layer: int | None = None  # injected layer; None = the surgery's default (middle)
    n_slots: int = 8  # M reservoir K/V slots
    pooling: str = "last"  # how the layer's attention output drives the reservoir
    gate_init: float = 0.0  # per-head gate pre-activation at init (tanh(0) = closed)
    readout_scale: float = 0.1  # readout init std is readout_scale / sqrt(N)
    normalize_drive: bool = True  # RMS-normalise the reservoir drive
    reservoir: ReservoirConfig = field(default_factory=ReservoirConfig)  # fixed ESN
    probe: str = "secret_word"  # a ran.probes name
    probe_params: dict = field(default_factory=dict)  # e.g. {"k": 16, "n_train": 2400}
    steps: int = 150  # optimiser steps (upper bound; early stopping may end sooner)
    batch_size: int = 16  # episodes per step
    learning_rate: float = 3e-3  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 10  # linear warm-up, then cosine decay to min_lr_ratio
    min_lr_ratio: float = 0.1  # final learning rate / peak
    grad_clip: float = 1.0  # max gradient norm (0 = no clipping)
    eval_every: int = 25  # steps between validation evaluations (0 = only at the end)
    patience: int = 3  # evaluations without val-accuracy gain before stopping (0 = never)
    eval_batch_size: int = 32  # episodes per evaluation batch
    scoring: str = "auto"  # forced choice: auto, first_token or sequence (see ran.probes)
    seed: int = 0  # readout init, data order
    lora_r: int = 0  # LoRA rank on the base model (0 = off, readout only)
    lora_alpha: int = 16  # LoRA alpha
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # LoRA target modules
    kind: str = "reservoir"  # memory mechanism, a ran.baselines kind (hashed only if not default)
    kl_weight: float = 0.0  # weight of KL(base || injected) on plain text per step (0 = off)
    kl_batch: int = 4  # text blocks per step for the KL term
    kl_len: int = 64  # tokens per KL text block (training-split Shakespeare)
    query_gate: bool = False  # per-token gate on the slots from layer L's input (ran.slots)
    write_gate: bool = False  # learned gate on how strongly a pass writes (ran.write)
    write_gate_init: float = 2.0  # initial write-gate bias (sigmoid(2) = 0.88: open)
    recurrence: bool = True  # False: W = 0 (the "no recurrence" reference)
    drive_source: str = "output"  # drive from layer L's attention "output" or its "input"
    readout: str = "kv"  # slots as K/V ("kv") or as pseudo-tokens through layer L's k/v ("hidden")

    def __post_init__(self):
        if isinstance(self.reservoir, dict):
            self.reservoir = ReservoirConfig(**self.reservoir)
        self.lora_targets = tuple(self.lora_targets)
        self.probe_params = dict(self.probe_params)
        for name in ("steps", "batch_size", "n_slots", "eval_batch_size", "kl_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "patience", "lora_r", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_weight < 0 or self.kl_len < 2:
            raise ValueError(
                f"kl_weight must be >= 0 and kl_len >= 2, got {self.kl_weight}, {self.kl_len}"
            )
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0 and weight_decay >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.scoring not in ("auto", "first_token", "sequence"):
            raise ValueError(f"scoring must be auto, first_token or sequence, not {self.scoring!r}")
        from ran.baselines import KINDS

        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        self.make_probe()  # validates probe name and parameters

    def make_probe(self) -> P.Probe:
        """The probe; its seed is ``seed`` unless ``probe_params`` sets one."""
        return P.make_probe(self.probe, **({"seed": self.seed} | self.probe_params))

    def injection_config(self):
        from ran.surgery import InjectionConfig

        return InjectionConfig(
            layer=self.layer,
            n_slots=self.n_slots,
            reservoir=self.reservoir,
            pooling=self.pooling,
            gate_init=self.gate_init,
            readout_scale=self.readout_scale,
            normalize_drive=self.normalize_drive,
            advance="forward",
            seed=self.seed,
            query_gate=self.query_gate,
            write_gate=self.write_gate,
            write_gate_init=self.write_gate_init,
            recurrence=self.recurrence,
            drive_source=self.drive_source,
            readout=self.readout,
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict; ``TrainConfig.from_dict(cfg.to_dict())`` has the same hash."""
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild a config saved by :meth:`to_dict` (e.g. a run file's ``config``)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)

    def config_hash(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of the config."""
        d = self.to_dict()
        for name, default in _HASH_OPTIONAL.items():  # fields added later: old hashes stay valid
            if d.get(name) == default:
                d.pop(name)
        d |= {key: version for key, uses, version in _FEATURE_VERSIONS if uses(d)}
        blob = json.dumps({"format": RUN_FORMAT, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        """:func:`evaluate` on this run's ``split`` episodes (cached by :mod:`ran.memo`
        under the run's hash when the run has ``outputs``)."""
        eps = self.episodes[split]
        bs = self.config.eval_batch_size

        def run():
            return evaluate(self.handle, self.tokenizer, eps, controls, bs, self.config.scoring)

        params = tensor_digest(_named_trainable(self.model, self.handle).values())
        key = {"run": self.hash, "params": params, "split": split, "controls": list(controls)}
        return memo(self.outputs, "evaluate", key, run)


# ----------------------------------------------------------------------------- training
def _build(cfg: TrainConfig):
    """Load the model, freeze it, add LoRA if asked, and inject the reservoir."""
    from ran.baselines import make
    from ran.models import load_model

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


def _named_trainable(model, handle) -> dict[str, torch.nn.Parameter]:
    """Trainable tensors by stable name: the handle's, then LoRA's (if any)."""
    out = {f"ran.{i}": p for i, p in enumerate(handle.trainable_parameters())}
    for name, p in model.named_parameters():
        if "lora_" in name:
            out[f"lora.{name}"] = p
    return out


def _paths(cfg: TrainConfig, outputs: Outputs) -> tuple[str, Path, Path]:
    h = cfg.config_hash()
    return (
        h,
        outputs.results / "runs" / f"{h}.json",
        outputs.cache / "runs" / h / "params.safetensors",
    )


def train(cfg: TrainConfig, outputs: Outputs | None = None, progress: bool = True) -> TrainResult:
    """Train (or load, if its hash exists) the readout of one configuration.

    Parameters
    ----------
    cfg : TrainConfig
    outputs : Outputs, optional
        Output roots; defaults to ``Outputs()``.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    TrainResult
        The live model, tokenizer and handle with the best-validation
        parameters loaded, curves and the probe's episodes by split.
    """
    from safetensors.torch import load_file

    from ran.atomic import atomic_save_safetensors, atomic_write_json

    outputs = outputs or Outputs()
    key, run_path, params_path = _paths(cfg, outputs)
    episodes = cfg.make_probe().splits()
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        model, tok, handle = _build(cfg)
        named = _named_trainable(model, handle)
        if run_path.is_file() and params_path.is_file():
            saved = load_file(str(params_path))
            if set(saved) != set(named):
                raise RuntimeError(f"cached run {params_path} does not match the model; delete it")
            with torch.no_grad():
                for name, p in named.items():
                    p.copy_(saved[name])
            doc = json.loads(run_path.read_text())
            from ran.jobs import TRAINED_BY_WORKERS  # trained for this process: not a reuse

            return TrainResult(
                cfg,
                key,
                model,
                tok,
                handle,
                doc["history"],
                doc["wall_time_s"],
                key not in TRAINED_BY_WORKERS,
                run_path,
                params_path,
                episodes,
                outputs,
            )
        history = fit(cfg, model, tok, handle, named, episodes, progress)
    wall = time.perf_counter() - t0
    params_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors({n: p.detach().clone() for n, p in named.items()}, params_path)
    run_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "hash": key,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "wall_time_s": wall,
        "versions": package_versions(),
        "params": outputs.rel(params_path) if _inside(outputs, params_path) else str(params_path),
        "history": history,
    }
    atomic_write_json(run_path, to_jsonable(doc), indent=1)  # last: it marks the run done
    return TrainResult(
        cfg, key, model, tok, handle, history, wall, False, run_path, params_path, episodes, outputs
    )


def _inside(outputs: Outputs, path: Path) -> bool:
    try:
        outputs.rel(path)
        return True
    except ValueError:
        return False
