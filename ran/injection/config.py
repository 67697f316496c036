"""Where and how a memory enters the model: :class:`InjectionConfig`.

Shared by every mechanism of :mod:`ran.mechanisms` (layer L, M slots, the fixed
reservoir, the write side's pooling and gates, the readout's init).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ran.injection.write import POOLINGS
from ran.reservoir.config import ReservoirConfig

DRIVE_SOURCES = ("output", "input")  # layer L's gated attention output, or its normalised input
READOUTS = ("kv", "hidden", "decoded")  # ran.injection: slots, hidden, decoded

ADVANCES = ("forward", "generate")


@dataclass(frozen=True)
class InjectionConfig:
    """Where and how the reservoir enters the model.

    ``advance="forward"``: every model() call (each decoding step of
    generate() included) reads slots from r(t) and then advances the state
    once. ``advance="generate"``: a generate() call reads the same r(t) at all
    its steps and advances once when it returns, driven by its last forward
    pass (the last token fed to the model); plain model() calls outside
    generate() still advance once each.
    """

    layer: int | None = None  # injected layer L; None -> num_layers // 2 (a mid layer)
    n_slots: int = 8  # M reservoir key/value slots per KV head
    reservoir: ReservoirConfig = field(default_factory=ReservoirConfig)  # the fixed ESN
    pooling: str = (
        "last"  # drive: "last" token, "mean", learned "attn" pooling, or per-"token" steps
    )
    gate_init: float = 0.0  # per-head gate logit; tanh(0) = 0 keeps the model bit-exact
    advance: str = "forward"  # "forward": one step per model() call; "generate": one per generate()
    normalize_drive: bool = True  # u / ||u||: W_in u has RMS input_scaling whatever the width d
    readout_scale: float = 0.1  # readout weight std is readout_scale / sqrt(N); bias starts at 0
    seed: int = 0  # seed of the readout initialisation (the reservoir has its own seed)
    query_gate: bool = False  # per-token gate sigmoid(w . x_t + c) on the slots (x_t: layer input)
    write_gate: bool = (
        False  # learned gate on how strongly a pass (or token) writes (ran.injection.write)
    )
    write_gate_init: float = 2.0  # initial write-gate bias: sigmoid(2) = 0.88 open, -40 closed
    recurrence: bool = True  # False: W = 0, the state is a projection of the last write only
    drive_source: str = (
        "output"  # what drives r: layer L's gated attention "output", or its "input"
    )
    readout: str = "kv"  # K/V slots ("kv"), pseudo-tokens ("hidden"), the decoded state ("decoded")

    def __post_init__(self):
        if self.layer is not None and (not isinstance(self.layer, int) or self.layer < 0):
            raise ValueError(f"layer must be None or a non-negative integer, got {self.layer!r}.")
        if not isinstance(self.n_slots, int) or self.n_slots < 1:
            raise ValueError(f"n_slots must be a positive integer, got {self.n_slots!r}.")
        if not isinstance(self.reservoir, ReservoirConfig):
            raise ValueError("reservoir must be a ran.reservoir.ReservoirConfig.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}.")
        if self.advance not in ADVANCES:
            raise ValueError(f"advance must be one of {', '.join(ADVANCES)}, got {self.advance!r}.")
        if self.drive_source not in DRIVE_SOURCES:
            raise ValueError(
                f"drive_source must be one of {', '.join(DRIVE_SOURCES)}, got {self.drive_source!r}."
            )
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {self.readout!r}.")
        if self.readout == "decoded" and self.drive_source != "input":
            raise ValueError("readout='decoded' decodes the layer input: set drive_source='input'.")
        if self.pooling == "token" and self.advance == "generate":
            raise ValueError("pooling='token' steps once per token; use advance='forward'.")
        for name in ("gate_init", "readout_scale", "write_gate_init"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or v != v or abs(v) == float("inf"):
                raise ValueError(f"{name} must be a finite number, got {v!r}.")
        if self.readout_scale < 0:
            raise ValueError(f"readout_scale must be >= 0, got {self.readout_scale}.")
