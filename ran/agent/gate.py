"""The output gate: a logistic-regression head that decides, after every pass, to emit or stay silent.

Its features are those the agent has after a pass (:mod:`ran.agent.passes`): the
final hidden state at the pass's last token (zeros for an idle tick, which has
no text), the reservoir state r(t) the pass left (the *stateful* gate; the
*stateless* gate leaves it out) and a one-hot of the pass kind. They are
standardised with the training mean and standard deviation, and
``p = sigmoid(w . z + b)``; the agent emits when ``p >= threshold``.

A gate is saved as ``gate.safetensors`` (weights, mean, std) and ``gate.json``
(threshold, feature spec, the agent identity it was trained for, scores), both
atomically; :meth:`OutputGate.load` refuses a gate of another adapter or model
with one sentence. :class:`AlwaysEmit` is the always-emit baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ran.agent.config import AgentError
from ran.agent.passes import PASS_KINDS
from ran.util.atomic import atomic_save_safetensors, atomic_write_json
from ran.util.stats import fit_logistic

FORMAT = "ran-agent-gate"
WEIGHTS, CONFIG = "gate.safetensors", "gate.json"


def features(
    hidden, state, kind: str, hidden_size: int, units: int, use_state: bool
) -> torch.Tensor:
    """The gate's raw feature vector: ``[hidden (d), state (N) if use_state, one-hot kind (3)]``."""
    if kind not in PASS_KINDS:
        raise ValueError(f"unknown pass kind {kind!r}; kinds are {', '.join(PASS_KINDS)}.")
    h = torch.zeros(hidden_size) if hidden is None else hidden.detach().float().reshape(-1)
    parts = [h]
    if use_state:
        parts.append(torch.zeros(units) if state is None else state.detach().float().reshape(-1))
    onehot = torch.zeros(len(PASS_KINDS))
    onehot[PASS_KINDS.index(kind)] = 1.0
    parts.append(onehot)
    return torch.cat(parts)


class OutputGate:
    """A trained emit-or-silent head (see the module docstring).

    Parameters
    ----------
    weight : Tensor (D,)
    bias : float
    mean, std : Tensor (D,)
        Standardisation of the raw features.
    threshold : float
        Emit when the probability is at least this.
    hidden_size, units : int
        Widths of the hidden-state and reservoir-state parts.
    use_state : bool
        Whether r(t) is among the features (the stateful gate).
    identity : str, optional
        :func:`ran.agent.checkpoint.agent_identity` of the handle it was trained on.
    info : dict, optional
        Anything to keep with it (probe, scores).
    """

    def __init__(self, weight, bias, mean, std, threshold, hidden_size, units, use_state,
                 identity=None, info=None):  # fmt: skip
        self.weight = torch.as_tensor(weight, dtype=torch.float32).reshape(-1)
        self.bias = float(bias)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        self.threshold = float(threshold)
        self.hidden_size, self.units = int(hidden_size), int(units)
        self.use_state = bool(use_state)
        self.identity = identity
        self.info = dict(info or {})
        want = self.hidden_size + (self.units if self.use_state else 0) + len(PASS_KINDS)
        for name in ("weight", "mean", "std"):
            if getattr(self, name).numel() != want:
                raise AgentError(
                    f"the gate's {name} has {getattr(self, name).numel()} values, expected {want}."
                )
        if not 0.0 <= self.threshold <= 1.0:
            raise AgentError(f"the gate threshold must be in [0, 1], got {self.threshold}.")

    @property
    def name(self) -> str:
        return "stateful" if self.use_state else "stateless"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of raw features ``x`` (D,) or (T, D), in float64: standardised features of
        an unusual pass can be large, and a float32 dot product of large terms depends on the
        kernel's summation order (it differed between a gate and its reloaded copy)."""
        z = (x.double() - self.mean.double()) / self.std.double()
        return z @ self.weight.double() + self.bias

    def prob(self, hidden, state, kind: str) -> float:
        x = features(hidden, state, kind, self.hidden_size, self.units, self.use_state)
        return float(torch.sigmoid(self.logits(x)))

    def check(self, identity: str | None, hidden_size: int, units: int) -> None:
        """Refuse a gate made for another adapter or model (one sentence)."""
        if (self.hidden_size, self.units) != (hidden_size, units):
            raise AgentError(
                f"the output gate reads hidden size {self.hidden_size} and {self.units} reservoir "
                f"units, but this agent has {hidden_size} and {units}; train a gate for it."
            )
        if identity is not None and self.identity is not None and self.identity != identity:
            raise AgentError(
                f"the output gate was trained for another adapter or model (identity "
                f"{self.identity[:12]}, this agent's is {identity[:12]}); train a gate for it."
            )

    # ------------------------------------------------------------------ disk
    def save(self, folder) -> Path:
        """Write ``gate.safetensors`` then ``gate.json`` into ``folder`` (atomically)."""
        from ran.util.results import to_jsonable

        folder = Path(folder)
        tensors = {"weight": self.weight, "mean": self.mean, "std": self.std}
        atomic_save_safetensors(tensors, folder / WEIGHTS, metadata={"format": FORMAT})
        doc = {
            "format": FORMAT,
            "bias": self.bias,
            "threshold": self.threshold,
            "hidden_size": self.hidden_size,
            "units": self.units,
            "use_state": self.use_state,
            "kinds": list(PASS_KINDS),
            "identity": self.identity,
            "info": to_jsonable(self.info),
        }
        atomic_write_json(folder / CONFIG, doc)
        return folder

    @classmethod
    def load(cls, folder) -> OutputGate:
        """Read a gate written by :meth:`save`; a missing or foreign folder is one sentence."""
        from safetensors.torch import load_file

        folder = Path(folder)
        path = folder / CONFIG
        if not path.is_file() or not (folder / WEIGHTS).is_file():
            raise AgentError(f"there is no output gate in {folder} ({CONFIG} and {WEIGHTS}).")
        try:
            doc = json.loads(path.read_text())
            t = load_file(str(folder / WEIGHTS))
        except Exception as err:  # noqa: BLE001 - json and safetensors raise several types
            raise AgentError(
                f"the output gate in {folder} is not readable ({type(err).__name__})."
            ) from None
        if doc.get("format") != FORMAT:
            raise AgentError(f"{path} is not an output gate (no format {FORMAT!r}).")
        return cls(t["weight"], doc["bias"], t["mean"], t["std"], doc["threshold"],
                   doc["hidden_size"], doc["units"], doc["use_state"], doc.get("identity"),
                   doc.get("info"))  # fmt: skip


class AlwaysEmit:
    """The always-emit baseline (and the gate of an agent that should answer everything)."""

    name = "always"
    threshold = 0.5
    use_state = False
    identity = None

    def prob(self, hidden, state, kind: str) -> float:
        return 1.0

    def check(self, identity, hidden_size, units) -> None:
        pass


def fit(X: torch.Tensor, y: torch.Tensor, weight_decay: float, steps: int = 200):
    """L2-regularised logistic regression on standardised ``X`` (T, D) (float32); returns
    ``(weight, bias, mean, std)`` (:func:`ran.util.stats.fit_logistic`)."""
    return fit_logistic(X.float(), y, weight_decay, steps)
