"""Trained RAN adapters on disk, following PEFT's conventions.

An adapter is a folder with two files:

* ``adapter_config.json``: format version, ``ran`` version, the mechanism kind
  (a :func:`ran.mechanisms.registry.kinds` entry) and its options, the full
  :class:`ran.injection.config.InjectionConfig` (the nested reservoir config included),
  the base model's name and shape, the SHA-256 digest of the reservoir's fixed
  ``W``, ``W_in`` and ``b``, the LoRA config (if any), the SHA-256 of the
  weights file and, when saved from a training run, its ``TrainConfig``.
* ``adapter_model.safetensors``: the trained tensors (the handle's trainable
  parameters, then any LoRA weights) by the names of
  :func:`_named_trainable`.

The reservoir itself is never stored: :func:`from_pretrained` rebuilds it from
its seed and refuses to load if its digest differs from the stored one. Both
files are written atomically (:mod:`ran.util.atomic`), the weights first, so a
readable config always describes complete weights.

Example
-------
>>> handle = save_pretrained(handle, "adapters/fact")          # doctest: +SKIP
>>> handle = ran.from_pretrained(model, "adapters/fact")       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from ran.mechanisms import registry
from ran.util.memo import tensor_bytes

FORMAT = "ran-adapter"
FORMAT_VERSION = 1
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SHAPE_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
)
_DIGEST_TENSORS = ("W", "W_in", "b")


class AdapterError(ValueError):
    """An adapter that cannot be saved or loaded; the message is one sentence."""


# ----------------------------------------------------------------------------- descriptions
def model_shape(model) -> dict:
    """The base-model dimensions an adapter depends on (:data:`SHAPE_FIELDS`)."""
    from ran.injection.slots import model_layers

    conf = model.config
    blocks, attns, _ = model_layers(model)
    heads = int(conf.num_attention_heads)
    return {
        "num_hidden_layers": len(blocks),
        "hidden_size": int(conf.hidden_size),
        "num_attention_heads": heads,
        "num_key_value_heads": int(getattr(conf, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(attns[0], "head_dim", conf.hidden_size // heads)),
        "vocab_size": int(conf.vocab_size),
    }


def model_name_of(model) -> str | None:
    """The ``ran.injection.models`` name or HF id the model was loaded from, if known."""
    name = getattr(model, "_ran_model_name", None) or getattr(model.config, "_name_or_path", "")
    return str(name) or None


def kind_of(handle) -> tuple[str, dict]:
    """The registered kind of a handle and its options (JSON values)."""
    kind = getattr(handle, "kind", None)
    if kind is None or kind not in registry.kinds():
        raise AdapterError(
            f"cannot save a {type(handle).__name__}: it is not a registered ran.mechanisms handle."
        )
    return kind, handle.options()


def _options(kind: str, options: dict) -> dict:
    """The keyword options of :func:`ran.mechanisms.registry.make` from their saved form
    (a dataclass-typed option is rebuilt with :func:`ran.util.configio.from_dict`)."""
    from ran.util.configio import from_dict

    types = registry.get(kind).options
    out = {}
    for name, value in options.items():
        t = types.get(name)
        if t is not None and dataclasses.is_dataclass(t):
            value = from_dict(t, value, f"{CONFIG_NAME} options", f"{name}.")
        out[name] = value
    return out


def _named_trainable(model, handle) -> dict[str, torch.nn.Parameter]:
    """Trainable tensors by stable name: the handle's, then LoRA's (if any)."""
    out = {f"ran.{i}": p for i, p in enumerate(handle.trainable_parameters())}
    for name, p in model.named_parameters():
        if "lora_" in name:
            out[f"lora.{name}"] = p
    return out


class AdapterMixin:
    """``handle.save_pretrained(folder)``: the method form of :func:`save_pretrained`."""

    def save_pretrained(self, directory, model_name: str | None = None, train_config=None):
        """Save the trained adapter (see :func:`ran.mechanisms.adapter.save_pretrained`);
        returns the folder."""
        return save_pretrained(self, directory, model_name, train_config)


def _fixed_reservoir(handle, dtype: torch.dtype | None = None):
    """The fixed reservoir the handle was built from (rebuilt from its seed if trained
    or of another dtype); None for kinds without one."""
    from ran.reservoir.esn import Reservoir

    res = getattr(handle, "reservoir", None)
    if res is None:
        return None
    dtype = dtype or res.W.dtype
    if not isinstance(res, Reservoir):  # a trained recurrence: the reservoir it started from
        return Reservoir(res.cfg, res.input_dim, dtype=dtype)
    if res.W.dtype == dtype:
        return res
    rebuilt = Reservoir(res.cfg, res.input_dim, dtype=dtype)
    if not bool(res.W.any()):  # the "no recurrence" reference zeroes W
        rebuilt.W.zero_()
    return rebuilt


def reservoir_digest(handle, dtype: torch.dtype | None = None) -> dict | None:
    """SHA-256 over the dtypes, shapes and bytes of the fixed reservoir's W, W_in and b."""
    res = _fixed_reservoir(handle, dtype)
    if res is None:
        return None
    h = hashlib.sha256()
    for name in _DIGEST_TENSORS:
        t = getattr(res, name).detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(tensor_bytes(t))
    dt = str(res.W.dtype).removeprefix("torch.")
    return {"sha256": h.hexdigest(), "tensors": list(_DIGEST_TENSORS), "dtype": dt}


def _lora_config(model, named: dict) -> dict | None:
    """The model's PEFT LoRA config as JSON values, if it carries LoRA weights."""
    if not any(n.startswith("lora.") for n in named):
        return None
    configs = getattr(model, "peft_config", None) or {}
    if len(configs) != 1:
        raise AdapterError(
            f"the model carries LoRA weights but {len(configs)} PEFT adapter configs; "
            "save_pretrained supports exactly one (injected with peft.inject_adapter_in_model)."
        )
    doc = next(iter(configs.values())).to_dict()
    return json.loads(
        json.dumps(doc, default=lambda v: sorted(v) if isinstance(v, set) else str(v))
    )


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- save
def save_pretrained(handle, directory, model_name: str | None = None, train_config=None) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``directory``.

    Parameters
    ----------
    handle : a handle of :func:`ran.mechanisms.registry.make` (or :func:`ran.mechanisms.reservoir_slots.inject`).
    directory : str or Path
        Created if missing; existing adapter files are replaced atomically.
    model_name : str, optional
        The base model's ``ran.injection.models`` name or HF id; by default the name
        :func:`ran.injection.models.load_model` recorded, else ``config._name_or_path``.
    train_config : ran.training.config.TrainConfig, optional
        The run that trained the handle: saved with its hash, probe and probe
        parameters (``python -m ran demo`` reads the probe's keys from it).

    Returns
    -------
    Path
        The adapter folder.
    """
    from ran import __version__
    from ran.util.atomic import atomic_save_safetensors, atomic_write_json
    from ran.util.configio import to_dict

    directory = Path(directory)
    if directory.is_file():
        raise AdapterError(f"{directory} is a file; save_pretrained needs a folder.")
    model = handle.model
    kind, options = kind_of(handle)
    named = _named_trainable(model, handle)
    lora = _lora_config(model, named)
    weights = directory / WEIGHTS_NAME
    atomic_save_safetensors(
        {n: p.detach() for n, p in named.items()},
        weights,
        metadata={"format": "pt", "ran_format": FORMAT, "format_version": str(FORMAT_VERSION)},
    )
    name = model_name or model_name_of(model)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ran_version": __version__,
        "kind": kind,
        "options": options,
        "injection": to_dict(handle.config),
        "base_model_name_or_path": name,
        "base_model": {
            "name": name,
            "model_type": model.config.model_type,
            "shape": model_shape(model),
        },
        "reservoir_digest": reservoir_digest(handle),
        "lora": lora,
        "weights": {"file": WEIGHTS_NAME, "sha256": _sha256_file(weights), "names": list(named)},
        "training": None,
    }
    if train_config is not None:
        doc["training"] = {
            "hash": train_config.config_hash(),
            "probe": train_config.probe,
            "probe_params": to_dict(train_config)["probe_params"],
            "config": train_config.to_dict(),
        }
    atomic_write_json(directory / CONFIG_NAME, doc)
    return directory


# ----------------------------------------------------------------------------- load
def load_adapter_config(directory) -> dict:
    """Read and check ``adapter_config.json`` of an adapter folder.

    Raises
    ------
    AdapterError
        Missing or unreadable file, not a RAN adapter, or a format newer than this ``ran``.
    """
    from ran import __version__

    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{path} is missing; {directory} is not a saved RAN adapter.")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterError(f"{path} is not readable JSON ({type(err).__name__}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AdapterError(f"{path} is not a RAN adapter config (no format {FORMAT!r}).")
    version = doc.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise AdapterError(f"{path} has an invalid format_version {version!r}.")
    if version > FORMAT_VERSION:
        raise AdapterError(
            f"{path} has adapter format version {version}, newer than the version "
            f"{FORMAT_VERSION} that ran {__version__} reads; upgrade ran to load it."
        )
    for key in ("kind", "injection", "base_model", "weights"):
        if key not in doc:
            raise AdapterError(f"{path} has no {key!r} entry.")
    return doc


def _read_weights(directory: Path, doc: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise AdapterError(f"{path} is missing; the adapter has no weights file.")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc["weights"].get("sha256"):
        raise AdapterError(f"{path} is corrupt: its SHA-256 differs from the one in {CONFIG_NAME}.")
    try:
        return load(blob)
    except Exception:  # noqa: BLE001 - safetensors raises several error types
        raise AdapterError(f"{path} is not a readable safetensors file.") from None


def _check_shape(model, doc: dict) -> None:
    want = doc["base_model"].get("shape") or {}
    have = model_shape(model)
    base = doc["base_model"].get("name") or "its base model"
    for field in SHAPE_FIELDS:
        if field in want and want[field] != have[field]:
            raise AdapterError(
                f"the adapter was trained on {base} with {field} = {want[field]}, "
                f"but this model has {field} = {have[field]}."
            )


def _add_lora(model, lora: dict):
    from peft import PeftConfig, inject_adapter_in_model

    try:
        config = PeftConfig.from_peft_type(**lora)
    except (TypeError, ValueError) as err:
        raise AdapterError(f"the LoRA config in {CONFIG_NAME} is invalid: {err}") from None
    return inject_adapter_in_model(config, model)


def _load_into(handle, model, saved: dict, path: Path) -> None:
    named = _named_trainable(model, handle)
    if set(named) != set(saved):
        missing, extra = sorted(set(named) - set(saved)), sorted(set(saved) - set(named))
        raise AdapterError(
            f"{path} does not match the injected model (missing {missing}, unexpected {extra})."
        )
    for name, p in named.items():
        if tuple(saved[name].shape) != tuple(p.shape):
            raise AdapterError(
                f"{path} holds {name} of shape {tuple(saved[name].shape)}, "
                f"but the injected model expects {tuple(p.shape)}."
            )
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(saved[name])


def from_pretrained(model, directory):
    """Inject a saved adapter into ``model`` and load its trained weights.

    Parameters
    ----------
    model : the base causal LM (same shape as the one the adapter was trained on).
    directory : str or Path
        A folder written by :func:`save_pretrained`.

    Returns
    -------
    The handle (``ran.mechanisms.registry.make``'s) with the trained weights loaded and a
    zero state; ``handle.remove()`` undoes the injection (LoRA layers stay).

    Raises
    ------
    AdapterError
        Missing or corrupt file, newer format, base-model shape mismatch, or a
        reservoir rebuilt from its seed that differs from the stored digest.
    """
    from ran.injection.config import InjectionConfig
    from ran.util.configio import ConfigError, from_dict

    directory = Path(directory)
    doc = load_adapter_config(directory)
    if getattr(model, "_ran_handle", None) is not None:
        raise AdapterError("this model already carries a RAN injection; remove() it first.")
    _check_shape(model, doc)
    kind = doc["kind"]
    if kind not in registry.kinds():
        raise AdapterError(f"{CONFIG_NAME} names the unknown mechanism kind {kind!r}.")
    try:
        cfg = from_dict(InjectionConfig, doc["injection"], f"{CONFIG_NAME} injection")
        options = _options(kind, doc.get("options") or {})
    except ConfigError as err:
        raise AdapterError(str(err)) from None
    saved = _read_weights(directory, doc)
    if doc.get("lora"):
        model = _add_lora(model, doc["lora"])
    handle = registry.make(kind, model, cfg, **options)
    try:
        stored = doc.get("reservoir_digest")
        if stored is not None:
            dtype = getattr(torch, stored.get("dtype", "float32"))
            if reservoir_digest(handle, dtype)["sha256"] != stored.get("sha256"):
                raise AdapterError(
                    f"the reservoir rebuilt from seed {cfg.reservoir.seed} does not match the "
                    "adapter's digest; the generator changed."
                )
        _load_into(handle, model, saved, directory / WEIGHTS_NAME)
    except BaseException:
        handle.remove()
        raise
    return handle
