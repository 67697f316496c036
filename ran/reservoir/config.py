"""The hyper-parameters of one reservoir, :class:`ReservoirConfig` (names follow reservoirpy)."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ReservoirConfig:
    """Hyper-parameters of one reservoir (names follow reservoirpy)."""

    units: int = 512  # N, reservoir size
    sr: float = 0.9  # spectral radius of W after rescaling (exact)
    lr: float = 1.0  # leak rate in (0, 1]; 1 means no leak
    input_scaling: float = 0.3  # scale of W_in entries (Bernoulli +-1 times this)
    rc_connectivity: float = 0.1  # density of W
    input_connectivity: float = 1.0  # density of W_in
    bias: float = 0.0  # scale of a fixed random +-1 bias; 0 means no bias
    seed: int = 0  # seed of every random weight (W, W_in, bias streams)

    def __post_init__(self):
        for name in ("sr", "lr", "input_scaling", "rc_connectivity", "input_connectivity", "bias"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"reservoir {name} must be a finite number, got {v!r}.")
        if (
            isinstance(self.units, bool)
            or not isinstance(self.units, numbers.Integral)
            or self.units <= 0
        ):
            raise ValueError(f"reservoir units must be a positive integer, got {self.units!r}.")
        if self.sr <= 0:
            raise ValueError(f"reservoir spectral radius sr must be > 0, got {self.sr}.")
        if not 0 < self.lr <= 1:
            raise ValueError(f"reservoir leak rate lr must be in (0, 1], got {self.lr}.")
        for name in ("rc_connectivity", "input_connectivity"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"reservoir {name} must be in (0, 1], got {v}.")
        if self.input_scaling < 0:
            raise ValueError(f"reservoir input_scaling must be >= 0, got {self.input_scaling}.")
        if self.bias < 0:
            raise ValueError(f"reservoir bias scale must be >= 0, got {self.bias}.")
        if not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"reservoir seed must be a non-negative integer, got {self.seed!r}.")
        for name in ("units", "seed"):  # canonical types: stable hash, plain JSON
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("sr", "lr", "input_scaling", "rc_connectivity", "input_connectivity", "bias"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def config_hash(self, input_dim: int) -> str:
        """Short stable hex id of (config, input_dim), used to name state files."""
        doc = dict(asdict(self), input_dim=int(input_dim))
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
