"""The output gate's own probe: conversations of messages and idle ticks, each labelled emit or stay silent.

A conversation is a run of turns through one agent, the state carried from turn to
turn (reset between conversations). Each turn is an idle tick or a message of one
category:

=============  =====  ====================================================
category       emit   example (train wording)
=============  =====  ====================================================
``addressed``  yes    "Agent, tell me about the harbor."
``question``   yes    "Where can I find the harbor?"
``cue``        yes    "Agent, answer my next message."
``cued``       yes    "the harbor." right after a cue (a request only in context)
``statement``  no     "I bought a new harbor yesterday."
``mention``    no     "My travel agent booked the harbor for us." (a hard negative)
``bare``       no     "the harbor." with no cue before it
``idle``       no     an idle tick (u = 0), no text
=============  =====  ====================================================

``cued`` and ``bare`` turns have the same wording; only the turn before tells
them apart, so a gate that does not read the state cannot separate them. Some
requests and questions end in an open sentence for the reply to complete
("What was the harbor called? It was"), as memory questions do.

Train, val and test draw templates and nouns from disjoint pools (held-out
wordings: the test split measures whether the gate learned *addressed or asked*,
not a template), each split from its own seeded generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from ran.tasks import wordlists as WL
from ran.tasks.data import check_split

EMIT = frozenset({"addressed", "question", "cue", "cued"})
CATEGORIES = ("addressed", "question", "cue", "cued", "statement", "mention", "bare", "idle")

TEMPLATES = {
    "addressed": {
        "train": (
            "{name}, tell me about the {noun}.",
            "{name}, please describe the {noun}.",
            "Hey {name}, can you explain the {noun}?",
            "{name}, I need your help with the {noun}.",
            "Listen, {name}: what do you think of the {noun}?",
            "{name}, give me one fact about the {noun}.",
            "Okay {name}, say something about the {noun}.",
            "{name}, tell me the name of the {noun}. It is",
            "{name}, finish this sentence: the {noun} is",
        ),
        "val": (
            "{name}, would you describe the {noun} for me?",
            "Hi {name}, talk to me about the {noun}.",
            "{name}, complete this: the {noun} was",
        ),
        "test": (
            "Excuse me {name}, explain how the {noun} works.",
            "{name}, your opinion on the {noun}, please.",
            "A quick one for you, {name}: is the {noun} any good?",
            "{name}, which {noun} was it? It was",
        ),
    },
    "question": {
        "train": (
            "What is the {noun} made of?",
            "Where can I find the {noun}?",
            "How old is the {noun}?",
            "Why is the {noun} so loud?",
            "Do you know who owns the {noun}?",
            "Can you tell me where the {noun} is?",
            "Is the {noun} open today?",
            "What was the {noun} called? It was",
            "Where did we leave the {noun}? We left it",
        ),
        "val": (
            "When does the {noun} close?",
            "Who built the {noun}?",
            "Who had the {noun}? It was",
        ),
        "test": (
            "Which {noun} is the best one?",
            "Could you remind me what the {noun} costs?",
            "Have you ever seen the {noun}?",
            "What colour is the {noun}? It is",
        ),
    },
    "cue": {
        "train": ("{name}, answer my next message.", "{name}, respond to what I write next."),
        "val": ("{name}, the next line is for you.",),
        "test": ("{name}, reply to whatever I say next.",),
    },
    "bare": {
        "train": ("the {noun}.", "the {noun}, in short."),
        "val": ("that {noun}.",),
        "test": ("just the {noun}.",),
    },
    "statement": {
        "train": (
            "The {noun} is on the table.",
            "I bought a new {noun} yesterday.",
            "We walked past the {noun} this morning.",
            "My sister likes the {noun} a lot.",
            "It rained all day near the {noun}.",
            "The {noun} was painted blue last year.",
            "Tom fixed the {noun} before lunch.",
        ),
        "val": ("The {noun} smelled of fresh bread.", "Nobody used the {noun} last week."),
        "test": (
            "A cat slept beside the {noun}.",
            "The old {noun} finally broke down.",
            "I wrote a long letter about the {noun}.",
        ),
    },
    "mention": {
        "train": (
            "My travel agent booked the {noun} for us.",
            "I wondered what the {noun} was for, then I remembered.",
            "She asked me about the {noun} yesterday.",
            "The agent at the {noun} was very friendly.",
        ),
        "val": ("I asked myself how the {noun} worked.",),
        "test": (
            "The estate agent showed us the {noun}.",
            "He wanted to know where the {noun} was, so he looked it up.",
        ),
    },
}
NOUNS = {s: WL.FILLER_NOUNS[s] + WL.KEYS[s][:24] for s in ("train", "val", "test")}
# Share of each message category (a cue is always followed by its cued turn).
WEIGHTS = {"addressed": 2, "question": 2, "cue": 1, "statement": 3, "mention": 1, "bare": 1}


@dataclass(frozen=True)
class Turn:
    """One turn of a gate conversation: an idle tick (``text`` None) or a message."""

    category: str  # one of CATEGORIES
    text: str | None  # the message; None for an idle tick

    @property
    def emit(self) -> bool:
        return self.category in EMIT

    @property
    def kind(self) -> str:
        return "idle" if self.text is None else "prompted"


@dataclass(frozen=True)
class GateProbe:
    """Deterministic gate conversations in three splits with held-out wordings."""

    n_train: int = 32  # training conversations
    n_val: int = 12  # validation conversations (weight decay and threshold)
    n_test: int = 24  # test conversations (reported)
    turns: int = 8  # turns per conversation
    p_idle: float = 0.2  # share of idle ticks among turns
    name: str = "Agent"  # how messages address the agent
    seed: int = 0  # fixes every split

    def __post_init__(self):
        for f in ("n_train", "n_val", "n_test"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be a positive integer, got {v!r}.")
        if not isinstance(self.turns, int) or self.turns < 2:
            raise ValueError(f"turns must be an integer >= 2, got {self.turns!r}.")
        if not 0.0 <= self.p_idle < 1.0:
            raise ValueError(f"p_idle must be in [0, 1), got {self.p_idle!r}.")
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"name must be a non-empty string, got {self.name!r}.")

    def _message(self, rng: random.Random, category: str, split: str) -> str:
        template = rng.choice(TEMPLATES[category][split])
        return template.format(name=self.name, noun=rng.choice(NOUNS[split]))

    def conversation(self, rng: random.Random, split: str) -> tuple[Turn, ...]:
        cats, weights = list(WEIGHTS), list(WEIGHTS.values())
        out: list[Turn] = []
        while len(out) < self.turns:
            if out and out[-1].category == "cue":
                text = self._message(rng, "bare", split)  # the cued turn: a bare phrase
                out.append(Turn("cued", text))
            elif rng.random() < self.p_idle:
                out.append(Turn("idle", None))
            else:
                cat = rng.choices(cats, weights)[0]
                if cat == "cue" and len(out) == self.turns - 1:
                    cat = "statement"  # no room for the cued turn
                out.append(Turn(cat, self._message(rng, cat, split)))
        return tuple(out)

    def conversations(self, split: str) -> list[tuple[Turn, ...]]:
        """The conversations of one split, deterministic given the parameters."""
        n = {"train": self.n_train, "val": self.n_val, "test": self.n_test}[check_split(split)]
        rng = random.Random(f"gate|{self.seed}|{split}")
        return [self.conversation(rng, split) for _ in range(n)]

    def splits(self) -> dict[str, list[tuple[Turn, ...]]]:
        return {s: self.conversations(s) for s in ("train", "val", "test")}

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
