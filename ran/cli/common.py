"""What every command line of ``ran`` shares: the one-sentence user error, config files,
``--param`` pairs and loading an adapter with its base model."""

from __future__ import annotations

import json
from pathlib import Path

USER_ERROR = 2


class CLIError(Exception):
    """A user error of the command line; the message is one sentence."""


def read_config_file(path: str | Path) -> dict:
    """The mapping in a JSON or YAML file (YAML needs PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"the config file {path} does not exist.")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise CLIError(
                f"reading {path} needs PyYAML, which is not installed; write the config as JSON."
            ) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise CLIError(f"{path} is not valid YAML ({type(err).__name__}).") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CLIError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}.") from None


def parse_params(pairs: list[str]) -> dict:
    """``["k=16", "keys=[\\"a\\"]"]`` -> ``{"k": 16, "keys": ["a"]}`` (JSON values, else str)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--param needs KEY=VALUE, got {pair!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def load_adapter(adapter: str | Path):
    """``(model, tokenizer, handle, adapter_config)``: the base model by its saved name,
    with the adapter injected (:func:`ran.mechanisms.adapter.from_pretrained`)."""
    from ran.injection.models import load_model
    from ran.mechanisms.adapter import from_pretrained, load_adapter_config

    doc = load_adapter_config(adapter)
    name = doc["base_model"].get("name")
    if not name:
        raise CLIError(f"the adapter {adapter} does not name its base model.")
    training = (doc.get("training") or {}).get("config") or {}
    model, tok = load_model(name, seed=int(training.get("model_seed", 0)))
    return model, tok, from_pretrained(model, adapter), doc
