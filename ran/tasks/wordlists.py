"""Word pools and templates of the realistic probes (:mod:`ran.tasks.realism`), split three ways.

Every pool is split into ``train``, ``val`` and ``test`` parts that share no
item: keys (single-token nouns for the SmolLM2 tokenizer, checked by a test),
write templates, question templates, distractor templates, names and filler
nouns. A held-out evaluation draws everything from the ``test`` part, so a
readout or write side can only score there by carrying what the pass said,
not by having memorised a key or a wording. The key split is a fixed
permutation (seed 2026) of :data:`KEY_POOL`, written out so a reader can see it.
"""

from __future__ import annotations

import random

# 195 nouns, each " word" one token for SmolLM2 (the legacy 64 keys of ran.tasks.probes first).
KEY_POOL = (
    "apple river tiger candle garden silver window mountain pencil rabbit doctor orange "
    "castle engine forest guitar hammer island jacket lemon marble needle ocean pepper "
    "rocket saddle tomato violin wagon zebra anchor basket butter camera cherry copper "
    "desert dragon eagle feather flower ghost glass honey horse jungle ladder lizard "
    "magnet mirror monkey nickel onion palace parrot pirate planet pocket puzzle queen "
    "rainbow ribbon salmon spider arrow bamboo banana barrel beacon blanket bottle bridge "
    "broom bucket button cabin cactus canoe carpet carrot cattle chain chair cheese chimney "
    "circus clock cloud coconut coffee comet compass cookie cotton crown crystal curtain "
    "diamond dolphin donkey drum elephant falcon fence flute fountain fox frog garlic "
    "giraffe goat grape harbor helmet hive hook iron ivory jar jewel kettle key kite knife "
    "lamp lantern leaf lion lobster lock map mask meadow mill moon mouse mushroom nail nest "
    "oak orchid owl paddle panda paper peach pearl penguin piano pillow pine pipe plum pony "
    "pumpkin quilt radio rose sail sand shark sheep shell ship shoe silk snake snow soap "
    "sock spoon star stone storm sugar sun sword table tent thread throne thunder tower "
    "train turtle umbrella valley vase velvet wallet whale wheat whistle wolf wool"
).split()
N_TEST_KEYS = 64  # held-out test keys (K = 64 forced choice needs 64)
N_VAL_KEYS = 64  # held-out validation keys (early stopping on unseen keys)


def _split_keys() -> dict[str, tuple[str, ...]]:
    order = list(KEY_POOL)
    random.Random(2026).shuffle(order)
    test, val = order[:N_TEST_KEYS], order[N_TEST_KEYS : N_TEST_KEYS + N_VAL_KEYS]
    train = order[N_TEST_KEYS + N_VAL_KEYS :]
    return {"train": tuple(train), "val": tuple(val), "test": tuple(test)}


KEYS = _split_keys()

# A fact told in a sentence; {key} is the word to keep.
WRITE = {
    "train": (
        "The secret word is {key}.",
        "Remember this word: {key}.",
        "My password for today is {key}, so do not forget it.",
        "Please keep the word {key} in mind.",
        "The code word for tonight is {key}.",
        "Here is the word to remember: {key}.",
        "I chose {key} as our secret word.",
        "Write down the word {key} somewhere safe.",
        "Our secret, which you must keep, is the word {key}.",
        "Memorise the following word: {key}.",
    ),
    "val": (
        "The password you will need later is {key}.",
        "Keep this one word safe: {key}.",
        "Tonight the watchword is {key}.",
    ),
    "test": (
        "Do not forget the word {key}.",
        "The magic word, {key}, opens the gate.",
        "Note the key word {key} for later.",
        "If anyone asks, the secret is {key}.",
    ),
}
# The question pass ends where the key would come next.
QUESTION = {
    "train": (
        "The secret word was",
        "The word I asked you to remember is",
        "Tell me the secret word. It is",
        "What was the word to keep in mind? It was",
        "Repeat the secret word:",
    ),
    "val": ("Which word did I tell you to keep? The word is", "Say the password:"),
    "test": (
        "Recall the hidden word. It is",
        "The word you must not forget is",
        "Earlier I gave you a word. That word was",
    ),
}
# Unrelated passes between the fact and the question: other statements and other questions.
DISTRACTOR = {
    "train": (
        "The {noun} was left on the table.",
        "I saw the {noun} near the river yesterday.",
        "She talked about the {noun} for an hour.",
        "Where is the {noun}? Nobody knows.",
        "How many people came to the {noun} this morning?",
        "What time does the {noun} open?",
    ),
    "val": ("The {noun} looked older than before.", "Who went to the {noun} last night?"),
    "test": (
        "A man from the {noun} walked past the door.",
        "Did anyone see the {noun} today?",
        "Nobody mentioned the {noun} again.",
    ),
}
FILLER_NOUNS = {
    "train": ("market", "school", "kitchen", "village", "office", "church", "farm", "station"),
    "val": ("library", "hospital", "bakery"),
    "test": ("museum", "theatre", "factory", "garage"),
}
# Two facts bound to names in different passes.
NAMES = {
    "train": ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Iris", "Jack"),
    "val": ("Kate", "Leo", "Maria", "Oscar"),
    "test": ("Paul", "Rosa", "Sam", "Tom", "Vera", "Alice"),
}
NAMED_WRITE = {
    "train": (
        "{name}'s secret word is {key}.",
        "{name} chose the word {key}.",
        "The word that {name} must remember is {key}.",
        "For {name}, the password is {key}.",
    ),
    "val": ("{name} picked {key} as a password.",),
    "test": ("{name} whispered the word {key}.", "The code word of {name} is {key}."),
}
NAMED_QUESTION = {
    "train": ("{name}'s secret word was", "What word did {name} choose? It was"),
    "val": ("The password {name} picked is",),
    "test": ("The word that belongs to {name} is",),
}
# Extra training question templates for the fitted read gate only (ran.training.read_gate):
# more ways of asking, so the gate learns "asked for the remembered word" rather than five
# wordings. Disjoint from every val/test question template (tests/unit/tasks check it).
GATE_QUESTIONS = (
    "Do you still know the word? It was",
    "The word you were given earlier is",
    "Now say the word I told you to remember:",
    "Which word was it again? It was",
    "I told you a word before. The word is",
    "Please repeat the word you memorised. It is",
    "You were asked to keep a word in mind. That word is",
    "Name the word from before:",
    "The special word from earlier was",
    "What word did you keep? The word was",
    "Think back to the word I gave you. It was",
    "The remembered word is",
)
POOLS = {
    "keys": KEYS,
    "write": WRITE,
    "question": QUESTION,
    "distractor": DISTRACTOR,
    "filler": FILLER_NOUNS,
    "names": NAMES,
    "named_write": NAMED_WRITE,
    "named_question": NAMED_QUESTION,
}


def corpus_keys(tokenizer, n: int = 2000, skip_common: int = 300, min_count: int = 3) -> tuple:
    """Many training keys: lowercase words of the training plays that are one token for
    ``tokenizer`` (with a leading space), minus the ``skip_common`` most frequent (function
    words) and every val/test key, by decreasing frequency (ties by spelling), ``n`` at most.

    A readout trained on a few dozen keys can memorise them; thousands force it to learn
    the copy that carries an unseen word. Deterministic given the corpus and tokenizer.
    """
    import collections
    import re

    from ran.tasks.data import shakespeare_lines

    counts = collections.Counter(
        w
        for line in shakespeare_lines("train")
        for w in re.findall(r"[A-Za-z]+", line)
        if w.islower() and 4 <= len(w) <= 10
    )
    banned = set(KEYS["val"]) | set(KEYS["test"]) | {n.lower() for p in NAMES.values() for n in p}
    ranked = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[skip_common:]
    out = []
    for word, c in ranked:
        if c < min_count or len(out) >= n:
            break
        if (
            word not in banned
            and len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1
        ):
            out.append(word)
    return tuple(out)
