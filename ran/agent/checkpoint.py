"""Crash-safe checkpoints of the agent: state, buffer and counters after every pass.

A checkpoint is one folder::

    manifest.json         what the checkpoint belongs to: the agent identity (adapter
                          and model digest), the adapter config's SHA-256, the model
    state.0.safetensors   the reservoir state r(t) (handle.save_state), two slots
    state.1.safetensors   written in turn, so the committed one is never overwritten
    agent.json            the commit record: pass count, which state slot, its
                          SHA-256, the context buffer and the counters

Every file goes through :mod:`ran.util.atomic` (temp file, fsync, rename). Pass ``n``
writes its state into slot ``n % 2`` and then ``agent.json`` naming that slot: a
kill before the rename of ``agent.json`` leaves the record of pass ``n - 1``,
whose slot is untouched, so a restore always finds a state, buffer and counters
of the same pass and loses at most the pass in flight.

:func:`agent_identity` digests what the state means: the base model's name and
shape, the injection config, the fixed reservoir's digest and the trained
tensors. A checkpoint whose manifest names another identity is refused with one
sentence.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ran.agent.config import AgentError
from ran.util.atomic import atomic_write_json
from ran.util.memo import tensor_bytes

FORMAT = "ran-agent-checkpoint"
FORMAT_VERSION = 1
MANIFEST, RECORD = "manifest.json", "agent.json"
SLOTS = ("state.0.safetensors", "state.1.safetensors")


def agent_identity(handle) -> str:
    """SHA-256 of everything a reservoir state depends on (model, injection, weights)."""
    from ran.mechanisms.adapter import (
        _named_trainable,
        model_name_of,
        model_shape,
        reservoir_digest,
    )
    from ran.util.configio import to_dict

    h = hashlib.sha256()
    doc = {
        "model": model_name_of(handle.model),
        "shape": model_shape(handle.model),
        "injection": to_dict(handle.config),
        "reservoir": reservoir_digest(handle),
    }
    h.update(json.dumps(doc, sort_keys=True).encode())
    for name, p in _named_trainable(handle.model, handle).items():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def adapter_config_sha256(adapter_dir) -> str | None:
    """SHA-256 of an adapter folder's ``adapter_config.json`` (None without a folder)."""
    from ran.mechanisms.adapter import CONFIG_NAME

    if adapter_dir is None:
        return None
    path = Path(adapter_dir) / CONFIG_NAME
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AgentError(
            f"{path} is not a readable checkpoint file ({type(err).__name__})."
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AgentError(f"{path} is not a RAN agent checkpoint file (no format {FORMAT!r}).")
    return doc


class Checkpointer:
    """Writes and restores the checkpoint folder of one agent (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        The checkpoint folder (created if missing).
    identity : str
        :func:`agent_identity` of the agent's handle.
    info : dict
        Recorded in the manifest (model name, adapter folder and config digest).
    """

    def __init__(self, folder, identity: str, info: dict | None = None):
        self.folder, self.identity, self.info = Path(folder), identity, dict(info or {})
        self.writes = 0  # checkpoints written by this process

    @property
    def exists(self) -> bool:
        return (self.folder / RECORD).is_file()

    def check_manifest(self) -> None:
        """Refuse a folder that belongs to another adapter or model (one sentence)."""
        path = self.folder / MANIFEST
        if not path.is_file():
            if self.exists:
                raise AgentError(f"{self.folder} holds an agent record but no {MANIFEST}.")
            return
        doc = _read_json(path)
        if doc.get("identity") != self.identity:
            theirs = str(doc.get("identity"))[:12]
            raise AgentError(
                f"the checkpoint in {self.folder} belongs to another adapter or model "
                f"(identity {theirs}, this agent's is {self.identity[:12]}); start with another "
                "checkpoint folder or the adapter it was made with."
            )

    def write_manifest(self) -> None:
        if (self.folder / MANIFEST).is_file():
            return
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "identity": self.identity}
        doc |= {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z")} | self.info
        atomic_write_json(self.folder / MANIFEST, doc)

    def save(self, handle, passes: int, buffer: list[dict], counters: dict, extra=None) -> Path:
        """Commit pass ``passes``: its state into slot ``passes % 2``, then the record."""
        if not (self.folder / MANIFEST).is_file():
            self.write_manifest()
        slot = SLOTS[passes % 2]
        path = handle.save_state(self.folder / slot)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "identity": self.identity,
            "passes": passes,
            "state_file": slot,
            "state_sha256": digest,
            "buffer": buffer,
            "counters": counters,
            "extra": extra or {},
            "time": time.time(),
        }
        atomic_write_json(self.folder / RECORD, record, indent=None)
        self.writes += 1
        return self.folder / RECORD

    def load(self, handle) -> dict | None:
        """Load the committed state into ``handle``; returns the record (None: no checkpoint).

        Raises
        ------
        AgentError
            Another identity, an unreadable record or a state file that does not match it.
        """
        self.check_manifest()
        if not self.exists:
            return None
        record = _read_json(self.folder / RECORD)
        if record.get("identity") != self.identity:
            raise AgentError(
                f"the agent record in {self.folder} belongs to another adapter or model; "
                "start with another checkpoint folder or the adapter it was made with."
            )
        slot = record.get("state_file")
        if slot not in SLOTS:
            raise AgentError(f"{self.folder / RECORD} names no valid state file ({slot!r}).")
        path = self.folder / slot
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != record.get(
            "state_sha256"
        ):
            raise AgentError(f"{path} does not match the agent record of pass {record['passes']}.")
        try:
            handle.load_state(path, batch_size=1)
        except ValueError as err:
            raise AgentError(str(err)) from None
        return record
