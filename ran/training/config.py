"""The config of a training run, :class:`TrainConfig`, and its hash (which keys the run cache).

Where and how the memory enters the model is the nested
:class:`ran.injection.config.InjectionConfig` ``TrainConfig.injection`` (layer L, M slots,
the fixed reservoir, the write side, the read side). Training sets two of its fields
itself (:meth:`TrainConfig.injection_config`): ``advance`` is ``"forward"`` (one reservoir
step per model() call, the way episodes run) and the readout init ``seed`` is
``TrainConfig.seed``; in ``injection`` both stay at their defaults (anything else is an
error, so one run has one config and one hash).

The hash is SHA-256 over the canonical JSON (sorted keys) of the whole config, nested
configs included, with the run format :data:`RUN_FORMAT`: every field counts, at every
value, except the fields added since run format 2 (:data:`HASH_OPTIONAL`), which count
once they leave their default (so every run saved before them keeps its hash). A field that used to be top-level (``n_slots``, ``reservoir``, ...) is an error
naming its place under ``injection``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

from ran.injection.config import InjectionConfig
from ran.mechanisms import registry
from ran.tasks import probes as P
from ran.training.read_gate import options as read_gate_options
from ran.util.configio import from_dict
from ran.util.results import to_jsonable

SELECTS = ("val", "last")  # TrainConfig.select: best validation accuracy, or the last step
RUN_FORMAT = 2  # bump when the meaning of a saved run changes (invalidates the cache)
# Fields added after run format 2: left out of the hash while at their default, so a run
# saved before they existed keeps its hash (and its cached result)
HASH_OPTIONAL = {"read_gate": {}}
# InjectionConfig fields that training sets: (their value in TrainConfig.injection, why)
_SET_BY_TRAINING = {
    "advance": ("forward", "one reservoir step per model() call"),
    "seed": (0, "the readout init follows TrainConfig.seed"),
}


def _rejecting_injection_fields(cls):
    """``cls.__init__`` (and so ``dataclasses.replace``) raises on an InjectionConfig field
    given at the top level, naming its place under ``injection``."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for name in kwargs:
            moved = cls.field_moved(name)
            if moved:
                raise ValueError(moved)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@_rejecting_injection_fields
@dataclass
class TrainConfig:
    """Everything that defines a training run (its hash keys the run cache).

    ``injection`` says where and how the memory enters the model; training overrides
    its ``advance`` (always ``"forward"``) and ``seed`` (``TrainConfig.seed``), which
    stay at their defaults there (see the module doc).
    """

    model_name: str = "tiny-llama"  # a ran.injection.models name or a local HF id
    model_seed: int = 0  # seed of the tiny random models (ignored by real weights)
    # layer L, M slots, the fixed ESN, write and read sides (a dict is read as one)
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    probe: str = "secret_word"  # a ran.tasks.probes name
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
    scoring: str = "auto"  # forced choice: auto, first_token or sequence (see ran.tasks.probes)
    seed: int = 0  # readout init (injection_config's seed), data order
    lora_r: int = 0  # LoRA rank on the base model (0 = off, readout only)
    lora_alpha: int = 16  # LoRA alpha
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # LoRA target modules
    kind: str = "reservoir"  # memory mechanism, a ran.mechanisms.registry kind
    kl_weight: float = 0.0  # weight of KL(base || injected) on plain text per step (0 = off)
    kl_batch: int = 4  # text blocks per step for the KL term
    kl_len: int = 64  # tokens per KL text block (training-split Shakespeare)
    # which parameters the run keeps: "val" those of the best validation accuracy, "last"
    # the final step's (a KL run recalls best early, before the KL has shaped its read side)
    select: str = "val"
    # a read gate fitted before training and frozen (ran.training.read_gate; {}: off), e.g.
    # {"tail": 3, "shift": 2.0}: open at the end of question passes, shut on text
    read_gate: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.injection, dict):  # its reservoir may be a dict too (a ConfigError)
            self.injection = from_dict(InjectionConfig, self.injection, "TrainConfig", "injection.")
        if not isinstance(self.injection, InjectionConfig):
            raise ValueError(
                f"injection must be a ran.injection.config.InjectionConfig or a dict of its "
                f"fields, got {self.injection!r}"
            )
        for name, (default, why) in _SET_BY_TRAINING.items():
            value = getattr(self.injection, name)
            if value != default:
                raise ValueError(
                    f"injection.{name} is set by training ({why}): leave it at {default!r}, "
                    f"got {value!r}"
                )
        self.lora_targets = tuple(self.lora_targets)
        self.probe_params = dict(self.probe_params)
        # every option spelled out (validated), so that the hash covers the defaults too
        self.read_gate = read_gate_options(self.read_gate) if self.read_gate else {}
        if self.read_gate:
            if not self.injection.query_gate:
                raise ValueError("read_gate fits the query gate: set injection.query_gate=True")
        for name in ("steps", "batch_size", "eval_batch_size", "kl_batch"):
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
        if self.select not in SELECTS:
            raise ValueError(f"select must be one of {', '.join(SELECTS)}, not {self.select!r}")
        if self.scoring not in ("auto", "first_token", "sequence"):
            raise ValueError(f"scoring must be auto, first_token or sequence, not {self.scoring!r}")
        if self.kind not in registry.kinds():
            raise ValueError(
                f"kind must be one of {', '.join(registry.kinds())}, got {self.kind!r}"
            )
        self.make_probe()  # validates probe name and parameters

    @classmethod
    def field_moved(cls, name: str) -> str | None:
        """The error for ``name`` given at the top level when it is an InjectionConfig field
        (its place is ``injection``); None for any other name."""
        own, nested = {f.name for f in fields(cls)}, {f.name for f in fields(InjectionConfig)}
        if name in own or name not in nested:
            return None
        return (
            f"TrainConfig has no field {name!r}: it now lives under 'injection' "
            f"(TrainConfig(injection=InjectionConfig({name}=...)), or injection: {{{name}: ...}} "
            "in a config file)"
        )

    def make_probe(self) -> P.Probe:
        """The probe; its seed is ``seed`` unless ``probe_params`` sets one."""
        return P.make_probe(self.probe, **({"seed": self.seed} | self.probe_params))

    def injection_config(self) -> InjectionConfig:
        """``injection`` as training injects it: ``advance="forward"``, readout seed ``seed``."""
        return replace(self.injection, advance="forward", seed=self.seed)

    def to_dict(self) -> dict:
        """Plain JSON-able dict; ``TrainConfig.from_dict(cfg.to_dict())`` has the same hash."""
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild a config saved by :meth:`to_dict` (e.g. a run file's ``config``)."""
        for name in d:
            moved = cls.field_moved(name)
            if moved:
                raise ValueError(moved)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)

    def config_hash(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of the config and the run format."""
        d = self.to_dict()
        for name, default in HASH_OPTIONAL.items():
            if d.get(name) == default:
                del d[name]
        blob = json.dumps({"format": RUN_FORMAT, "config": d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
