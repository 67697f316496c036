"""Cached evaluations, so that a warm rerun of the notebooks takes minutes.

Training runs are cached by their config hash (:mod:`ran.training.train`); everything a
notebook computes from them (test accuracy with controls, perplexity,
generation) is cached here by a key made of a name, the arguments that define
the computation (e.g. the run hash, the K, the number of blocks) and a digest
of the code of the computing subpackages (:data:`COMPUTING`: every ``.py`` file
found under their folders, by path and content) and the installed package versions. Any edit of that code
invalidates every cached evaluation, so a cached value is always what the
current code would compute; code that only draws, reports or orchestrates
(``ran.report``, the CLI, the agent, benchmarks, the pipeline) is outside those
folders, so editing or moving it invalidates nothing. A cached value includes whatever was timed with
it (e.g. the overhead ratio inside a comparison row): a warm rerun repeats the
cold run's timings rather than re-measuring them.

Entries live in ``<cache>/memo/<name>-<hash>.pt`` (``torch.save``; a local cache
this code wrote, loaded with ``weights_only=False``). ``RAN_MEMO=0`` turns the
cache off (every call computes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ran.util.results import Outputs, package_versions, to_jsonable

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the ran package
# The subpackages whose code computes cached values (the layers up to ran.study).
COMPUTING = (
    "util", "reservoir", "injection", "mechanisms", "tasks", "training", "evaluation", "study",
)  # fmt: skip


def computing_files(root: Path | None = None) -> list[Path]:
    """Every ``.py`` file under the :data:`COMPUTING` subpackage folders of ``root``
    (default: the installed ``ran``), sorted."""
    root = root or PACKAGE_DIR
    return sorted(p for sub in COMPUTING for p in (root / sub).rglob("*.py"))


@functools.cache
def folder_digest(sub: str) -> str:
    """SHA-256 (16 hex digits) over the path and bytes of every ``.py`` file under
    ``ran/<sub>``: for keys of values computed by a layer above :data:`COMPUTING` (the
    agent's probes, :mod:`ran.agent.replay`), which the source digest leaves out."""
    return _files_digest(sorted((PACKAGE_DIR / sub).rglob("*.py")))


def _files_digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(PACKAGE_DIR).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def source_digest() -> str:
    """SHA-256 (16 hex digits) over the path and bytes of :func:`computing_files`."""
    return _files_digest(computing_files())


def enabled() -> bool:
    """False when the environment sets ``RAN_MEMO=0``."""
    return os.environ.get("RAN_MEMO", "1").lower() not in ("0", "false", "no")


@functools.cache
def _versions() -> dict[str, str]:
    return package_versions()


def key_hash(name: str, key: dict) -> str:
    """16 hex digits identifying ``name`` computed on ``key`` by the current code and the
    installed versions of Python, torch, numpy, transformers... (a cached value is what
    this installation would compute, e.g. an exactness check after a torch upgrade)."""
    blob = json.dumps(
        {"name": name, "key": to_jsonable(key), "src": source_digest(), "versions": _versions()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of ``t`` (any shape, 0-dim included; empty for an empty tensor)."""
    t = t.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensor_digest(tensors) -> str:
    """SHA-256 (16 hex digits) of the dtypes, shapes and bytes of ``tensors`` (in order),
    for keys of values computed from parameters a caller may have changed."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()[:16]


def cached(outputs: Outputs | None, name: str, key: dict) -> bool:
    """Whether :func:`memo` would return a saved value for ``name`` and ``key`` (no compute)."""
    if outputs is None or not enabled():
        return False
    return (outputs.cache / "memo" / f"{name}-{key_hash(name, key)}.pt").exists()


def memo(
    outputs: Outputs | None, name: str, key: dict, fn: Callable[..., Any], *args, **kwargs
) -> Any:
    """``fn(*args, **kwargs)``, or its value saved by an earlier call with the same name, key and code.

    Parameters
    ----------
    outputs : Outputs or None
        Where the cache lives (``outputs.cache / "memo"``); None computes without caching.
    name : str
        What is computed (a file-name-safe word, e.g. ``"capacity"``).
    key : dict
        JSON-able arguments that determine the value (e.g. ``{"run": res.hash, "k": 16}``).
        Include everything the value depends on besides the code: a missing
        argument makes two different computations share an entry.
    fn : callable
        Computes the value (anything ``torch.save`` can store) from ``args`` and
        ``kwargs``; these are not part of the key (live models, episodes...).
    """
    if not name.replace("_", "").isalnum():
        raise ValueError(f"memo name must be letters, digits and underscores, not {name!r}")
    if outputs is None or not enabled():
        return fn(*args, **kwargs)
    path = outputs.cache / "memo" / f"{name}-{key_hash(name, key)}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    value = fn(*args, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written entry
    return value
