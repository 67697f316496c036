"""Realistic cross-pass probes: a fact told inside running text, distractors, idle ticks, names.

Two probes (registered with :func:`ran.tasks.probes.make_probe`):

* :class:`FactInText` (``"fact_in_text"``): pass 1 tells one of K keys inside
  running text (0-2 Shakespeare lines before and after the sentence, one of
  many write templates); then ``d`` unrelated distractor passes (other text,
  other statements, other questions); then ``n`` idle reservoir ticks; then
  a fresh question pass (one of several question templates) scored as a
  forced choice among the K keys.
* :class:`TwoFacts` (``"two_facts"``): two passes bind keys to two names
  ("Anna's secret word is ...", later "Ben's ..."); the question asks for one
  of them, so the memory must keep both and tell them apart.

Held-out splits (``heldout=True``, the default): train, val and test draw
keys, templates, distractor wordings, filler nouns and names from disjoint
pools (:mod:`ran.tasks.wordlists`), and Shakespeare from disjoint plays, so the
test split measures whether the memory carries *what the pass said*, not a
memorised key or wording. ``heldout=False`` draws every split from the
training pools (the in-distribution row). The ``test_*`` fields replace the
test pools with your own (keys, templates, distractors you bring).
"""

from __future__ import annotations

from dataclasses import dataclass

from ran.tasks import wordlists as WL
from ran.tasks.probes import Episode, Probe, _sentences, register_probe


def _counts(name: str, values, lo: int = 0, hi: int = 256) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out or min(out) < lo or max(out) > hi:
        raise ValueError(f"{name} must be a non-empty tuple of integers in {lo}..{hi}, got {out}")
    return out


@dataclass(frozen=True)
class FactInText(Probe):
    """A key told inside running text, ``d`` distractor passes, ``n`` idle ticks, then recall."""

    k: int = 16  # candidates (keys) per episode; chance 1/k
    heldout: bool = True  # val/test use their own keys and templates (False: the training pools)
    distractors: tuple[int, ...] = (0,)  # distractor passes between fact and question, sampled
    idle_steps: tuple[int, ...] = (0,)  # idle reservoir ticks before the question, sampled
    lines_before: tuple[int, ...] = (0, 1, 2)  # Shakespeare lines before the fact sentence
    lines_after: tuple[int, ...] = (0, 1, 2)  # ... and after it (>= 1: the key is inside text)
    question_lines: tuple[int, ...] = (0, 1)  # Shakespeare lines before the question
    text_distractor: float = 0.5  # share of distractors that are plain Shakespeare lines
    train_keys: tuple[str, ...] = ()  # training keys (empty: ran.tasks.wordlists.KEYS["train"])
    test_keys: tuple[str, ...] = ()  # your own test keys (empty: ran.tasks.wordlists.KEYS["test"])
    test_write: tuple[str, ...] = ()  # your own test write templates (need {key})
    test_questions: tuple[str, ...] = ()  # your own test question templates
    test_distractors: tuple[str, ...] = ()  # your own distractor templates ({noun} optional)
    prefix: str = " "  # candidate continuation = prefix + key

    name = "fact_in_text"

    def __post_init__(self):
        super().__post_init__()
        for f in ("distractors", "idle_steps", "lines_before", "lines_after", "question_lines"):
            object.__setattr__(self, f, _counts(f, getattr(self, f)))
        for f in ("train_keys", "test_keys", "test_write", "test_questions", "test_distractors"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        if not 0 <= self.text_distractor <= 1:
            raise ValueError(f"text_distractor must be in [0, 1], got {self.text_distractor}")
        for split in ("train", "val", "test"):
            keys = self.pool("keys", split)
            if not 2 <= self.k <= len(keys) or len(set(keys)) != len(keys):
                raise ValueError(
                    f"k must be in 2..{len(keys)} (the distinct {split} keys), got {self.k}"
                )
        if any("{key}" not in t for t in self.pool("write", "test")):
            raise ValueError("every write template must contain {key}")
        if any("{key}" in t for t in self.pool("question", "test")):
            raise ValueError("question templates must not contain {key}")

    @property
    def n_candidates(self) -> int:
        return self.k

    def pool(self, what: str, split: str) -> tuple:
        """The ``what`` pool (keys, write, question, distractor, filler, ...) of ``split``."""
        own = {
            "keys": self.test_keys,
            "write": self.test_write,
            "question": self.test_questions,
            "distractor": self.test_distractors,
        }.get(what, ())
        if split == "test" and own:
            return own
        split = split if self.heldout else "train"
        if what == "keys" and split == "train" and self.train_keys:
            return self.train_keys
        return WL.POOLS[what][split]

    def _context(self, rng, lines, n: int) -> str:
        return _sentences(lines, rng, n) if n else ""

    def _join(self, *parts: str) -> str:
        return " ".join(p for p in parts if p)

    def _candidates(self, rng, split: str) -> tuple[tuple[str, ...], int, str]:
        keys = self.pool("keys", split)
        chosen = sorted(rng.sample(range(len(keys)), self.k))
        answer = rng.randrange(self.k)
        return tuple(self.prefix + keys[i] for i in chosen), answer, keys[chosen[answer]]

    def _distractor(self, rng, lines, split: str) -> str:
        if rng.random() < self.text_distractor:
            return self._context(rng, lines, rng.choice((1, 2)))
        t = rng.choice(self.pool("distractor", split))
        return t.format(noun=rng.choice(self.pool("filler", split)))

    def _question(self, rng, lines, template: str) -> str:
        ctx = self._context(rng, lines, rng.choice(self.question_lines))
        return f"{ctx}\n{template}" if ctx else template

    def _split_episode(self, split, rng, lines) -> Episode:
        cands, answer, key = self._candidates(rng, split)
        writes = self.pool("write", split)
        w = rng.randrange(len(writes))
        nb, na = rng.choice(self.lines_before), rng.choice(self.lines_after)
        fact = self._join(
            self._context(rng, lines, nb),
            writes[w].format(key=key),
            self._context(rng, lines, na),
        )
        d, n_idle = rng.choice(self.distractors), rng.choice(self.idle_steps)
        fillers = tuple(self._distractor(rng, lines, split) for _ in range(d))
        questions = self.pool("question", split)
        q = rng.randrange(len(questions))
        question = self._question(rng, lines, questions[q])
        passes = (fact, *fillers, question)
        idle = (0,) * (len(passes) - 1) + (n_idle,)
        info = (
            ("key", key),
            ("write_template", w),
            ("question_template", q),
            ("before", nb),
            ("after", na),
            ("distractors", d),
            ("idle", n_idle),
            ("split", split),
        )
        return Episode(passes, idle, cands, answer, self.name, info)


@dataclass(frozen=True)
class TwoFacts(FactInText):
    """Two keys bound to two names in separate passes; the question names one of them."""

    name = "two_facts"

    def __post_init__(self):
        super().__post_init__()
        for split in ("train", "val", "test"):
            if len(self.pool("names", split)) < 2:
                raise ValueError(f"two_facts needs at least 2 {split} names")

    def _split_episode(self, split, rng, lines) -> Episode:
        cands, answer, key = self._candidates(rng, split)
        other = rng.choice([c for c in cands if c != cands[answer]]).strip()
        names = rng.sample(self.pool("names", split), 2)
        writes = self.pool("named_write", split)
        first_asked = rng.random() < 0.5
        words = (key, other) if first_asked else (other, key)
        facts = []
        for name, word in zip(names, words, strict=True):
            w = rng.choice(writes)
            nb, na = rng.choice(self.lines_before), rng.choice(self.lines_after)
            fact = w.format(name=name, key=word)
            facts.append(
                self._join(self._context(rng, lines, nb), fact, self._context(rng, lines, na))
            )
        d, n_idle = rng.choice(self.distractors), rng.choice(self.idle_steps)
        fillers = tuple(self._distractor(rng, lines, split) for _ in range(d))
        asked = names[0] if first_asked else names[1]
        template = rng.choice(self.pool("named_question", split)).format(name=asked)
        question = self._question(rng, lines, template)
        passes = (*facts, *fillers, question)
        idle = (0,) * (len(passes) - 1) + (n_idle,)
        info = (
            ("key", key),
            ("other", other),
            ("asked", "first" if first_asked else "second"),
            ("distractors", d),
            ("idle", n_idle),
            ("split", split),
        )
        return Episode(passes, idle, cands, answer, self.name, info)


register_probe(FactInText)
register_probe(TwoFacts)
