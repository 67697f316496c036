"""The on-disk tier of :mod:`ran.injection.lowercache`: layer L's inputs shared across processes and runs.

The frozen layers below the injected one compute the same hidden states for the same
token ids, mask and positions in every run on the same model and layer, whatever the
mechanism (all but the prefix) or the reservoir seed. Runs that share an episode set
(the same probe parameters and seed, hence the same episodes and batch order: the
reservoir seeds of notebook 05, the mechanisms of notebook 04) need them once. The
in-process store of :mod:`ran.injection.lowercache` shares them between the runs of one
process; this tier shares them between processes (the workers of :mod:`ran.training.jobs`)
and between sessions.

Layout: ``<RAN_LOWER_DISK>/<model class>-L<layer>-<fingerprint>/<key>.safetensors``,
where the fingerprint digests the embeddings and blocks 0..L-1
(:func:`ran.injection.lowercache.fingerprint`) and the key the input tensors of the call. Each
file holds one tensor, written to a temporary file and renamed over the target (atomic;
no fsync: it is a cache) and read memory-mapped (``safetensors.safe_open``), so
concurrent writers of the same key are harmless.

``RAN_LOWER_DISK`` names the folder (unset, empty or ``0``: off); the job layer sets it
for its workers (``build/cache/lower``). ``RAN_LOWER_DISK_MB`` bounds what one process
writes (default 8192); delete the folder to reclaim the space.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

ENV, BUDGET_ENV = "RAN_LOWER_DISK", "RAN_LOWER_DISK_MB"


@dataclass
class DiskStats:
    """Counters of this process's disk tier (for tests and benchmarks)."""

    hits: int = 0
    writes: int = 0
    bytes_written: int = 0


STATS = DiskStats()


def root() -> Path | None:
    """The tier's folder from ``RAN_LOWER_DISK`` (None: off)."""
    raw = os.environ.get(ENV, "").strip()
    return None if raw in ("", "0") else Path(raw)


def budget_bytes() -> int:
    raw = os.environ.get(BUDGET_ENV, "8192")
    try:
        return int(float(raw) * 2**20)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV} must be a number of megabytes, got {raw!r}") from None


def clear_stats() -> None:
    STATS.hits = STATS.writes = STATS.bytes_written = 0


def path_for(folder: Path, group: str, key: str) -> Path:
    """The file of one call: ``folder/<group>/<key>.safetensors`` (group: model, layer and
    fingerprint; key: the digest of the call's inputs)."""
    return folder / group / f"{key[:40]}.safetensors"


def load(group: str, key: str) -> torch.Tensor | None:
    """The stored input of layer L for this call, or None (tier off, or not stored)."""
    folder = root()
    if folder is None:
        return None
    path = path_for(folder, group, key)
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            h = fh.get_tensor("h")
    except (OSError, RuntimeError, ValueError):  # another process's file being replaced
        return None
    STATS.hits += 1
    return h


def save(group: str, key: str, h: torch.Tensor) -> None:
    """Store layer L's input for this call (no-op when off, stored, or over the budget)."""
    folder = root()
    if folder is None or STATS.bytes_written + h.nbytes > budget_bytes():
        return
    path = path_for(folder, group, key)
    if path.is_file():
        return
    import tempfile

    from safetensors.torch import save as to_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(to_bytes({"h": h.detach().contiguous().cpu()}))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    STATS.writes += 1
    STATS.bytes_written += h.nbytes
