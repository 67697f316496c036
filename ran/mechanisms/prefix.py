"""Prefix pseudo-tokens: the reservoir readout written as M input embeddings.

Soft prompt / prefix tuning (Lester et al. 2021; Li & Liang 2021) with the
embeddings produced by the reservoir's readout, the working variant of the
original RAN implementation; ``ran.mechanisms.registry.make("prefix", ...)`` builds it.
"""

from __future__ import annotations

import torch

from ran.injection import slots as S
from ran.injection.config import InjectionConfig
from ran.injection.handle import ReservoirHandle
from ran.mechanisms.adapter import AdapterMixin
from ran.mechanisms.registry import register


class PrefixReadout(torch.nn.Module):
    """Reservoir state (B, N) -> M prefix embeddings (B, M, d); gate per (layer, head).

    ``token_emb`` (M, d) are the embeddings the empty state reads out (the bias);
    ``emb_rms`` is the RMS of the whole embedding table, the output scale, so the
    scale does not depend on which M tokens were drawn.
    """

    def __init__(self, units, n_layers, n_heads, gate_init, init_scale, token_emb, emb_rms):
        super().__init__()
        n_prefix, hidden = token_emb.shape
        emb_rms = float(emb_rms)
        self.shape = (n_prefix, hidden)
        self.proj = torch.nn.Linear(units, n_prefix * hidden)
        torch.nn.init.normal_(self.proj.weight, std=init_scale / units**0.5)
        with torch.no_grad():  # the empty state reads out real token embeddings, never zeros
            self.proj.bias.copy_(token_emb.reshape(-1).float() / emb_rms)
        self.register_buffer("emb_rms", torch.tensor(emb_rms))  # token-embedding scale
        self.gate = torch.nn.Parameter(torch.full((n_layers, n_heads), float(gate_init)))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = self.proj(r.to(self.proj.weight.dtype)) * self.emb_rms
        return x.view(r.shape[0], *self.shape)


@register("prefix", trained=True, lower_reuse=False)
class PrefixHandle(AdapterMixin, ReservoirHandle):
    """M pseudo-token embeddings read out of the reservoir, placed before every prompt.

    Each pass first runs the M prefix embeddings alone through the model
    (positions 0..M-1, causal) and keeps every layer's prefix keys/values
    (after RoPE); then in every layer each prompt query attends over
    ``[prefix ; tokens]`` blended as ``plain + tanh(g) (with_prefix - plain)``.
    A causal model never lets the prefix see the prompt, so with ``tanh(g) = 1``
    this is exactly a concatenated prefix, except that the prompt keeps its own
    positions (the prefix occupies 0..M-1 instead of shifting the prompt by M),
    and at ``g = 0`` it is bit-identical to the untouched model, with a nonzero
    gradient for g. The prefix never enters the prompt's KV cache.

    The readout's bias starts at the embeddings of M random vocabulary tokens
    (prefix tuning's initialisation from real tokens), so an empty state reads
    out a real prefix. Started at zero, the prefix pass ran on an all-zero
    residual stream, where every RMSNorm's backward multiplies the gradient by
    about 1/sqrt(eps): through 15 layers of smollm2 that overflowed float32 and
    turned the readout's gradient into NaN at the first step with an open gate.
    """

    # lower_reuse=False: the prefix changes the input of every layer

    def __init__(self, model, cfg: InjectionConfig):
        super().__init__(model, cfg, routed="all")
        emb = model.get_input_embeddings().weight.detach()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            init_ids = torch.randint(emb.shape[0], (cfg.n_slots,))
            self.readout = PrefixReadout(
                cfg.reservoir.units,
                len(self.blocks),
                self.n_heads,
                cfg.gate_init,
                cfg.readout_scale,
                emb[init_ids],
                emb.float().pow(2).mean().sqrt(),
            ).to(device=self.device, dtype=self.dtype)
        self._prefix_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._capturing = False
        self._hooks.insert(0, model.register_forward_pre_hook(self._run_prefix, with_kwargs=True))

    def _run_prefix(self, module, args, kwargs):
        """Before the prompt pass: the prefix pass, capturing each layer's K/V."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs.get("inputs_embeds")
        if ref is None:
            return
        emb = self.readout(self._read_state(ref.shape[0]))  # (B, M, d)
        self._prefix_kv, self._capturing = {}, True
        try:
            self.base_model(inputs_embeds=emb, use_cache=False)
        except S.StopAfterLayer:
            pass
        finally:
            self._capturing = False

    def _attend(self, layer, module, query, key, value, mask, **kwargs):
        base_fn = self._base_fns[layer]
        if self._capturing:  # the prefix pass: plain causal attention, keep K/V (B, n_kv, M, hd)
            self._prefix_kv[layer] = (key, value)
            out = base_fn(module, query, key, value, mask, **kwargs)
            if self._stop_after and layer == self.layer:
                raise S.StopAfterLayer
            return out
        plain, weights = base_fn(module, query, key, value, mask, **kwargs)
        pk, pv = self._prefix_kv[layer]
        aug = S.slot_attention(
            query, key, value, pk, pv, mask, kwargs.get("scaling"), kwargs.get("dropout", 0.0)
        )  # (B, Q, H, hd)
        out = S.gated_output(plain, aug, self.readout.gate[layer])
        if layer == self.layer:
            self._drive(out)
        return out, weights

    def _post_forward(self, module, args, output):
        super()._post_forward(module, args, output)
        self._prefix_kv = {}
