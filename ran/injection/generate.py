"""How a carried memory state follows ``generate()``: expanded rows, reordered beams, one row back.

transformers' ``generate()`` runs ``B * e`` rows for a prompt batch of B
(``e = max(num_beams, num_return_sequences)``; the rows of prompt i are
``i*e .. i*e + e - 1``, made by ``repeat_interleave(e, dim=0)`` in
``_expand_inputs_for_generation``). :func:`wrap_generate` makes the handle's
state (B, N) follow exactly what the KV cache does:

* expanded: with the inputs, the state becomes ``state.repeat_interleave(e)``
  (B * e, N), so every sequence starts from its prompt's state;
* reordered: after every beam-search step transformers reorders the cache
  with ``beam_idx``, the parent row of each surviving beam; the state rows are
  reordered with the same indices, so the state a beam reads at every step is
  the one its own history produced (``advance="forward"``: one step per
  model() call, each decoding step included);
* collapsed: after the call the handle holds one row per prompt again, the
  state of that prompt's first returned sequence. Beam search returns
  finished hypotheses, so the state of each finished beam is kept from the
  step that finished it, selected exactly as transformers selects the beams.

With ``advance="generate"`` the state is read unchanged at every step and
advanced once at the end, by the drive of the last forward pass of that
first returned sequence. The three generation methods involved
(``_expand_inputs_for_generation``, ``_get_running_beams_for_next_iteration``,
``_update_finished_beams``) are shadowed on the model instance only for the
duration of one generate() call: nothing outlives it, so ``remove()`` only
restores ``generate``. If generate() raises, the handle keeps the state it
had before the call.
"""

from __future__ import annotations

import functools
import inspect

import torch

PATCHED = (
    "_expand_inputs_for_generation",
    "_get_running_beams_for_next_iteration",
    "_update_finished_beams",
)
# Per-row tensors of a handle that follow the rows (those a handle lacks are skipped).
ROW_ATTRS = ("_state", "last_drive", "last_write_gate", "slot_mass", "read_gate")
GEN = "_gen_drive"  # advance="generate": what the final step is driven by (a tensor or a tuple)


def wrap_generate(handle, generate):
    """``generate`` with the handle's state expanded, beam-reordered and collapsed (module doc).

    Parameters
    ----------
    handle : a handle with ``model``, ``config``, ``_state`` ((B, N) or None),
        ``last_drive`` and ``_check_batch``; with ``config.advance ==
        "generate"`` also ``_gen_depth``, ``_gen_drive`` and ``_advance``.
    generate : the bound ``model.generate`` to wrap.
    """

    @functools.wraps(generate)
    def wrapped(*args, **kwargs):
        track = _Tracker(handle)
        if track.once:
            handle._gen_depth += 1
        saved = track.install()
        try:
            out = generate(*args, **kwargs)
        except BaseException:
            track.restore_start()
            raise
        finally:
            track.uninstall(saved)
            if track.once:
                handle._gen_depth -= 1
        track.collapse()
        return out

    return wrapped


class _Tracker:
    """Bookkeeping of the handle's per-row tensors inside one generate() call."""

    def __init__(self, handle):
        self.h = handle
        self.once = getattr(handle.config, "advance", "forward") == "generate"
        self.start = {n: getattr(handle, n, None) for n in ROW_ATTRS}  # before the call
        self.batch = None  # B, the prompt batch
        self.expand = 1  # e, rows per prompt
        self.arity = 1  # parts of the handle's _gen_drive (tensor: 1, tuple: its length)
        self.running = None  # running_beam_indices (B, nb, L) of the current beam step
        self.finished = None  # beam search: name -> (B, nb, ...) rows of the finished beams

    # ------------------------------------------------------------------ install
    def install(self) -> dict:
        model = self.h.model
        saved = {n: model.__dict__[n] for n in PATCHED if n in model.__dict__}
        for name in PATCHED:
            setattr(model, name, getattr(self, name.lstrip("_"))(getattr(model, name)))
        return saved

    def uninstall(self, saved: dict) -> None:
        for name in PATCHED:
            self.h.model.__dict__.pop(name, None)
        self.h.model.__dict__.update(saved)

    # ------------------------------------------------------------------ the three hooks
    def expand_inputs_for_generation(self, orig):
        @functools.wraps(orig)
        def expand(*args, **kwargs):
            a = _arguments(orig, args, kwargs)
            ref = a.get("input_ids")
            ref = ref if ref is not None else kwargs.get("inputs_embeds")
            if ref is not None:
                self.batch = ref.shape[0]
                self.h._check_batch(self.batch)  # the prompts must match the state's rows
            out = orig(*args, **kwargs)
            self.expand = e = int(a.get("expand_size", 1))
            if self.h._state is not None and e > 1:
                self.h._state = self.h._state.repeat_interleave(e, dim=0)  # (B*e, N)
            return out

        return expand

    def get_running_beams_for_next_iteration(self, orig):
        @functools.wraps(orig)
        def running(*args, **kwargs):
            out = orig(*args, **kwargs)
            self.running = out[2]  # running_beam_indices (B, nb, L)
            return out

        return running

    def update_finished_beams(self, orig):
        @functools.wraps(orig)
        def finished(*args, **kwargs):
            a = _arguments(orig, args, kwargs)
            col = a["cur_len"] - a["decoder_prompt_len"]  # this step's column of the beam indices
            topk = a["topk_running_beam_indices"]  # (B, K, L); column col: parent row in 0..B*nb-1
            old = a["beam_indices"]  # (B, nb, L) of the finished beams so far
            b, nb, k = old.shape[0], old.shape[1], topk.shape[1]
            # Candidates: the K top continuations, each with the rows of its parent after this
            # step's forward pass (the state that produced the logits of its last token).
            parents = topk[:, :, col].long()  # (B, K)
            cand = {n: r[parents] for n, r in self._rows(b * nb).items()}  # (B, K, ...)
            self._start_finished(b, nb, cand)
            # Tag each hypothesis with its position in [finished ; candidates] in one extra
            # trailing column of the beam indices: the method gathers it with the same top-nb
            # selection it applies to the sequences, which says which rows to keep.
            tag_old = torch.arange(nb, device=old.device, dtype=old.dtype).expand(b, nb)
            tag_new = torch.arange(nb, nb + k, device=topk.device, dtype=topk.dtype).expand(b, k)
            a["beam_indices"] = torch.cat([old, tag_old[..., None]], dim=-1)
            a["topk_running_beam_indices"] = torch.cat([topk, tag_new[..., None]], dim=-1)
            seqs, scores, picked, done = orig(**a)
            keep = picked[..., -1].long()  # (B, nb), positions in [finished ; candidates]
            for name in list(self.finished):
                fin, new = self.finished[name], cand.get(name)
                if new is None or new.shape[2:] != fin.shape[2:]:
                    del self.finished[name]  # shape varies with the pass (e.g. slot_mass): drop
                    continue
                merged = torch.cat([fin, new.to(fin.dtype)], dim=1)  # (B, nb + K, ...)
                index = keep.view(b, nb, *([1] * (merged.dim() - 2)))
                self.finished[name] = torch.take_along_dim(merged, index, dim=1)
            # The running beams of the next step: reorder the state rows like the KV cache.
            if self.running is None:
                raise RuntimeError("beam search did not select its running beams before this step")
            beam_idx = self.running[:, :, col].reshape(-1).long()  # (B*nb,)
            if self.h._state is not None:
                self.h._state = self.h._state[beam_idx]
            return seqs, scores, picked[..., :-1], done

        return finished

    # ------------------------------------------------------------------ rows
    def _names(self) -> tuple[str, ...]:
        # advance="generate": the state is the prompt's at every step, only the drive moves
        return ROW_ATTRS[1:] if self.once else ROW_ATTRS

    def _rows(self, n_rows: int) -> dict[str, torch.Tensor]:
        """The handle's current per-row tensors with ``n_rows`` rows, by name."""
        rows = {n: getattr(self.h, n, None) for n in self._names()}
        if self.once:
            gen = self.h._gen_drive
            parts = gen if isinstance(gen, tuple) else (gen,)
            self.arity = len(parts)
            rows |= {f"{GEN}.{i}": p for i, p in enumerate(parts)}
        return {
            n: v for n, v in rows.items() if isinstance(v, torch.Tensor) and v.shape[0] == n_rows
        }

    def _start_finished(self, b, nb, cand) -> None:
        """Placeholders of the beams not finished yet: the prompt's state, zeros elsewhere."""
        if self.finished is not None:
            return
        self.finished = {
            n: torch.zeros_like(c[:, :1]).expand(b, nb, *c.shape[2:]) for n, c in cand.items()
        }
        start = self.start["_state"]
        if "_state" in self.finished and start is not None:
            self.finished["_state"] = start[:, None].expand_as(self.finished["_state"])

    def restore_start(self) -> None:
        """generate() raised: the handle keeps the rows it had before the call."""
        for name, value in self.start.items():
            if hasattr(self.h, name):
                setattr(self.h, name, value)
        if self.once:
            self.h._gen_drive = None

    def collapse(self) -> None:
        """Back to one row per prompt: the rows of each prompt's first returned sequence."""
        h, e = self.h, self.expand
        if self.finished is not None:  # beam search: the best finished beam
            best = {n: f[:, 0] for n, f in self.finished.items()}  # (B, ...)
        elif self.batch is not None:  # greedy / sampling: row i*e is prompt i's first sequence
            best = {n: v[::e] for n, v in self._rows(self.batch * e).items()}
        else:
            best = {}
        for name in self._names():
            value = getattr(h, name, None)
            if name in best:
                setattr(h, name, best[name])
            elif isinstance(value, torch.Tensor) and value.shape[0] != (self.batch or 0):
                setattr(h, name, None)  # a per-pass diagnostic that cannot follow the beams
        if not self.once:
            return
        # advance="generate": one step from the prompts' states, driven by the best sequence
        h._gen_drive, h._state = None, self.start["_state"]
        parts = tuple(best.get(f"{GEN}.{i}") for i in range(self.arity))
        if parts[0] is not None:
            h._advance(self.start["_state"], *parts)


def _arguments(fn, args, kwargs) -> dict:
    """The call arguments of ``fn`` by name (transformers passes them as keywords)."""
    if not args:
        return dict(kwargs)
    return dict(inspect.signature(fn).bind(*args, **kwargs).arguments)
