"""The two configs of the Reservoir Agent: the runtime's (:class:`AgentConfig`) and the
scheduler's (:class:`SchedulerConfig`), and the agent's one error type.

Every field is validated in ``__post_init__`` and every problem is one sentence, so
``python -m ran agent`` can print it without a traceback.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ADAPTER = (
    "data/adapters/smollm2-135m-fact"  # the trained memory adapter (relative to the repo)
)
DEFAULT_HOME = (
    "build/agent"  # checkpoints and the event log, one folder per adapter, under the repo
)


class AgentError(ValueError):
    """A request the agent refuses (bad config, a checkpoint of another adapter, ...);
    the message is one sentence."""


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise AgentError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _seconds(name: str, value) -> None:
    if value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise AgentError(f"{name} must be a positive number of seconds or None, got {value!r}.")


READS = ("prompt", "always")  # AgentConfig.read: when a reply reads the memory


@dataclass(frozen=True)
class AgentConfig:
    """What the runtime of one :class:`ran.agent.ReservoirAgent` does in a pass.

    A prompted pass runs the model on the new message alone by default (a fresh
    context: what came before lives in the reservoir state); ``prepend_buffer=True``
    puts the context buffer in front of it instead. The buffer keeps the text of
    the latest passes within ``buffer_tokens``; the oldest passes leave it first.
    """

    buffer_tokens: int = 256  # token budget of the context buffer (oldest passes leave first)
    prepend_buffer: bool = False  # False: fresh context per message; True: buffer + message
    max_new_tokens: int = 16  # tokens of a reply (greedy decoding)
    reply_prompt: str = "{message}"  # what generate() continues; {message} is the pass text
    # "prompt": the memory is read while the reply's prompt runs and closed while its tokens are
    # generated (the first token carries what was read, in context; an open read at every new
    # token repeats the remembered word); "always": read at every generated token too
    read: str = "prompt"
    max_message_bytes: int = 65536  # longer messages are refused with one sentence (UTF-8 bytes)
    max_message_tokens: int = 512  # longer messages keep their last tokens (with a warning)
    checkpoint_dir: str | None = None  # folder of the crash-safe checkpoint; None: no checkpoints
    restore: bool = True  # on start, restore the last checkpoint in checkpoint_dir (if any)
    log_path: str | None = None  # JSON-lines event log (appended); None: no log file
    threshold: float | None = None  # gate threshold; None: the one the gate was tuned with
    review_emits: bool = (
        False  # False: a review pass only moves the state; True: the gate may speak
    )

    def __post_init__(self):
        _positive_int("buffer_tokens", self.buffer_tokens)
        _positive_int("max_new_tokens", self.max_new_tokens)
        _positive_int("max_message_bytes", self.max_message_bytes)
        _positive_int("max_message_tokens", self.max_message_tokens)
        for name in ("prepend_buffer", "restore", "review_emits"):
            if not isinstance(getattr(self, name), bool):
                raise AgentError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        if self.read not in READS:
            raise AgentError(f"read must be one of {', '.join(READS)}, got {self.read!r}.")
        if not isinstance(self.reply_prompt, str) or "{message}" not in self.reply_prompt:
            raise AgentError(f"reply_prompt must contain {{message}}, got {self.reply_prompt!r}.")
        for name in ("checkpoint_dir", "log_path"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str | Path):
                raise AgentError(f"{name} must be a path or None, got {v!r}.")
        t = self.threshold
        if t is not None and (not isinstance(t, numbers.Real) or not 0.0 <= t <= 1.0):
            raise AgentError(f"threshold must be a probability in [0, 1] or None, got {t!r}.")


@dataclass(frozen=True)
class SchedulerConfig:
    """When the scheduler runs an unprompted pass.

    Two kinds of unprompted pass, each with its own timer: an idle tick (u = 0,
    ``handle.idle(1)``) after ``idle_every`` seconds without any pass, and a pass
    over the context buffer with no new input (a *review*) after ``review_every``
    seconds without a prompted pass or review. Input always goes first: a message
    that arrives during a pass is queued in order and handled at the next tick.
    """

    idle_every: float | None = 5.0  # seconds without a pass before an idle tick; None: never
    review_every: float | None = None  # seconds without a prompted pass or review; None: never

    def __post_init__(self):
        _seconds("idle_every", self.idle_every)
        _seconds("review_every", self.review_every)
