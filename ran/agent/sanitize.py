"""Bad input made safe or refused: what a message may be before it reaches the model.

:func:`clean_message` takes ``str`` or ``bytes`` and returns the text to run with
the warnings of what was changed, or raises :class:`Rejected` with one sentence:

* bytes are decoded as UTF-8; invalid bytes become U+FFFD (a warning);
* lone surrogates in a ``str`` (not encodable as UTF-8) become U+FFFD (a warning);
* control characters other than tab and newline (C0, DEL, C1) are removed, and
  ``\\r\\n`` / ``\\r`` become ``\\n`` (a warning if any were removed);
* a message over ``max_bytes`` UTF-8 bytes is refused before anything else is done
  with it, and so is one that is empty once cleaned.

Nothing here touches the agent's state: a refused message runs no pass.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

KEEP = frozenset("\t\n")
SURROGATES = re.compile("[\ud800-\udfff]")


class Rejected(ValueError):
    """A message the agent will not run; the message is one sentence."""


@dataclass(frozen=True)
class Cleaned:
    """The text to run and what was changed to make it safe."""

    text: str
    warnings: tuple[str, ...]
    n_bytes: int  # UTF-8 size of the input as received


def _size(raw: str | bytes) -> int:
    if isinstance(raw, bytes | bytearray):
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


def clean_message(raw, max_bytes: int = 65536) -> Cleaned:
    """Decode, size-check and strip a message (see the module docstring).

    Parameters
    ----------
    raw : str or bytes
        The message as received.
    max_bytes : int
        Largest accepted UTF-8 size.

    Returns
    -------
    Cleaned

    Raises
    ------
    Rejected
        Not text, too large, or empty once cleaned.
    """
    if not isinstance(raw, str | bytes | bytearray):
        raise Rejected(f"a message must be text (str or bytes), got {type(raw).__name__}.")
    n = _size(raw)
    if n > max_bytes:
        raise Rejected(
            f"the message is {n} bytes long, more than the limit of {max_bytes} bytes "
            "(max_message_bytes); send it in smaller parts."
        )
    warnings = []
    if isinstance(raw, bytes | bytearray):
        text = bytes(raw).decode("utf-8", errors="replace")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
            warnings.append("invalid UTF-8 bytes in the message were replaced by U+FFFD.")
    else:
        text = raw
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = SURROGATES.sub("\ufffd", text)
            warnings.append("characters that are not valid Unicode were replaced by U+FFFD.")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = [c for c in text if c in KEEP or unicodedata.category(c) != "Cc"]
    removed = len(text) - len(kept)
    if removed:
        warnings.append(f"{removed} control character(s) were removed from the message.")
    text = "".join(kept).strip()
    if not text:
        raise Rejected(
            "the message is empty (nothing but whitespace or control characters); nothing was run."
        )
    return Cleaned(text, tuple(warnings), n)
