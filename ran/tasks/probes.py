"""Deterministic cross-pass probes: episodes of separate forward passes.

An :class:`Episode` is a list of pass texts, each run as a fresh context (no
text of an earlier pass appears in a later one); the only way information
crosses passes is the reservoir state. The last pass is the question; it is
scored as a forced choice among the episode's candidates (chance = 1/K).

Three probes, each a validated dataclass whose word lists and templates are
parameters (bring your own):

* :class:`SecretWord` (``"secret_word"``): pass 1 shows one of K keys inside a
  Shakespeare line, pass 2 asks for it.
* :class:`ElapsedPasses` (``"elapsed"``): an event pass, k filler passes of fresh
  Shakespeare lines, then "how many passes since": answer k in 0..k_max.
* :class:`IdleRetention` (``"idle_retention"``): a secret word, k idle reservoir
  steps (no input), then recall.

Splits never share an episode: the Shakespeare context lines of train, val
and test come from disjoint plays (:mod:`ran.tasks.data`), each split has its own
seeded generator, and :meth:`Probe.splits` drops any episode already produced
by an earlier split (and raises if it cannot reach the requested count).

Tokenisation and forced-choice scoring of the question passes live in
:mod:`ran.tasks.scoring`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from ran.tasks.data import SPLITS, check_split, shakespeare_lines

# 64 concrete nouns; each " word" is one token for the SmolLM2 tokenizer (checked).
DEFAULT_KEYS = (
    "apple river tiger candle garden silver window mountain pencil rabbit doctor orange "
    "castle engine forest guitar hammer island jacket lemon marble needle ocean pepper "
    "rocket saddle tomato violin wagon zebra anchor basket butter camera cherry copper "
    "desert dragon eagle feather flower ghost glass honey horse jungle ladder lizard "
    "magnet mirror monkey nickel onion palace parrot pirate planet pocket puzzle queen "
    "rainbow ribbon salmon spider"
).split()
SECRET_WRITE = (
    "{context} The secret word is {key}.",
    "The secret word is {key}. {context}",
    "{context} Remember this: the secret word is {key}.",
)
SECRET_QUESTION = ("{context}\nThe secret word was",)
EVENT_TEXT = ("{context} Then a bell rang.",)
ELAPSED_QUESTION = ("{context}\nThe number of passes since the bell rang is",)


@dataclass(frozen=True)
class Episode:
    """One probe episode.

    Attributes
    ----------
    passes : tuple of str
        The text of each forward pass; the last one is the question.
    idle : tuple of int
        Idle reservoir steps (zero input) run *before* each pass; same length.
    candidates : tuple of str
        Continuations of the question pass (e.g. ``" apple"``); chance is 1/K.
    answer : int
        Index of the correct candidate.
    probe : str
        The probe that made it.
    info : tuple of (str, object)
        Generator details (key, k, template index) for analysis.
    """

    passes: tuple[str, ...]
    idle: tuple[int, ...]
    candidates: tuple[str, ...]
    answer: int
    probe: str = ""
    info: tuple = ()

    def __post_init__(self):
        if len(self.passes) < 1 or len(self.idle) != len(self.passes):
            raise ValueError("an episode needs >= 1 pass and one idle count per pass")
        if not 0 <= self.answer < len(self.candidates):
            raise ValueError(
                f"answer {self.answer} is not an index of {len(self.candidates)} candidates"
            )

    @property
    def question(self) -> str:
        return self.passes[-1]

    @property
    def oracle_prompt(self) -> str:
        """All passes in one context (the in-context upper bound, run on the base model)."""
        return "\n".join(self.passes)

    @property
    def schedule(self) -> tuple[tuple[int, ...], int]:
        """``(idle counts, number of passes)``: episodes with equal schedules batch without masking."""
        return (self.idle, len(self.passes))


def _sentences(lines: list[str], rng: random.Random, n_lines: int) -> str:
    i = rng.randrange(len(lines) - n_lines + 1)
    return " ".join(lines[i : i + n_lines])


@dataclass(frozen=True)
class Probe:
    """Common parameters of every probe (subclasses add their own).

    ``n_train``/``n_val``/``n_test`` are episode counts per split; ``seed``
    fixes all of them; ``context_lines`` is how many consecutive Shakespeare
    lines wrap each pass text.
    """

    n_train: int = 2048  # training episodes (a run cycles through them)
    n_val: int = 128  # validation episodes (early stopping)
    n_test: int = 256  # test episodes (every control runs on the same ones)
    seed: int = 0  # fixes every split
    context_lines: int = 1  # Shakespeare lines around each pass text

    name = "probe"

    def __post_init__(self):
        for f in ("n_train", "n_val", "n_test", "context_lines"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")

    @property
    def n_candidates(self) -> int:
        raise NotImplementedError

    def _episode(self, rng: random.Random, lines: list[str]) -> Episode:
        raise NotImplementedError

    def _split_episode(self, split: str, rng: random.Random, lines: list[str]) -> Episode:
        """One episode of ``split``; probes whose word pools are split override this."""
        return self._episode(rng, lines)

    def episodes(self, split: str, exclude: frozenset = frozenset()) -> list[Episode]:
        """The episodes of one split, deterministic given the probe parameters.

        Parameters
        ----------
        split : {"train", "val", "test"}
        exclude : frozenset of Episode
            Episodes that must not be produced (those of other splits).
        """
        n = {"train": self.n_train, "val": self.n_val, "test": self.n_test}[check_split(split)]
        rng = random.Random(f"{self.name}|{self.seed}|{split}")
        lines = [ln for ln in shakespeare_lines(split) if len(ln) >= 20]
        out: list[Episode] = []
        seen: set[Episode] = set()
        for _ in range(50 * n + 1000):
            if len(out) == n:
                return out
            ep = self._split_episode(split, rng, lines)
            if ep not in seen and ep not in exclude:
                seen.add(ep)
                out.append(ep)
        raise ValueError(
            f"probe {self.name!r} produced only {len(out)} distinct {split} episodes of {n} asked; "
            "add templates, keys or context lines, or ask for fewer"
        )

    def splits(self) -> dict[str, list[Episode]]:
        """Train, val and test episodes, pairwise disjoint (checked)."""
        out: dict[str, list[Episode]] = {}
        taken: set[Episode] = set()
        for split in SPLITS:
            out[split] = self.episodes(split, exclude=frozenset(taken))
            taken.update(out[split])
        return out

    def params(self) -> dict:
        """The parameters as a plain dict (for configs and hashes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SecretWord(Probe):
    """Secret-word recall: show one of K keys in pass 1, ask for it in a fresh pass 2."""

    k: int = 16  # number of keys = candidates; chance is 1/k
    keys: tuple[str, ...] = tuple(DEFAULT_KEYS)  # key vocabulary; the first k are used
    write_templates: tuple[str, ...] = SECRET_WRITE  # need {key}; {context} optional
    question_templates: tuple[str, ...] = SECRET_QUESTION  # {context} optional
    prefix: str = " "  # candidate continuation = prefix + key

    name = "secret_word"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "write_templates", tuple(self.write_templates))
        object.__setattr__(self, "question_templates", tuple(self.question_templates))
        if not 2 <= self.k <= len(self.keys):
            raise ValueError(f"k must be in 2..{len(self.keys)} (the number of keys), got {self.k}")
        if len(set(self.keys[: self.k])) != self.k:
            raise ValueError("the first k keys must be distinct")
        if not self.write_templates or any("{key}" not in t for t in self.write_templates):
            raise ValueError("every write template must contain {key}")
        if not self.question_templates or any("{key}" in t for t in self.question_templates):
            raise ValueError("question templates must be non-empty and must not contain {key}")

    @property
    def n_candidates(self) -> int:
        return self.k

    def _write_pass(self, rng, lines, key) -> tuple[str, int]:
        t = rng.randrange(len(self.write_templates))
        ctx = _sentences(lines, rng, self.context_lines)
        return self.write_templates[t].format(key=key, context=ctx), t

    def _question_pass(self, rng, lines) -> tuple[str, int]:
        q = rng.randrange(len(self.question_templates))
        return self.question_templates[q].format(
            context=_sentences(lines, rng, self.context_lines)
        ), q

    def _episode(self, rng, lines) -> Episode:
        answer = rng.randrange(self.k)
        key = self.keys[answer]
        write, t = self._write_pass(rng, lines, key)
        question, q = self._question_pass(rng, lines)
        cands = tuple(self.prefix + w for w in self.keys[: self.k])
        info = (("key", key), ("write_template", t), ("question_template", q))
        return Episode((write, question), (0, 0), cands, answer, self.name, info)


@dataclass(frozen=True)
class IdleRetention(SecretWord):
    """Secret word, then ``idle`` zero-input reservoir steps, then recall."""

    idle_steps: tuple[int, ...] = (0, 1, 2, 4, 8, 16)  # idle counts sampled per episode

    name = "idle_retention"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "idle_steps", tuple(int(i) for i in self.idle_steps))
        if not self.idle_steps or min(self.idle_steps) < 0:
            raise ValueError("idle_steps must be a non-empty tuple of counts >= 0")

    def _episode(self, rng, lines) -> Episode:
        base = super()._episode(rng, lines)
        n_idle = self.idle_steps[rng.randrange(len(self.idle_steps))]
        info = base.info + (("idle", n_idle),)
        return Episode(base.passes, (0, n_idle), base.candidates, base.answer, self.name, info)


@dataclass(frozen=True)
class ElapsedPasses(Probe):
    """Event pass, k filler passes of fresh Shakespeare lines, then "how many passes since?".

    With ``pre_max > 0`` a random number of filler passes (0..pre_max) comes
    before the event, so the number of passes since the reset no longer tells
    the answer: the memory must mark the event itself.
    """

    k_max: int = 4  # answers are 0..k_max, chance 1/(k_max+1)
    event_templates: tuple[str, ...] = EVENT_TEXT  # {context} optional
    question_templates: tuple[str, ...] = ELAPSED_QUESTION  # {context} optional
    answer_prefix: str = " "  # candidate continuation = answer_prefix + str(k)
    pre_max: int = 0  # filler passes *before* the event, 0..pre_max (defeats counting from reset)

    name = "elapsed"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "event_templates", tuple(self.event_templates))
        object.__setattr__(self, "question_templates", tuple(self.question_templates))
        if not 1 <= self.k_max <= 32:
            raise ValueError(f"k_max must be in 1..32, got {self.k_max}")
        if not self.event_templates or not self.question_templates:
            raise ValueError("event_templates and question_templates must be non-empty")
        if not 0 <= self.pre_max <= 32:
            raise ValueError(f"pre_max must be in 0..32, got {self.pre_max}")

    @property
    def n_candidates(self) -> int:
        return self.k_max + 1

    def _episode(self, rng, lines) -> Episode:
        k = rng.randrange(self.k_max + 1)
        e = rng.randrange(len(self.event_templates))
        event = self.event_templates[e].format(context=_sentences(lines, rng, self.context_lines))
        fillers = tuple(_sentences(lines, rng, self.context_lines) for _ in range(k))
        q = rng.randrange(len(self.question_templates))
        question = self.question_templates[q].format(
            context=_sentences(lines, rng, self.context_lines)
        )
        cands = tuple(f"{self.answer_prefix}{i}" for i in range(self.k_max + 1))
        pre: tuple[str, ...] = ()
        if self.pre_max:  # drawn last, so pre_max = 0 leaves the earlier episodes unchanged
            n_pre = rng.randrange(self.pre_max + 1)
            pre = tuple(_sentences(lines, rng, self.context_lines) for _ in range(n_pre))
        passes = (*pre, event, *fillers, question)
        info = (("k", k), ("event_template", e), ("question_template", q))
        if self.pre_max:
            info += (("pre", len(pre)),)
        return Episode(passes, (0,) * len(passes), cands, k, self.name, info)


PROBES: dict[str, type[Probe]] = {
    "secret_word": SecretWord,
    "elapsed": ElapsedPasses,
    "idle_retention": IdleRetention,
}


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make ``cls`` buildable by :func:`make_probe` under ``cls.name``."""
    PROBES[cls.name] = cls
    return cls


def make_probe(name: str, **params) -> Probe:
    """Build a probe by name (``secret_word``, ``elapsed``, ``idle_retention``, and the
    realistic probes of :mod:`ran.tasks.realism`: ``fact_in_text``, ``two_facts``)."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; choose one of {', '.join(PROBES)}")
    try:
        return PROBES[name](**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for probe {name!r}: {err}") from None
