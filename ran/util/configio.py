"""Dataclass configs to and from plain JSON dicts, generically (no field is listed by hand).

:func:`to_dict` is :func:`dataclasses.asdict` made JSON-safe; :func:`from_dict`
rebuilds a config with its own constructor (so ``__post_init__`` validates it):
nested dataclass fields are rebuilt from their dicts, lists become tuples where
the default is a tuple, and every value is checked against the type of its
field's default. Every problem is a :class:`ConfigError` of one sentence that
names the field, e.g. ``config.json: unknown field 'stepz'.`` (a class with a
``field_moved(name)`` classmethod says where a field it no longer has went).
:func:`updated` is :func:`dataclasses.replace` reaching into nested configs.
"""

from __future__ import annotations

import numbers
from dataclasses import MISSING, asdict, fields, is_dataclass, replace


class ConfigError(ValueError):
    """A config that cannot be read; the message is one sentence naming the field."""


def to_dict(cfg) -> dict:
    """``dataclasses.asdict(cfg)`` as plain JSON values (tuples become lists)."""
    from ran.util.results import to_jsonable

    return to_jsonable(asdict(cfg))


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _sentence(text: str) -> str:
    text = str(text).strip()
    return text if text.endswith(".") else text + "."


def _check_type(name: str, value, default, where: str) -> None:
    """Raise if ``value`` cannot stand where ``default`` stands (None defaults: anything)."""
    if default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, numbers.Integral):
        ok, kind = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    elif isinstance(default, numbers.Real):
        ok, kind = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, tuple | list):
        ok, kind = isinstance(value, list | tuple), "a list"
    elif isinstance(default, dict):
        ok, kind = isinstance(value, dict), "a mapping"
    else:
        return
    if not ok:
        raise ConfigError(f"{where}: field {name!r} must be {kind}, got {value!r}.")


def from_dict(cls, doc, where: str = "config", prefix: str = ""):
    """Build the dataclass ``cls`` from a dict saved by :func:`to_dict` (or written by hand).

    Parameters
    ----------
    cls : a dataclass type (e.g. ``ran.training.config.TrainConfig``).
    doc : dict
        Field values; missing fields take their defaults.
    where : str
        Prefix of error messages (e.g. the file name).
    prefix : str
        Path of a nested config in field names (``"reservoir."``).

    Returns
    -------
    An instance of ``cls``.

    Raises
    ------
    ConfigError
        Unknown field, value of the wrong type, or a ValueError of ``__post_init__``.
    """
    if not isinstance(doc, dict):
        what = f"{where}: field {prefix[:-1]!r}" if prefix else where
        raise ConfigError(f"{what} must be a mapping of {cls.__name__} fields, got {doc!r}.")
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = [name for name in doc if name not in known]
    moved = getattr(cls, "field_moved", None)  # a class may say where a field went
    if unknown and moved is not None and moved(unknown[0]):
        raise ConfigError(f"{where}: {_sentence(moved(unknown[0]))}")
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {prefix + str(unknown[0])!r} ({cls.__name__} has no such field)."
        )
    kwargs = {}
    for name, value in doc.items():
        default = _default(known[name])
        if is_dataclass(default) and not isinstance(value, type(default)):
            value = from_dict(type(default), value, where, f"{prefix}{name}.")
        else:
            _check_type(prefix + name, value, default, where)
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {_sentence(err)}") from None


def updated(cfg, **changes):
    """``dataclasses.replace(cfg, **changes)`` where a dict given for a field that holds a
    dataclass updates that dataclass (recursively) instead of replacing it, e.g.
    ``updated(train_cfg, injection={"reservoir": {"seed": 3}}, steps=10)``."""
    kw = {}
    for name, value in changes.items():
        current = getattr(cfg, name, None)
        if isinstance(value, dict) and is_dataclass(current):
            value = updated(current, **value)
        kw[name] = value
    return replace(cfg, **kw)
