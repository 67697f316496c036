"""Reservoir slots inside one attention layer: readout, gated attention, drive.

The mechanics behind :func:`ran.mechanisms.reservoir_slots.inject`, one code path for GPT-2, Qwen2
and Llama under eager and sdpa attention:

* :class:`SlotReadout` maps a reservoir state ``r`` (B, N) to ``M`` key/value
  slots per KV head, (B, n_kv, M, hd) each, and holds the per-head gate.
* :func:`slot_attention` lets every query attend over ``[slots ; tokens]``
  (keys after RoPE; slots carry no position and never enter the KV cache) with
  a mask built from the one transformers passed to the layer: slots are
  always visible, the token part is the layer's own mask (bool for sdpa,
  additive float for eager), or top-left causal when sdpa dropped the mask.
* :func:`gated_output` blends ``plain + tanh(g) * (augmented - plain)``, where
  ``plain`` comes from the model's ORIGINAL attention function, so the output
  is bit-identical to the untouched layer when ``g = 0``. With a query gate
  (``query_dim > 0``) the blend of token t and head h is further multiplied by
  ``sigmoid(w_h . x_t + c_h)``, x_t the layer's (normalised) input at token t:
  the readout can open the memory for some tokens (a question) and keep it
  shut for others (plain text).
* the reservoir drive ``u`` is pooled from the gated output (pre ``o_proj``) by
  :mod:`ran.injection.write`.
* :class:`ConfigView` is the per-module config that routes layer L (only) to
  the registered ``"ran"`` attention function; every other layer and the mask
  creation keep using the model's own config.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

ATTN_NAME = "ran"
SUPPORTED_TYPES = ("gpt2", "qwen2", "llama")
SUPPORTED_IMPLS = ("eager", "sdpa")


class SlotReadout(torch.nn.Module):
    """Learned readout from the reservoir state to slot keys/values, and the gate.

    Parameters
    ----------
    units : int
        Reservoir size N.
    n_slots, n_kv, head_dim, n_heads : int
        M slots per KV head of width ``head_dim``; the gate has one entry per
        query head (``n_heads``).
    gate_init : float
        Initial gate logit g; ``tanh(0) = 0`` closes the gate exactly.
    init_scale : float
        Std of the readout weights is ``init_scale / sqrt(N)`` (bias zero).
    query_dim : int
        Width of the layer input for the query gate (0: no query gate).
    """

    def __init__(
        self, units, n_slots, n_kv, head_dim, n_heads, gate_init=0.0, init_scale=0.1, query_dim=0
    ):
        super().__init__()
        self.shape = (n_slots, n_kv, head_dim)
        self.proj = torch.nn.Linear(units, 2 * n_kv * n_slots * head_dim)
        torch.nn.init.normal_(self.proj.weight, std=init_scale / units**0.5)
        torch.nn.init.zeros_(self.proj.bias)
        self.gate = torch.nn.Parameter(torch.full((n_heads,), float(gate_init)))
        self.query_gate = None
        if query_dim:
            self.query_gate = torch.nn.Linear(query_dim, n_heads)  # starts at sigmoid(0) = 1/2
            torch.nn.init.zeros_(self.query_gate.weight)
            torch.nn.init.zeros_(self.query_gate.bias)

    def select(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Per-token, per-head openness (B, Q, H) in (0, 1) from the layer input x (B, Q, d);
        None without a query gate."""
        if self.query_gate is None:
            return None
        if x is None:
            raise RuntimeError("the query gate needs the layer input, which was not captured")
        return torch.sigmoid(self.query_gate(x.to(self.query_gate.weight.dtype)))

    def slot_bias(self) -> torch.Tensor | None:
        """Per-head logit bias (H,) on the slots, or None (the free K/V readout has none)."""
        return None

    def calibrate(self, handle, tokenizer, texts: list[str]) -> None:
        """Fit what the readout derives from real text before training (nothing here)."""

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot keys and values, each (B, n_kv, M, hd), from r (B, N)."""
        m, n_kv, hd = self.shape
        kv = self.proj(r.to(self.proj.weight.dtype)).view(r.shape[0], 2, n_kv, m, hd)
        return kv[:, 0], kv[:, 1]


def _expand_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv, S, hd) -> (B, n_kv * n_rep, S, hd), like transformers' repeat_kv."""
    if n_rep == 1:
        return x
    b, n_kv, s, hd = x.shape
    return x[:, :, None].expand(b, n_kv, n_rep, s, hd).reshape(b, n_kv * n_rep, s, hd)


def slot_mask(mask: torch.Tensor | None, q_len: int, kv_len: int, n_slots: int, device=None):
    """The mask over ``[slots ; tokens]``: (B|1, 1, Q, M + KV), bool or additive float.

    ``mask`` is what transformers gave the layer: None (sdpa with no padding:
    causal when Q > 1, which like transformers' sdpa also hides keys beyond Q,
    full when Q = 1), a bool mask (True = attend) or an additive float mask
    (eager). Slots are always visible, so no query row is ever fully masked.
    """
    if mask is None:
        if q_len == 1:
            return None  # every token key is visible, and so are the slots
        q = torch.arange(q_len, device=device)[:, None]
        k = torch.arange(kv_len, device=device)[None, :]
        mask = (k <= q)[None, None]  # (1, 1, Q, KV), top-left causal
    mask = mask[..., :kv_len]
    shape = (*mask.shape[:-1], n_slots)
    lead = mask.new_ones(shape) if mask.dtype == torch.bool else mask.new_zeros(shape)
    return torch.cat([lead, mask], dim=-1)


def _slot_logits_mask(mask, q_len, kv_len, n_slots, device, slot_bias, dtype):
    """:func:`slot_mask`, plus a per-head logit bias (H,) on the slot columns when given
    (then an additive float mask (B|1, H, Q, M + KV))."""
    full = slot_mask(mask, q_len, kv_len, n_slots, device)
    if slot_bias is None:
        return full
    if full is None:
        full = torch.zeros(1, 1, q_len, n_slots + kv_len, device=device, dtype=dtype)
    elif full.dtype == torch.bool:
        full = torch.zeros(full.shape, device=device, dtype=dtype).masked_fill(~full, float("-inf"))
    else:
        full = full.to(dtype)
    lead = torch.zeros(n_slots + kv_len, device=device, dtype=dtype)
    lead[:n_slots] = 1.0
    return full + slot_bias.to(dtype)[None, :, None, None] * lead  # (B|1, H, Q, M+KV)


def _join(n_heads: int, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``[slots ; tokens]`` for every query head, (B, H, M+KV, hd). Slots come per KV head or
    per query head (``slots.shape[1]`` in {n_kv, H})."""
    return torch.cat(
        [
            _expand_kv(slots.to(tokens.dtype), n_heads // slots.shape[1]),
            _expand_kv(tokens, n_heads // tokens.shape[1]),
        ],
        2,
    )


def slot_attention(query, key, value, slot_k, slot_v, mask, scaling, dropout=0.0, slot_bias=None):
    """Attention of every query over ``[slots ; tokens]``.

    Parameters
    ----------
    query : Tensor (B, H, Q, hd)
    key, value : Tensor (B, n_kv, KV, hd), after RoPE and the cache update.
    slot_k, slot_v : Tensor (B, n_kv, M, hd), or (B, H, M, hd): one slot per query head.
    mask : the layer's mask (see :func:`slot_mask`).
    scaling : float or None
        Logit scale (``hd ** -0.5`` when None).
    slot_bias : Tensor (H,) or None
        Added to every slot logit (:class:`ran.slots_decoded.DecodedReadout`).

    Returns
    -------
    Tensor (B, Q, H, hd), the layout attention functions return.
    """
    q_len = query.shape[2]
    h = query.shape[1]
    k, v = _join(h, slot_k, key), _join(h, slot_v, value)  # (B, H, M+KV, hd)
    full = _slot_logits_mask(
        mask, q_len, key.shape[2], slot_k.shape[2], query.device, slot_bias, query.dtype
    )
    out = F.scaled_dot_product_attention(
        query, k, v, attn_mask=full, dropout_p=dropout, scale=scaling
    )  # (B, H, Q, hd)
    return out.transpose(1, 2)


def slot_mass(query, key, slot_k, mask, scaling, slot_bias=None) -> torch.Tensor:
    """Attention probability mass on the slots, (B, H, Q), computed explicitly."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    k = _join(query.shape[1], slot_k, key)  # (B, H, M+KV, hd)
    logits = (query @ k.transpose(-1, -2)) * scale  # (B, H, Q, M+KV)
    full = _slot_logits_mask(
        mask, query.shape[2], key.shape[2], slot_k.shape[2], query.device, slot_bias, logits.dtype
    )
    if full is not None:
        if full.dtype == torch.bool:
            logits = logits.masked_fill(~full, float("-inf"))
        else:
            logits = logits + full
    return logits.softmax(-1)[..., : slot_k.shape[2]].sum(-1)


def gated_output(plain, augmented, gate, select=None):
    """``plain + tanh(g) * s * (augmented - plain)``.

    plain, augmented (B, Q, H, hd); g (H,); s (B, Q, H) per-token openness from
    :meth:`SlotReadout.select`, or None (s = 1).
    """
    g = torch.tanh(gate).to(plain.dtype)[:, None]  # (H, 1)
    if select is not None:
        g = g * select.to(plain.dtype)[..., None]  # (B, Q, H, 1)
    return plain + g * (augmented - plain)


def read_openness(gate, select=None, shape=None) -> torch.Tensor:
    """How far the read is open per token, ``tanh(g_h) * select`` averaged over the heads:
    (B, Q) float32 from the gate logits (H,) and the query gate's ``select`` (B, Q, H); without
    one, ``tanh(g_h)`` averaged, broadcast to ``shape`` (B, Q)."""
    if select is None:
        return torch.tanh(gate).mean(-1).float().expand(*shape)
    return (select * torch.tanh(gate)).mean(-1).float()


def normalize_drive(u: torch.Tensor, input_connectivity: float = 1.0, eps: float = 1e-6):
    """Scale u (B, d) so that ``W_in u`` has per-unit RMS ``input_scaling``.

    ``W_in`` has +-input_scaling entries with density c, so
    ``E[(W_in u)_i^2] = input_scaling^2 * c * ||u||^2``: dividing u by
    ``sqrt(c) * ||u||`` makes input_scaling mean the same pre-activation scale
    for every model width d (a zero drive stays zero).
    """
    norm = u.pow(2).sum(-1, keepdim=True).add(eps).sqrt()
    return u / (norm * input_connectivity**0.5)


def base_attention(attn_module, impl: str):
    """The attention function the untouched module would call under ``impl``."""
    mod = sys.modules[type(attn_module).__module__]
    eager = mod.eager_attention_forward
    if impl == "eager" and getattr(attn_module, "reorder_and_upcast_attn", False):
        # GPT-2's upcast path is chosen inside the module when the config says "eager".
        def upcast(module, query, key, value, attention_mask, **_):
            return module._upcast_and_reordered_attn(query, key, value, attention_mask)

        return upcast
    return mod.ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager)


class StopAfterLayer(Exception):
    """Raised inside layer L by a handle's ``write_only()`` once the memory is written."""


def run_to_layer(handle, input_ids, attention_mask=None) -> None:
    """Run ``handle.model`` only as far as layer L: the handle raises :class:`StopAfterLayer`
    there while ``handle._stop_after`` is set (the cheap pass that only writes the memory)."""
    handle._stop_after = True
    try:
        handle.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except StopAfterLayer:
        pass
    finally:
        handle._stop_after = False


def model_layers(model):
    """(decoder blocks, their attention modules, the base model) of a supported causal LM."""
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    if mtype not in SUPPORTED_TYPES:
        raise ValueError(
            f"unsupported architecture {mtype!r}; RAN supports the model types "
            f"{', '.join(SUPPORTED_TYPES)}."
        )
    base = model.transformer if mtype == "gpt2" else model.model
    blocks = list(base.h if mtype == "gpt2" else base.layers)
    return blocks, [b.attn if mtype == "gpt2" else b.self_attn for b in blocks], base


def target_layer(model, layer: int | None, n_blocks: int) -> int:
    """The injected layer (None -> the middle one), after checking that ``model`` can take it."""
    layer = n_blocks // 2 if layer is None else layer
    if not 0 <= layer < n_blocks:
        raise ValueError(f"layer {layer} is out of range; the model has layers 0..{n_blocks - 1}.")
    impl = model.config._attn_implementation
    if impl not in SUPPORTED_IMPLS:
        raise ValueError(
            f"attention implementation {impl!r} is not supported; use one of "
            f"{', '.join(SUPPORTED_IMPLS)}."
        )
    if getattr(model, "_ran_handle", None) is not None:
        raise ValueError(
            "this model already carries a reservoir; remove() it before injecting again."
        )
    return layer


class ConfigView:
    """A per-module view of the model config whose ``_attn_implementation`` is ``"ran"``.

    Every other attribute reads through to the shared config, so the module
    behaves exactly as before except for which attention function it calls.
    """

    _attn_implementation = ATTN_NAME

    def __init__(self, base, injector):
        self.__dict__["_base"] = base
        self.__dict__["_ran_injector"] = injector

    def __getattr__(self, name):
        if name in ("_base", "_ran_injector"):
            raise AttributeError(name)
        return getattr(self._base, name)


def ran_attention(module, query, key, value, attention_mask, **kwargs):
    """The function registered as ``"ran"``: hands the call to the module's injector."""
    return module.config._ran_injector(module, query, key, value, attention_mask, **kwargs)


def register() -> None:
    """Register :func:`ran_attention` in transformers' AttentionInterface (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, ran_attention)
