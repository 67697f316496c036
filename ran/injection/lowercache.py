"""Reusing the frozen layers below the injected one across forward calls.

Every mechanism that routes only layer L (reservoir slots, additive,
persistent, trained recurrence, attractor) leaves layers 0..L-1 untouched, and
the base model is frozen, so the hidden states that enter layer L are a fixed
function of the token ids, the attention mask and the positions. Evaluating
five controls on identical episodes, validating on the same episodes every few
steps, and comparing mechanisms on the same model and episodes all recompute
them. Inside :func:`reuse_lower`, a model call whose inputs were seen before
skips blocks 0..L-1 (each returns its input unchanged) and layer L receives
the stored tensor instead, so everything from layer L on computes exactly what
a full forward computes: the outputs are bit-identical (tested), only cheaper.

The store is shared by every model of the process whose lower weights are the
same (keyed by a fingerprint of the embeddings and blocks 0..L-1, plus the
layer and the input tensors), least recently used first out beyond
``RAN_LOWER_CACHE_MB`` (default 4096 MB; ``0`` turns reuse off). With
``RAN_LOWER_DISK`` set, a miss is looked up on disk and every stored tensor is also
written there (:mod:`ran.injection.lowerdisk`), so other processes and later runs share it.

Only plain calls are served: ``input_ids`` with an optional attention mask,
positions, ``use_cache`` and ``logits_to_keep``; a call with past key values
(generation), input embeddings, hidden-state outputs or any other argument
runs the model untouched. A hit runs with ``use_cache=False`` (the skipped
blocks would leave holes in a returned cache). Reuse is refused for a handle
without ``lower_cacheable`` (the prefix, which changes the input of every
layer), and for calls with gradients on while a lower weight requires one
(LoRA being trained).
It is never enabled around timing (:func:`ran.evaluation.quality.overhead` and the benchmarks
time full forwards).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ran.injection import lowerdisk
from ran.injection.slots import model_layers

# The keyword arguments a served call may carry (anything else: run untouched).
_SERVED = {"input_ids", "attention_mask", "position_ids", "use_cache", "logits_to_keep"}


@dataclass
class Stats:
    """Counters of the process-wide store (for tests and progress reports)."""

    hits: int = 0
    misses: int = 0
    bypassed: int = 0  # calls inside reuse_lower that could not be served
    evicted: int = 0


_STORE: OrderedDict[str, torch.Tensor] = OrderedDict()
_BYTES = 0
STATS = Stats()
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def budget_bytes() -> int:
    """The store's size limit from ``RAN_LOWER_CACHE_MB`` (default 4096; 0 = reuse off)."""
    raw = os.environ.get("RAN_LOWER_CACHE_MB", "4096")
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"RAN_LOWER_CACHE_MB must be a number of megabytes, got {raw!r}") from None
    if mb < 0:
        raise ValueError(f"RAN_LOWER_CACHE_MB must be >= 0, got {raw!r}")
    return int(mb * 2**20)


def clear() -> None:
    """Empty the store and zero the counters."""
    global _BYTES
    _STORE.clear()
    _BYTES = 0
    for name in ("hits", "misses", "bypassed", "evicted"):
        setattr(STATS, name, 0)


def stored_bytes() -> int:
    return _BYTES


def _put(key: str, h: torch.Tensor, budget: int) -> None:
    global _BYTES
    if h.nbytes > budget:
        return
    _STORE[key] = h
    _BYTES += h.nbytes
    while _BYTES > budget:
        _, old = _STORE.popitem(last=False)
        _BYTES -= old.nbytes
        STATS.evicted += 1


def _lower_tensors(model, layer: int) -> list[torch.Tensor]:
    """The base model's tensors outside its blocks (embeddings, positions, final norm),
    then those of blocks 0..L-1."""
    blocks, _, base = model_layers(model)
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    outside = [p for p in base.parameters() if id(p) not in in_blocks]
    return outside + [p for b in blocks[:layer] for p in b.parameters()]


def fingerprint(model, layer: int, tensors: list[torch.Tensor] | None = None) -> str:
    """A digest of everything below layer L (``tensors``, by default :func:`_lower_tensors`:
    embeddings, positions, blocks 0..L-1, and the final norm, which sits outside the blocks).

    Exact bytes would cost a second per model; instead every tensor contributes
    its shape, dtype, float64 sum and sum of squares and a strided sample of
    its values. It is recomputed whenever a lower tensor was modified in place
    (its version counter moved).
    """
    tensors = _lower_tensors(model, layer) if tensors is None else tensors
    version = (layer, tuple(t._version for t in tensors))
    cached = _FINGERPRINTS.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    h = hashlib.sha256(f"{type(model).__name__}:{layer}".encode())
    with torch.no_grad():
        for t in tensors:
            flat = t.detach().reshape(-1)
            stride = max(1, flat.numel() // 4096)
            x = flat.double()
            stats = torch.stack([x.sum(), (x * x).sum()])
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(stats.numpy().tobytes() + flat[::stride].contiguous().numpy().tobytes())
    digest = h.hexdigest()[:24]
    _FINGERPRINTS[model] = (version, digest)
    return digest


def _input_key(print_: str, kwargs: dict) -> str | None:
    h = hashlib.sha256(print_.encode())
    for name in ("input_ids", "attention_mask", "position_ids"):
        t = kwargs.get(name)
        if t is None:
            h.update(f"{name}:none".encode())
            continue
        if not isinstance(t, torch.Tensor):
            return None
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class _Reuse:
    """The hooks of one :func:`reuse_lower` block on one model."""

    def __init__(self, model, layer: int, budget: int):
        self.model, self.layer, self.budget = model, layer, budget
        self.blocks = model_layers(model)[0]
        lower = _lower_tensors(model, layer)
        self.print = fingerprint(model, layer, lower)
        self.group = f"{type(model).__name__}-L{layer}-{self.print}"  # the disk tier's folder
        # lower weights that require a gradient (LoRA being trained): only no-grad calls served
        self.grad_lower = any(t.requires_grad for t in lower)
        self.key: str | None = None  # the served call's key (None: not served)
        self.hit: torch.Tensor | None = None  # the stored input of layer L on a hit
        self.depth = 0
        self._saved = []
        for b in self.blocks[:layer]:
            self._saved.append((b, b.__dict__.get("forward")))
            b.forward = self._passthrough(b.forward)
        self._hooks = [
            model.register_forward_pre_hook(self._pre, with_kwargs=True),
            model.register_forward_hook(self._post, always_call=True),
            self.blocks[layer].register_forward_pre_hook(self._at_layer, with_kwargs=True),
        ]

    def _passthrough(self, forward):
        def fwd(*args, **kwargs):
            if self.hit is not None:
                return args[0] if args else kwargs["hidden_states"]
            return forward(*args, **kwargs)

        return fwd

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        for b, prev in self._saved:
            if prev is None:
                b.__dict__.pop("forward", None)
            else:
                b.forward = prev

    def _pre(self, module, args, kwargs):
        self.depth += 1
        if self.depth > 1:  # a nested call (e.g. inside a hook) runs untouched
            return None
        grad = self.grad_lower and torch.is_grad_enabled()
        if grad or args or set(kwargs) - _SERVED or kwargs.get("input_ids") is None:
            STATS.bypassed += 1
            return None
        key = _input_key(self.print, kwargs)
        if key is None:
            STATS.bypassed += 1
            return None
        self.key = key
        stored = _STORE.get(key)
        if stored is None:  # the disk tier (another process or session may have stored it)
            stored = lowerdisk.load(self.group, key)
            if stored is not None:
                _put(key, stored, self.budget)
        if stored is None:
            STATS.misses += 1
            return None
        if key in _STORE:
            _STORE.move_to_end(key)
        STATS.hits += 1
        self.hit = stored
        return args, kwargs | {"use_cache": False}

    def _at_layer(self, module, args, kwargs):
        if self.key is None or self.depth != 1:
            return None
        if self.hit is not None:  # replace the passed-through embeddings by layer L's input
            if args:
                return (self.hit, *args[1:]), kwargs
            return args, kwargs | {"hidden_states": self.hit}
        h = args[0] if args else kwargs["hidden_states"]
        if not h.requires_grad:
            stored = h.detach().clone()
            _put(self.key, stored, self.budget)
            lowerdisk.save(self.group, self.key, stored)
        return None

    def _post(self, module, args, output):
        self.depth = max(0, self.depth - 1)
        if self.depth == 0:
            self.key, self.hit = None, None


def _eligible(handle) -> bool:
    return bool(getattr(handle, "lower_cacheable", False)) and budget_bytes() > 0


@contextlib.contextmanager
def reuse_lower(handle):
    """Serve the model calls of this block from the store where their inputs were seen.

    Does nothing (every call runs in full) when ``handle`` is None or not
    ``lower_cacheable``, or the budget is 0. Nested blocks on the same model reuse the outer one.
    """
    if (
        handle is None
        or getattr(handle.model, "_ran_reuse", None) is not None
        or not _eligible(handle)
    ):
        yield
        return
    reuse = _Reuse(handle.model, handle.layer, budget_bytes())
    handle.model._ran_reuse = reuse
    try:
        yield
    finally:
        reuse.close()
        handle.model.__dict__.pop("_ran_reuse", None)
