"""The config of a training run, :class:`TrainConfig`, and its hash (which keys the run cache).

The hash is SHA-256 over the canonical JSON of the config with the run format;
fields added after runs were cached are left out while at their default, and
per-feature versions are hashed only into the runs that use the feature, so
every older run keeps its hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from ran.injection.config import InjectionConfig
from ran.mechanisms import registry
from ran.reservoir import ReservoirConfig
from ran.tasks import probes as P
from ran.util.results import to_jsonable

SELECTS = ("val", "last")  # TrainConfig.select: best validation accuracy, or the last step
RUN_FORMAT = 1  # bump when the meaning of a saved run changes (invalidates the cache)
# Per-feature versions, hashed only into the runs that use the feature (so every other run
# keeps its hash): (hash key, predicate on the config dict, version).
#   kl_version 2: the KL term's rows start from the state a question reads.
# A mechanism whose meaning changed after runs were cached declares its own tag
# (``hash_tag`` of its registration in ran.mechanisms), hashed into its runs only.
_FEATURE_VERSIONS = (("kl_version", lambda d: bool(d.get("kl_weight")), 2),)
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
    "select": "val",
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (its hash keys the run cache)."""

    model_name: str = "tiny-llama"  # a ran.injection.models name or a local HF id
    model_seed: int = 0  # seed of the tiny random models (ignored by real weights)
    layer: int | None = None  # injected layer; None = the surgery's default (middle)
    n_slots: int = 8  # M reservoir K/V slots
    pooling: str = "last"  # how the layer's attention output drives the reservoir
    gate_init: float = 0.0  # per-head gate pre-activation at init (tanh(0) = closed)
    readout_scale: float = 0.1  # readout init std is readout_scale / sqrt(N)
    normalize_drive: bool = True  # RMS-normalise the reservoir drive
    reservoir: ReservoirConfig = field(default_factory=ReservoirConfig)  # fixed ESN
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
    seed: int = 0  # readout init, data order
    lora_r: int = 0  # LoRA rank on the base model (0 = off, readout only)
    lora_alpha: int = 16  # LoRA alpha
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # LoRA target modules
    kind: str = (
        "reservoir"  # memory mechanism, a ran.mechanisms.registry kind (hashed only if not default)
    )
    kl_weight: float = 0.0  # weight of KL(base || injected) on plain text per step (0 = off)
    kl_batch: int = 4  # text blocks per step for the KL term
    kl_len: int = 64  # tokens per KL text block (training-split Shakespeare)
    query_gate: bool = (
        False  # per-token gate on the slots from layer L's input (ran.injection.slots)
    )
    write_gate: bool = False  # learned gate on how strongly a pass writes (ran.injection.write)
    write_gate_init: float = 2.0  # initial write-gate bias (sigmoid(2) = 0.88: open)
    recurrence: bool = True  # False: W = 0 (the "no recurrence" reference)
    drive_source: str = "output"  # drive from layer L's attention "output" or its "input"
    readout: str = "kv"  # "kv" slots, "hidden" pseudo-tokens, "decoded" state (injection.decoded)
    # which parameters the run keeps: "val" those of the best validation accuracy, "last"
    # the final step's (a KL run recalls best early, before the KL has shaped its read side)
    select: str = "val"

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
        if self.select not in SELECTS:
            raise ValueError(f"select must be one of {', '.join(SELECTS)}, not {self.select!r}")
        if self.scoring not in ("auto", "first_token", "sequence"):
            raise ValueError(f"scoring must be auto, first_token or sequence, not {self.scoring!r}")
        if self.kind not in registry.kinds():
            raise ValueError(
                f"kind must be one of {', '.join(registry.kinds())}, got {self.kind!r}"
            )
        self.make_probe()  # validates probe name and parameters

    def make_probe(self) -> P.Probe:
        """The probe; its seed is ``seed`` unless ``probe_params`` sets one."""
        return P.make_probe(self.probe, **({"seed": self.seed} | self.probe_params))

    def injection_config(self):
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
        tag = registry.get(self.kind).hash_tag
        if tag is not None:
            d[tag[0]] = tag[1]
        blob = json.dumps({"format": RUN_FORMAT, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
