"""The persistent reservoir state of an injected model (part of every :class:`ran.injection.handle.MemoryHandle`).

The state r(t) (B, N) belongs to the handle, not to a prompt: it survives
across forward passes and generate() calls until ``reset_state()``. It can be
set (validated), idled (unprompted passes with u = 0), detached (truncated
BPTT) and saved to / loaded from a safetensors file whose metadata carries the
reservoir's config hash, so a state is never loaded into a different reservoir.
"""

from __future__ import annotations

from pathlib import Path

import torch

STATE_FORMAT = "ran-state-v1"


class StateMixin:
    """State handling; expects ``self.reservoir`` (Reservoir) and ``self._state``."""

    reservoir: object
    _state: torch.Tensor | None

    @property
    def state(self) -> torch.Tensor | None:
        """The reservoir state r(t), (B, N), or None before the first pass (zeros)."""
        return self._state

    @state.setter
    def state(self, value: torch.Tensor | None) -> None:
        self._state = None if value is None else self._validated(value, "state")

    def _validated(self, value, what: str) -> torch.Tensor:
        n = self.reservoir.units
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[1] != n:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"the {what} must be a tensor of shape (batch, {n}), got {shape}.")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"the {what} contains NaN or Inf values.")
        w = self.reservoir.W
        return value.to(device=w.device, dtype=w.dtype)

    def _check_batch(self, batch: int) -> None:
        if self._state is not None and self._state.shape[0] != batch:
            raise ValueError(
                f"the batch size changed from {self._state.shape[0]} to {batch} while the "
                f"reservoir holds a state; call reset_state() (or set .state) first."
            )

    def reset_state(self) -> None:
        """Forget the state (the next pass starts from zeros)."""
        self._state = None
        self.last_drive = None

    def detach_state(self) -> None:
        """Cut the graph behind the state (truncated BPTT; bounds memory)."""
        if self._state is not None:
            self._state = self._state.detach()
        if self.last_drive is not None:
            self.last_drive = self.last_drive.detach()

    def idle(self, n: int, batch_size: int | None = None) -> torch.Tensor:
        """Advance the state by ``n`` unprompted passes (u = 0); returns the new state.

        ``batch_size`` is needed only before the first pass (default 1).
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"idle needs a non-negative integer number of passes, got {n!r}.")
        r = self._state
        if r is None:
            r = self.reservoir.zero_state(batch_size or 1)
        elif batch_size is not None:
            self._check_batch(batch_size)
        u = torch.zeros(r.shape[0], self.reservoir.input_dim, dtype=r.dtype, device=r.device)
        for _ in range(n):
            r = self.reservoir.step(r, u)
        self._state = r
        return r

    def _state_hash(self) -> str:
        return self.reservoir.cfg.config_hash(self.reservoir.input_dim)

    def save_state(self, path: str | Path) -> Path:
        """Write the state (detached) to a safetensors file tagged with the reservoir hash.

        The write is atomic (:func:`ran.util.atomic.atomic_save_safetensors`): a crash
        leaves either the previous file or the new one, never a torn file.
        """
        from ran.util.atomic import atomic_save_safetensors

        if self._state is None:
            raise ValueError("there is no reservoir state to save yet; run a pass or idle() first.")
        path = Path(path)
        meta = {"format": STATE_FORMAT, "reservoir_hash": self._state_hash()}
        return atomic_save_safetensors({"state": self._state}, path, metadata=meta)

    def load_state(self, path: str | Path, batch_size: int | None = None) -> torch.Tensor:
        """Load a state saved by :meth:`save_state` for the same reservoir; returns it.

        Refused, each with one sentence: a file that is not a state file, a state
        of another reservoir or model (the config hash covers the reservoir
        config, its seed and size, and the model width it is driven by), a
        state of the wrong width, and one whose batch is not ``batch_size``
        (when given).
        """
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = fh.get_tensor("state") if "state" in fh.keys() else None
        except Exception:  # noqa: BLE001 - safetensors raises several error types
            raise ValueError(f"{path} is not a readable RAN state file.") from None
        if meta.get("format") != STATE_FORMAT or state is None:
            raise ValueError(f"{path} is not a RAN state file (no {STATE_FORMAT} tag).")
        if meta.get("reservoir_hash") != self._state_hash():
            raise ValueError(
                f"{path} was saved from a different reservoir (hash {meta.get('reservoir_hash')}, "
                f"this one is {self._state_hash()}: another reservoir config, seed, size or "
                f"model width)."
            )
        state = self._validated(state, f"state in {path}")
        if batch_size is not None and state.shape[0] != batch_size:
            raise ValueError(
                f"the state in {path} has batch size {state.shape[0]}, expected {batch_size}."
            )
        self._state = state
        return self._state
