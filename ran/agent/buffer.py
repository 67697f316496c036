"""The agent's context buffer: the text of its latest passes within a token budget.

Each prompted pass (its message, and the reply if it emitted one) joins the buffer
as one :class:`Entry`. When the buffer's rendered text exceeds ``budget`` tokens
the oldest entries leave it; what they carried lives on only in the reservoir
state. The budget is exact: :attr:`ContextBuffer.tokens` is the token count of
:meth:`ContextBuffer.render` (the entries joined by newlines), the text a review
pass or ``prepend_buffer`` puts in the model's context. An entry that alone is
over the budget keeps its last ``budget`` tokens.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

SEPARATOR = "\n"


@dataclass(frozen=True)
class Entry:
    """The text one pass left in the buffer."""

    pass_index: int  # the pass that wrote it
    kind: str  # "prompted" or "review"
    text: str  # the message (empty for a review)
    reply: str | None = None  # what the agent emitted, if it did

    def render(self) -> str:
        parts = [p for p in (self.text, self.reply) if p]
        return SEPARATOR.join(parts)


class ContextBuffer:
    """A deque of :class:`Entry` whose rendered text stays within ``budget`` tokens.

    Parameters
    ----------
    tokenizer : the model's tokenizer (counts tokens without special tokens).
    budget : int
        Token budget of :meth:`render`.
    """

    def __init__(self, tokenizer, budget: int):
        if budget < 1:
            raise ValueError(f"the buffer budget must be >= 1 token, got {budget}.")
        self.tok, self.budget = tokenizer, int(budget)
        self.entries: deque[Entry] = deque()
        self.tokens = 0
        self.dropped = 0  # entries that left the buffer so far

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) if text else 0

    def render(self) -> str:
        return SEPARATOR.join(e.render() for e in self.entries if e.render())

    def _fit(self, entry: Entry) -> Entry:
        """The entry itself, or its text cut to its last ``budget`` tokens."""
        if self.count(entry.render()) <= self.budget:
            return entry
        ids = self.tok(entry.render(), add_special_tokens=False)["input_ids"][-self.budget :]
        text = self.tok.decode(ids, skip_special_tokens=True)
        while text and self.count(text) > self.budget:  # a decode/encode round trip can grow
            text = text[1:]
        return Entry(entry.pass_index, entry.kind, text, None)

    def add(self, entry: Entry) -> list[Entry]:
        """Append ``entry`` and drop the oldest entries until the budget holds; returns them."""
        self.entries.append(self._fit(entry))
        dropped = []
        self.tokens = self.count(self.render())
        while self.tokens > self.budget and len(self.entries) > 1:
            dropped.append(self.entries.popleft())
            self.tokens = self.count(self.render())
        self.dropped += len(dropped)
        return dropped

    def to_list(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    def load(self, entries: list[dict], dropped: int = 0) -> None:
        """Replace the content with saved entries (from :meth:`to_list`)."""
        self.entries = deque(Entry(**e) for e in entries)
        self.tokens = self.count(self.render())
        self.dropped = int(dropped)
        while self.tokens > self.budget and len(self.entries) > 1:  # a smaller budget now
            self.entries.popleft()
            self.dropped += 1
            self.tokens = self.count(self.render())

    def __len__(self) -> int:
        return len(self.entries)
