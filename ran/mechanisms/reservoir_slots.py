"""Inject a fixed random reservoir into one attention layer of a pretrained LM.

``inject(model, InjectionConfig(...))`` returns a :class:`RANHandle`. At layer
L every query attends over ``M`` reservoir slots (keys/values read out of the
reservoir state r(t)) besides its tokens, through a per-head gate that is
closed at init, so the injected model is bit-identical to the untouched one
until the gate opens. After each pass the reservoir is driven once by layer
L's (gated) attention output pooled at the last real token:
``r(t+1) = step(r(t), u(t))``. The state belongs to the handle and persists
across forward passes, prompts and generate() calls. The mechanics live in
:mod:`ran.injection.slots`.

Example
-------
>>> with inject(model, InjectionConfig()) as h:  # doctest: +SKIP
...     model(**batch_1); model(**batch_2)       # pass 2 reads what pass 1 wrote
"""

from __future__ import annotations

import torch

from ran.injection import slots as S
from ran.injection.config import InjectionConfig
from ran.injection.handle import MemoryHandle
from ran.injection.write import WriteSide, real_mask
from ran.mechanisms.adapter import AdapterMixin
from ran.mechanisms.registry import register
from ran.reservoir.esn import Reservoir


def inject(model, cfg: InjectionConfig | None = None) -> RANHandle:
    """Inject reservoir slots into one attention layer of ``model`` (in place).

    Parameters
    ----------
    model : a GPT-2, Qwen2 or Llama causal LM from transformers.
    cfg : InjectionConfig, optional

    Returns
    -------
    RANHandle
        Owns the reservoir state, the trainable readout and gate; ``remove()``
        (or leaving a ``with`` block) restores the model exactly.
    """
    return RANHandle(model, cfg or InjectionConfig())


@register("reservoir", trained=True, lower_reuse=True, query_gate=True)
class RANHandle(AdapterMixin, MemoryHandle):
    """The injected reservoir of one model: state, readout/gate, hooks.

    generate() works in every mode (greedy, sampling, ``num_return_sequences >
    1``, beam search) with a carried state (B, N) or none: each generated
    sequence starts from its prompt's state, expanded like the KV cache, and
    under beam search the state rows are reordered with the beams, so each
    beam reads the state its own history produced. After the call the handle
    holds one row per prompt again: the state of that prompt's first returned
    sequence (the best beam; rows of sampled sequences that ended early went
    on reading the padding generate() appends). See :mod:`ran.injection.generate`.

    Attributes
    ----------
    model : the injected model.
    config : InjectionConfig
    layer : int, the injected layer L.
    reservoir : Reservoir (fixed buffers ``W``, ``W_in``, ``b``).
    slots : SlotReadout (the only trainable parameters: readout and gate).
    last_drive : Tensor (B, d) or None, the drive u of the last pass (in the graph).
    slot_mass : Tensor (B, H, Q) or None, attention mass on the slots of the
        last pass at layer L, recorded while ``record_slot_mass`` is True.
    read_gate : Tensor (B, Q) or None, how far the read was open at each token of the
        last pass, ``tanh(g_h) * sigmoid(w_h . x_t + c_h)`` averaged over the heads h
        (float32; ``tanh(g_h)`` without a query gate), recorded while ``record_read_gate``
        is True.
    """

    def __init__(self, model, cfg: InjectionConfig):
        blocks, attns, _ = S.model_layers(model)
        layer = S.target_layer(model, cfg.layer, len(blocks))
        self.model, self.config, self.layer = model, cfg, layer
        attn = attns[layer]
        n_heads = model.config.num_attention_heads
        n_kv = getattr(model.config, "num_key_value_heads", None) or n_heads
        head_dim = getattr(attn, "head_dim", model.config.hidden_size // n_heads)
        p = next(model.parameters())
        self.input_dim = n_heads * head_dim  # width of the drive u
        if cfg.drive_source == "input":
            if model.config.hidden_size % n_heads:
                raise ValueError("drive_source='input' needs hidden_size divisible by the heads.")
            self.input_dim = model.config.hidden_size
        self.reservoir = Reservoir(cfg.reservoir, self.input_dim, dtype=p.dtype).to(p.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.slots = self._readout(model, attn, cfg, n_kv, head_dim, n_heads)
            self.slots.to(device=p.device, dtype=p.dtype)
        self.write = WriteSide(
            model.config.hidden_size, n_heads, cfg.pooling, cfg.write_gate, cfg.write_gate_init
        ).to(device=p.device, dtype=p.dtype)
        if not cfg.recurrence:
            self.reservoir.W.zero_()  # the "no recurrence" reference: r(t+1) = f(u(t)) only
        self._state: torch.Tensor | None = None
        self.last_drive: torch.Tensor | None = None
        self.last_write_gate: torch.Tensor | None = None  # (B,) or (B, Q) of the last pass
        self.slot_mass: torch.Tensor | None = None
        self.record_slot_mass = False
        self.read_gate: torch.Tensor | None = None
        self.record_read_gate = False
        self._pad2d = None  # 2-D attention mask of the running top-level forward call
        self._gen_depth = 0  # > 0 inside generate() when advance == "generate"
        self._gen_drive = None
        self._stop_after = False
        self._attn_in = None  # layer L's input hidden states (captured for the query gate)
        self._base_fn = S.base_attention(attn, model.config._attn_implementation)
        self._attn = attn
        self._install(model, [attn])
        if cfg.query_gate or self.write.needs_input or cfg.drive_source == "input":
            self._hooks.append(attn.register_forward_pre_hook(self._attn_input, with_kwargs=True))

    def _readout(self, model, attn, cfg, n_kv, head_dim, n_heads):
        """The read side: K/V slots straight from r, or pseudo-tokens (ran.injection.hidden)."""
        query_dim = model.config.hidden_size if cfg.query_gate else 0
        if cfg.readout == "kv":
            return S.SlotReadout(
                cfg.reservoir.units, cfg.n_slots, n_kv, head_dim, n_heads, cfg.gate_init,
                cfg.readout_scale, query_dim,
            )  # fmt: skip
        if cfg.readout == "decoded":
            from ran.injection.decoded import DecodedReadout, input_norm_weight

            o_proj = attn.o_proj.weight if hasattr(attn, "o_proj") else attn.c_proj.weight.T
            block = S.model_layers(model)[0][self.layer]
            return DecodedReadout(
                self.reservoir.W_in, cfg.reservoir.lr, o_proj.detach(), input_norm_weight(block),
                n_heads, head_dim, cfg.gate_init, query_dim,
            )  # fmt: skip
        from ran.injection.hidden import HiddenReadout, kv_projector

        w_in = self.reservoir.W_in if cfg.drive_source == "input" else None
        return HiddenReadout(
            cfg.reservoir.units, cfg.n_slots, n_heads, model.config.hidden_size,
            kv_projector(attn, model.config.model_type), w_in, cfg.gate_init, cfg.readout_scale,
            query_dim,
        )  # fmt: skip

    def calibrate(self, tokenizer, texts: list[str]) -> None:
        """The readout's own calibration (the decoded slot's gain; nothing for K/V slots)."""
        self.slots.calibrate(self, tokenizer, texts)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The readout and the gates, then the learned write side (if any): the only new
        trainable parameters (the reservoir's W and W_in are fixed buffers)."""
        return list(self.slots.parameters()) + list(self.write.parameters())

    # ------------------------------------------------------------------ passes
    def _pre_forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        emb = kwargs.get("inputs_embeds")
        ref = ids if ids is not None else emb
        self._pad2d = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if ref is not None and self._state is not None:
            self._check_batch(ref.shape[0])

    def _attn_input(self, module, args, kwargs):
        self._attn_in = kwargs.get("hidden_states", args[0] if args else None)

    def _post_forward(self, module, args, output):
        self._pad2d = None
        self._attn_in = None

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        """Layer L's attention (called through the registered ``"ran"`` function)."""
        b = query.shape[0]  # query (B, H, Q, hd); key/value (B, n_kv, KV, hd)
        self._check_batch(b)
        plain, weights = self._base_fn(module, query, key, value, attention_mask, **kwargs)
        r = self._state if self._state is not None else self.reservoir.zero_state(b)
        slot_k, slot_v = self.slots(r)  # (B, n_kv, M, hd) each
        scaling = kwargs.get("scaling")
        bias = self.slots.slot_bias()  # (H,) or None
        aug = S.slot_attention(
            query,
            key,
            value,
            slot_k,
            slot_v,
            attention_mask,
            scaling,
            kwargs.get("dropout", 0.0),
            bias,
        )  # fmt: skip  (B, Q, H, hd)
        select = self.slots.select(self._attn_in)  # (B, Q, H) or None
        out = S.gated_output(plain, aug, self.slots.gate, select)  # (B, Q, H, hd)
        if self.record_slot_mass:
            with torch.no_grad():
                self.slot_mass = S.slot_mass(query, key, slot_k, attention_mask, scaling, bias)
        if self.record_read_gate:
            with torch.no_grad():
                self.read_gate = S.read_openness(self.slots.gate, select, out.shape[:2])
        self._write(out)
        if self._stop_after:
            raise S.StopAfterLayer
        return out, weights

    def _norm(self, u: torch.Tensor) -> torch.Tensor:
        if not self.config.normalize_drive:
            return u
        return S.normalize_drive(u, self.config.reservoir.input_connectivity)

    def _write(self, out: torch.Tensor) -> None:
        """Drive the reservoir with the pass's gated output ``out`` (B, Q, H, hd)."""
        b, q_len, h = out.shape[:3]
        real = real_mask(self._pad2d, b, q_len, out)  # (B, Q)
        source = self.config.drive_source == "input"
        x = self._attn_in if self.write.needs_input or source else None  # (B, Q, d) or None
        if source:  # the layer input, split like the heads: (B, Q, H, d / H)
            out = x.to(out.dtype).reshape(b, q_len, h, -1)
        if self.config.pooling == "token":
            u = self._norm(out.reshape(b, q_len, -1))  # (B, Q, H*hd), one drive per token
            self.last_drive = u[:, -1]
            self._advance_tokens(u, self.write.token_gates(x, real))
            return
        u, xbar = self.write.pool(out, x, real)  # (B, H*hd), (B, d) or None
        u = self._norm(u)
        gate = self.write.pass_gate(xbar)  # (B,) or None
        self.last_drive, self.last_write_gate = u, gate
        if self._gen_depth > 0:
            self._gen_drive = (u, gate)  # advanced once when generate() returns
        else:
            self._advance(self._state, u, gate)

    def _advance(self, r: torch.Tensor | None, u: torch.Tensor, gate=None) -> None:
        if r is None:
            r = self.reservoir.zero_state(u.shape[0])
        self._state = self.reservoir.step(r, u, gate)

    def _advance_tokens(self, u: torch.Tensor, gates: torch.Tensor) -> None:
        """One reservoir step per token: u (B, Q, D), gates (B, Q) (0 at padding: no step)."""
        r = self._state if self._state is not None else self.reservoir.zero_state(u.shape[0])
        for t in range(u.shape[1]):
            r = self.reservoir.step(r, u[:, t], gates[:, t])
        self.last_write_gate = gates
        self._state = r
