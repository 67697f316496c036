"""The registry of memory mechanisms: each declares what it is, in its own module.

A mechanism is a :class:`ran.injection.handle.MemoryHandle` subclass registered
with :func:`register` (PEFT's tuner registry is the model: nothing central is
edited to add one). Its declaration says whether it is trained, which keyword
options ``make`` accepts (name -> type; a dataclass type is read back with
:func:`ran.util.configio.from_dict` when an adapter is loaded), whether
:mod:`ran.injection.lowercache` may reuse the layers below L, whether it takes
``InjectionConfig.query_gate`` and its named variants (compared side by side in
notebook 04). :func:`make` builds one by name.

The mechanisms (one module each, imported by :mod:`ran.mechanisms`):
``reservoir`` (:mod:`~ran.mechanisms.reservoir_slots`), ``prefix``, ``additive``,
``persistent``, ``attractor``, ``recurrent``. Every gate is closed at init
(``gate_init = 0``): all are bit-identical to the untouched model at init and
after ``remove()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ran.injection.config import InjectionConfig
from ran.injection.handle import MemoryHandle


@dataclass(frozen=True)
class Mechanism:
    """What a registered mechanism is (see the module docstring)."""

    kind: str
    cls: type
    trained: bool = True  # False: nothing to train (evaluated as injected)
    lower_reuse: bool = True  # layers 0..L-1 untouched: ran.injection.lowercache may reuse them
    options: dict = field(default_factory=dict)  # option name -> type
    query_gate: bool = False  # accepts InjectionConfig.query_gate
    variants: Callable | None = None  # (gain) -> [(label, options)] compared in notebook 04


_REGISTRY: dict[str, Mechanism] = {}


def register(kind: str, **declared):
    """Class decorator: register a MemoryHandle subclass as the mechanism ``kind``."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, MemoryHandle)):
            raise TypeError(f"a mechanism must subclass ran.injection.handle.MemoryHandle: {cls!r}")
        if kind in _REGISTRY and _REGISTRY[kind].cls is not cls:
            raise ValueError(f"mechanism kind {kind!r} is already registered")
        spec = Mechanism(kind, cls, **declared)
        cls.kind, cls.lower_cacheable = kind, spec.lower_reuse
        _REGISTRY[kind] = spec
        return cls

    return deco


def unregister(kind: str) -> None:
    """Forget the mechanism ``kind`` (tests that register a toy one)."""
    _REGISTRY.pop(kind, None)


def kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_REGISTRY)


def get(kind: str) -> Mechanism:
    """The declaration of ``kind``; ValueError naming the known kinds otherwise."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown mechanism kind {kind!r}; choose one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[kind]


def make(kind: str, model, cfg: InjectionConfig | None = None, **options):
    """Inject the memory mechanism ``kind`` into ``model`` and return its handle.

    Parameters
    ----------
    kind : a registered kind (:func:`kinds`).
    model : a GPT-2, Qwen2 or Llama causal LM.
    cfg : InjectionConfig, optional
        Layer, M (``n_slots``: slots or prefix tokens), reservoir, pooling, gate
        and readout init (a mechanism may use only some of them).
    **options
        The options the mechanism declares (e.g. ``recurrent``: ``cell``).
    """
    cfg = cfg or InjectionConfig()
    if kind not in _REGISTRY:
        raise ValueError(f"unknown baseline kind {kind!r}; choose one of {', '.join(_REGISTRY)}.")
    spec = _REGISTRY[kind]
    if set(options) - set(spec.options):
        raise ValueError(
            f"kind {kind!r} takes no options {sorted(set(options) - set(spec.options))}."
        )
    if cfg.query_gate and not spec.query_gate:
        raise ValueError(f"query_gate applies to the reservoir's K/V slots, not to kind {kind!r}.")
    return spec.cls(model, cfg, **options)


def state_width(handle) -> int:
    """Width of ``handle.state`` rows (the reservoir size N, or the attractor memory size)."""
    return int(getattr(handle, "state_dim", None) or handle.reservoir.units)


def trainable_count(handle) -> int:
    """Number of trainable scalars of a handle."""
    return sum(p.numel() for p in handle.trainable_parameters())
