"""Baselines for the reservoir K/V slots, each a reversible injection with one handle API.

``make(kind, model, cfg)`` returns a handle with the interface of
:class:`ran.surgery.RANHandle` (``trainable_parameters()``, ``state``,
``reset_state()``, ``idle(n)``, ``detach_state()``, ``write_only(...)``,
``set_gate()``, ``remove()``, context manager), so the training and
evaluation code of :mod:`ran.train` runs every kind unchanged:

* ``reservoir``: the RAN itself (:func:`ran.surgery.inject`).
* ``prefix``: M pseudo-token embeddings read out of the reservoir and placed
  before the prompt (:mod:`ran.baselines_prefix`).
* ``additive``: the reservoir readout added to the residual stream after layer L.
* ``persistent``: M learned static K/V slots at layer L, no state (Sukhbaatar
  et al. 2019, "Augmenting self-attention with persistent memory").
* ``attractor``: an inference-time attractor memory (:mod:`ran.baselines_attractor`).
* ``recurrent``: the reservoir K/V slots with a TRAINED recurrence.

Every gate is closed at init (``gate_init = 0``): all kinds are bit-identical
to the untouched model at init and after ``remove()``. All stateful kinds
drive their memory with layer L's attention output (pre output projection)
pooled at the last real token, exactly like the reservoir slots.
"""

from __future__ import annotations

import torch

from ran import slots as S
from ran.generate_state import wrap_generate
from ran.reservoir import Reservoir, leaky_update
from ran.surgery import InjectionConfig, RANHandle, inject
from ran.surgery_state import StateMixin
from ran.write import pool_fixed, real_mask

KINDS = ("reservoir", "prefix", "additive", "persistent", "attractor", "recurrent")


model_layers = S.model_layers  # kept as a public name of this module


class LayerHandle:
    """Common machinery: route some attention layers to ``self._attend``, record masks.

    Subclasses implement ``_attend(layer, module, query, key, value, mask, **kw)``
    and may call :meth:`_drive` at layer L. The routing reuses the per-module
    config view of :mod:`ran.slots`, so unrouted layers are untouched and
    ``remove()`` restores the original configs, hooks and nothing else.
    """

    lower_cacheable = True  # only layer L is routed: ran.lowercache may reuse 0..L-1

    def __init__(self, model, cfg: InjectionConfig, routed: str = "layer"):
        if not isinstance(cfg, InjectionConfig):
            raise ValueError("cfg must be a ran.surgery.InjectionConfig.")
        if cfg.advance != "forward":
            raise ValueError("the baselines advance once per model() call; use advance='forward'.")
        if cfg.pooling not in ("last", "mean") or cfg.write_gate:
            raise ValueError(
                "this mechanism drives its memory by 'last' or 'mean' pooling without a write "
                "gate; the learned write side (ran.write) belongs to the reservoir slots."
            )
        blocks, attns, base = model_layers(model)
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
        self._orig_configs = [(attns[i], attns[i].config) for i in ids]
        S.register()
        for i in ids:
            attns[i].config = S.ConfigView(attns[i].config, self)
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

    @property
    def slots(self) -> torch.nn.Module:
        """The module holding the trainable readout and ``gate`` (RANHandle's name for it)."""
        return self.readout

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The readout and the gate (the reservoir is fixed)."""
        return list(self.readout.parameters())

    def set_gate(self, value: float | torch.Tensor) -> None:
        """Set the gate logit(s) g; ``tanh(g)`` scales the injected signal (0 = closed)."""
        with torch.no_grad():
            self.readout.gate.copy_(torch.as_tensor(value, dtype=self.readout.gate.dtype))

    def save_pretrained(self, directory, model_name: str | None = None, train_config=None):
        """Save the trained adapter (see :func:`ran.adapter.save_pretrained`); returns the folder."""
        from ran.adapter import save_pretrained

        return save_pretrained(self, directory, model_name, train_config)

    # ------------------------------------------------------------------ passes
    def write_only(self, input_ids, attention_mask=None):
        """Run the model only up to layer L's attention, advancing the memory once."""
        S.run_to_layer(self, input_ids, attention_mask)
        return self.state

    def _pre_forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs.get("inputs_embeds")
        self._pad2d = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if ref is not None:
            self._check_batch(ref.shape[0])

    def _post_forward(self, module, args, output):
        self._pad2d = None

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


class ReservoirHandle(StateMixin, LayerHandle):
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


# ----------------------------------------------------------------------------- additive
class AdditiveReadout(torch.nn.Module):
    """``tanh(g) * (W r + c)``: one residual-stream vector (B, d) per state r (B, N)."""

    def __init__(self, units: int, hidden: int, gate_init: float, init_scale: float):
        super().__init__()
        self.proj = torch.nn.Linear(units, hidden)
        torch.nn.init.normal_(self.proj.weight, std=init_scale / units**0.5)
        torch.nn.init.zeros_(self.proj.bias)
        self.gate = torch.nn.Parameter(torch.full((1,), float(gate_init)))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gate) * self.proj(r.to(self.proj.weight.dtype))


class AdditiveHandle(ReservoirHandle):
    """The reservoir readout added to every position's hidden state after block L.

    ``h_t <- h_t + tanh(g) (W r(t) + c)``; r(t) is the state at the start of the
    pass, so the current prompt's write only shows in the next pass. ``g = 0``
    adds exact zeros (bit-identical output).
    """

    def __init__(self, model, cfg: InjectionConfig):
        super().__init__(model, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.readout = AdditiveReadout(
                cfg.reservoir.units, self.hidden, cfg.gate_init, cfg.readout_scale
            ).to(device=self.device, dtype=self.dtype)
        self._add: torch.Tensor | None = None
        self._hooks.append(self.blocks[self.layer].register_forward_hook(self._after_block))

    def _attend(self, layer, module, query, key, value, mask, **kwargs):
        out, weights = self._base_fns[layer](module, query, key, value, mask, **kwargs)
        self._add = self.readout(self._read_state(query.shape[0]))  # (B, d), before the write
        self._drive(out)
        return out, weights

    def _after_block(self, module, args, output):
        add, self._add = self._add, None
        if add is None:
            return output
        hs = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        hs = hs + add[:, None, :].to(hs.dtype)
        return (hs, *output[1:]) if isinstance(output, tuple) else hs


# ----------------------------------------------------------------------------- K/V slot variants
class PersistentSlots(S.SlotReadout):
    """M learned constant K/V slots per KV head (Sukhbaatar et al. 2019); r is ignored."""

    def __init__(self, n_slots, n_kv, head_dim, n_heads, gate_init, init_scale):
        super().__init__(1, n_slots, n_kv, head_dim, n_heads, gate_init, init_scale)
        del self.proj
        self.kv = torch.nn.Parameter(init_scale * torch.randn(2, n_kv, n_slots, head_dim))

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.kv[:, None].expand(2, r.shape[0], *self.kv.shape[1:])  # (2, B, n_kv, M, hd)
        return kv[0], kv[1]


class PersistentHandle(RANHandle):
    """The K/V slot injection with learned static slots: nothing crosses passes.

    The reservoir still runs (so ``state`` works for the controls) but the
    slots never read it, so pass t+1 cannot depend on pass t by construction.
    """

    def __init__(self, model, cfg: InjectionConfig):
        super().__init__(model, cfg)
        old = self.slots
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.slots = PersistentSlots(
                cfg.n_slots, self.slots.shape[1], self.slots.shape[2], old.gate.numel(),
                cfg.gate_init, cfg.readout_scale,
            ).to(device=old.gate.device, dtype=old.gate.dtype)  # fmt: skip


def _check_cell(cell: str) -> None:
    if cell not in ("esn", "gru"):
        raise ValueError(f"recurrent cell must be 'esn' or 'gru', got {cell!r}.")


class TrainedRecurrence(torch.nn.Module):
    """A trainable recurrence of size N in place of the fixed reservoir.

    ``cell="esn"``: the leaky-tanh update of :class:`ran.reservoir.Reservoir`
    with ``W``, ``W_in`` and ``b`` trainable and initialised from the fixed
    reservoir (so at init it is the reservoir). ``cell="gru"``: a GRU cell
    (Cho et al. 2014), r(t+1) = GRU(u(t), r(t)).
    """

    def __init__(self, reservoir: Reservoir, cell: str = "esn"):
        super().__init__()
        _check_cell(cell)
        self.cfg, self.input_dim, self.cell = reservoir.cfg, reservoir.input_dim, cell
        if cell == "esn":
            self.W = torch.nn.Parameter(reservoir.W.clone())
            self.W_in = torch.nn.Parameter(reservoir.W_in.clone())
            self.b = torch.nn.Parameter(reservoir.b.clone())
        else:
            self.gru = torch.nn.GRUCell(reservoir.input_dim, reservoir.units)
            self.gru.to(device=reservoir.W.device, dtype=reservoir.W.dtype)
            self.W = self.gru.weight_hh  # StateMixin reads .W for the device and dtype

    @property
    def units(self) -> int:
        return self.cfg.units

    def zero_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.units, dtype=self.W.dtype, device=self.W.device)

    def step(self, r: torch.Tensor, u: torch.Tensor, gate: torch.Tensor | None = None):
        """r (B, N), u (B, d_in) -> r(t+1) (B, N); ``gate`` (B,) scales the update per row."""
        u, r = u.to(self.W.dtype), r.to(self.W.dtype)
        if self.cell == "gru":
            h = self.gru(u, r)
            return h if gate is None else r + gate.to(h.dtype)[:, None] * (h - r)
        pre = r @ self.W.T + u @ self.W_in.T + self.b
        return leaky_update(r, pre, self.cfg.lr, gate)


class RecurrentHandle(RANHandle):
    """The reservoir K/V slots with a trained recurrence (the trained-recurrence reference)."""

    def __init__(self, model, cfg: InjectionConfig, cell: str = "esn"):
        _check_cell(cell)  # before injecting: a failed constructor leaves no hooks behind
        super().__init__(model, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.reservoir = TrainedRecurrence(self.reservoir, cell)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Readout, gate, the learned write side (if any) and every recurrence weight."""
        return super().trainable_parameters() + list(self.reservoir.parameters())

    def _state_hash(self) -> str:
        return f"{super()._state_hash()}-{self.reservoir.cell}"


# ----------------------------------------------------------------------------- factory
def make(kind: str, model, cfg: InjectionConfig | None = None, **options):
    """Inject the memory mechanism ``kind`` into ``model`` and return its handle.

    Parameters
    ----------
    kind : {"reservoir", "prefix", "additive", "persistent", "attractor", "recurrent"}
    model : a GPT-2, Qwen2 or Llama causal LM.
    cfg : InjectionConfig, optional
        Layer, M (``n_slots``: slots or prefix tokens), reservoir, pooling, gate
        and readout init; ``attractor`` uses only ``layer`` and ``pooling``.
    **options
        ``recurrent``: ``cell`` ("esn" or "gru"); ``attractor``: ``attractor``
        (an :class:`ran.baselines_attractor.AttractorConfig`).
    """
    cfg = cfg or InjectionConfig()
    if kind not in KINDS:
        raise ValueError(f"unknown baseline kind {kind!r}; choose one of {', '.join(KINDS)}.")
    allowed = {"recurrent": {"cell"}, "attractor": {"attractor"}}.get(kind, set())
    if set(options) - allowed:
        raise ValueError(f"kind {kind!r} takes no options {sorted(set(options) - allowed)}.")
    if cfg.query_gate and kind not in ("reservoir", "recurrent"):
        raise ValueError(f"query_gate applies to the reservoir's K/V slots, not to kind {kind!r}.")
    if kind == "attractor":
        from ran.baselines_attractor import AttractorHandle

        return AttractorHandle(model, cfg, **options)
    if kind == "prefix":
        from ran.baselines_prefix import PrefixHandle

        return PrefixHandle(model, cfg)
    builders = {
        "reservoir": inject,
        "additive": AdditiveHandle,
        "persistent": PersistentHandle,
        "recurrent": RecurrentHandle,
    }
    return builders[kind](model, cfg, **options)


def state_width(handle) -> int:
    """Width of ``handle.state`` rows (the reservoir size N, or the attractor memory size)."""
    return int(getattr(handle, "state_dim", None) or handle.reservoir.units)


def trainable_count(handle) -> int:
    """Number of trainable scalars of a handle."""
    return sum(p.numel() for p in handle.trainable_parameters())
