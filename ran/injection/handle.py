"""The handle every memory mechanism subclasses: :class:`MemoryHandle`.

A handle owns one injection into one model. API (every mechanism of
:mod:`ran.mechanisms` has it):

* lifecycle: ``remove()`` (idempotent; restores the attention configs, hooks and
  ``generate``), ``with handle: ...`` (removes on exit);
* state: ``state`` (validated setter), ``reset_state()``, ``detach_state()``,
  ``idle(n)``, ``save_state(path)`` / ``load_state(path)`` (:mod:`ran.injection.state`);
* passes: ``model(...)`` reads and then advances the memory once,
  ``write_only(ids, mask)`` runs the model only up to layer L and advances it;
* training: ``trainable_parameters()``, ``set_gate(g)``, ``options()`` (the
  JSON-able options its mechanism was made with), ``kind`` (its registry name,
  set by :func:`ran.mechanisms.registry.register`).

:class:`LayerHandle` adds the routing of some attention layers to ``_attend``
and the pooled drive of layer L; :class:`ReservoirHandle` adds the fixed
reservoir of ``cfg.reservoir`` as the memory.
"""

from __future__ import annotations

import torch

from ran.injection import slots as S
from ran.injection.config import InjectionConfig
from ran.injection.generate import wrap_generate
from ran.injection.state import StateMixin
from ran.injection.write import pool_fixed, real_mask
from ran.reservoir.esn import Reservoir


class MemoryHandle(StateMixin):
    """Base of every handle: routing, hooks, lifecycle, batch checks and the state API.

    Subclasses set the attributes their forward passes need, then call
    :meth:`_install` with the attention modules to route through ``self``
    (a registered attention function calls ``handle(module, q, k, v, mask)``).
    """

    kind: str | None = None  # the registry name (ran.mechanisms.registry.register sets it)
    lower_cacheable = False  # declared per mechanism at registration (ran.injection.lowercache)

    def _install(self, model, attns) -> None:
        """Route ``attns`` through this handle; hook the model's forward and generate()."""
        self._orig_configs = [(a, a.config) for a in attns]
        S.register()
        for a in attns:
            a.config = S.ConfigView(a.config, self)
        self._hooks = [
            model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
            model.register_forward_hook(self._post_forward, always_call=True),
        ]
        self._orig_generate = model.__dict__.get("generate")
        model.generate = wrap_generate(self, model.generate)  # the state follows generate()'s rows
        model._ran_handle = self
        self._removed = False

    # ------------------------------------------------------------------ lifecycle
    def remove(self) -> None:
        """Undo the injection: original attention configs, no hooks, original generate()."""
        if self._removed:
            return
        for attn, conf in self._orig_configs:
            attn.config = conf
        for h in self._hooks:
            h.remove()
        if self._orig_generate is None:
            self.model.__dict__.pop("generate", None)
        else:
            self.model.generate = self._orig_generate
        self.model.__dict__.pop("_ran_handle", None)
        self._removed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def options(self) -> dict:
        """The JSON-able keyword options of ``make(kind, ...)`` that rebuild this handle."""
        return {}

    def calibrate(self, tokenizer, texts: list[str]) -> None:
        """Set what a mechanism derives from real text before training (``ran.training.train``
        calls it on a fresh run); a no-op unless a mechanism overrides it."""

    def set_gate(self, value: float | torch.Tensor) -> None:
        """Set the gate logit(s) g (scalar or one per query head); tanh(g) is the blend."""
        with torch.no_grad():
            self.slots.gate.copy_(torch.as_tensor(value, dtype=self.slots.gate.dtype))

    # ------------------------------------------------------------------ passes
    def write_only(self, input_ids, attention_mask=None):
        """Run the model only up to layer L's attention and advance the memory once.

        Returns the new state.
        """
        S.run_to_layer(self, input_ids, attention_mask)
        return self._state

    def _pre_forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs.get("inputs_embeds")
        self._pad2d = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if ref is not None:
            self._check_batch(ref.shape[0])

    def _post_forward(self, module, args, output):
        self._pad2d = None


class LayerHandle(MemoryHandle):
    """Common machinery: route some attention layers to ``self._attend``, record masks.

    Subclasses implement ``_attend(layer, module, query, key, value, mask, **kw)``
    and may call :meth:`_drive` at layer L. The routing reuses the per-module
    config view of :mod:`ran.injection.slots`, so unrouted layers are untouched and
    ``remove()`` restores the original configs, hooks and nothing else.
    """

    def __init__(self, model, cfg: InjectionConfig, routed: str = "layer"):
        if not isinstance(cfg, InjectionConfig):
            raise ValueError("cfg must be a ran.injection.config.InjectionConfig.")
        if cfg.advance != "forward":
            raise ValueError("the baselines advance once per model() call; use advance='forward'.")
        if cfg.pooling not in ("last", "mean") or cfg.write_gate:
            raise ValueError(
                "this mechanism drives its memory by 'last' or 'mean' pooling without a write "
                "gate; the learned write side (ran.injection.write) belongs to the reservoir slots."
            )
        blocks, attns, base = S.model_layers(model)
        layer = S.target_layer(model, cfg.layer, len(blocks))
        self.model, self.config, self.layer = model, cfg, layer
        self.blocks, self.base_model = blocks, base
        n_heads = model.config.num_attention_heads
        self.n_heads = n_heads
        self.n_kv = getattr(model.config, "num_key_value_heads", None) or n_heads
        self.head_dim = getattr(attns[layer], "head_dim", model.config.hidden_size // n_heads)
        self.input_dim = n_heads * self.head_dim  # width of the drive u
        self.hidden = model.config.hidden_size
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.last_drive: torch.Tensor | None = None
        self._pad2d = None
        self._stop_after = False
        ids = range(len(blocks)) if routed == "all" else [layer]
        self._routed = {id(attns[i]): i for i in ids}
        self._base_fns = {
            i: S.base_attention(attns[i], model.config._attn_implementation) for i in ids
        }
        self._install(model, [attns[i] for i in ids])

    @property
    def slots(self) -> torch.nn.Module:
        """The module holding the trainable readout and ``gate`` (RANHandle's name for it)."""
        return self.readout

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The readout and the gate (the reservoir is fixed)."""
        return list(self.readout.parameters())

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        layer = self._routed[id(module)]
        return self._attend(layer, module, query, key, value, attention_mask, **kwargs)

    def _pooled(self, out: torch.Tensor) -> torch.Tensor:
        """Layer L's attention output (B, Q, H, hd) pooled into the drive u (B, H*hd)."""
        real = real_mask(self._pad2d, out.shape[0], out.shape[1], out)  # (B, Q)
        u = pool_fixed(out, None, real, self.config.pooling)[0]  # (B, H*hd)
        if self.config.normalize_drive:
            u = S.normalize_drive(u, self.config.reservoir.input_connectivity)
        return u


class ReservoirHandle(LayerHandle):
    """A LayerHandle whose memory is the fixed reservoir of ``cfg.reservoir``."""

    def __init__(self, model, cfg: InjectionConfig, routed: str = "layer"):
        super().__init__(model, cfg, routed)
        self.reservoir = Reservoir(cfg.reservoir, self.input_dim, dtype=self.dtype).to(self.device)
        self._state: torch.Tensor | None = None

    def _read_state(self, batch: int) -> torch.Tensor:
        return self._state if self._state is not None else self.reservoir.zero_state(batch)

    def _drive(self, out: torch.Tensor) -> None:
        """Advance r(t) with layer L's output; stop here inside write_only()."""
        u = self._pooled(out)
        self.last_drive = u
        self._state = self.reservoir.step(self._read_state(u.shape[0]), u)
        if self._stop_after:
            raise S.StopAfterLayer
