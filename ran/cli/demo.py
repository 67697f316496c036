"""``python -m ran demo``: a secret written in one process, recalled in another.

The first process loads the adapter, runs one pass over ``--text`` (the secret
word ``--key`` in it), saves the reservoir state (``handle.save_state``) and
starts a second process, ``python -m ran demo --recall STATE``, which loads
the adapter and the state and runs the question pass ``--question`` in a fresh
context: the only thing the two processes share is the state file. The recall
is a forced choice among the probe's keys used at training time (stored in the
adapter config), else the first 16 of :data:`ran.tasks.probes.DEFAULT_KEYS`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_ADAPTER = "smollm2-135m-fact"  # notebook 06's fact memory (committed; make all rewrites it)
DEFAULT_KEY = "flute"  # a held-out test key: never seen in training
DEFAULT_TEXT = "We walked by the river all morning. Do not forget the word {key}. Then it rained."
DEFAULT_QUESTION = "Earlier I gave you a word. That word was"  # a held-out question template
TOP = 5


def default_adapter() -> Path:
    """``data/adapters/smollm2-135m-fact`` under the repository (or ``$RAN_ROOT``)."""
    from ran.util.results import Outputs

    return Outputs().base / "data" / "adapters" / DEFAULT_ADAPTER


def add_demo_parser(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="write a secret word in one process, recall it from another",
        description="Write a secret word in one process and recall it from another.",
    )
    demo.add_argument(
        "--adapter", help=f"adapter folder (default: data/adapters/{DEFAULT_ADAPTER})"
    )
    demo.add_argument("--key", default=DEFAULT_KEY, help=f"the secret word (default {DEFAULT_KEY})")
    demo.add_argument(
        "--text",
        default=DEFAULT_TEXT,
        help=f"pass 1, {{key}} is replaced (default {DEFAULT_TEXT!r})",
    )
    demo.add_argument(
        "--question", default=DEFAULT_QUESTION, help=f"pass 2 (default {DEFAULT_QUESTION!r})"
    )
    demo.add_argument("--state", help="where pass 1 saves the state (default: a temporary file)")
    demo.add_argument("--recall", metavar="STATE", help="run pass 2 from a saved state (internal)")


def candidates(doc: dict) -> tuple[list[str], str]:
    """``(keys, prefix)`` of the recall: the training probe's keys (for ``fact_in_text``, its
    first K held-out test keys, never seen in training), else DEFAULT_KEYS[:16]."""
    from ran.tasks.probes import DEFAULT_KEYS, make_probe

    training = doc.get("training") or {}
    if training.get("probe"):
        try:
            probe = make_probe(training["probe"], **(training.get("probe_params") or {}))
        except ValueError:
            probe = None
        if probe is not None and hasattr(probe, "pool"):  # realistic probes: held-out test keys
            return list(probe.pool("keys", "test")[: probe.k]), probe.prefix
        if probe is not None and hasattr(probe, "keys") and hasattr(probe, "k"):
            return list(probe.keys[: probe.k]), probe.prefix
    return list(DEFAULT_KEYS[:16]), " "


def _adapter_dir(args) -> Path:
    from ran.cli.common import CLIError
    from ran.mechanisms.adapter import CONFIG_NAME

    adapter = Path(args.adapter) if args.adapter else default_adapter()
    if not (adapter / CONFIG_NAME).is_file():
        raise CLIError(
            f"there is no trained adapter at {adapter}; run `make all` to train it, or train one "
            f"with `python -m ran train CONFIG.json --out {adapter}`."
        )
    return adapter


def cmd_demo(args) -> int:
    """Pass 1 here, pass 2 in a subprocess (or pass 2 only, with ``--recall``)."""
    adapter = _adapter_dir(args)
    return _recall(args, adapter) if args.recall else _write(args, adapter)


def _write(args, adapter: Path) -> int:
    import torch

    from ran.cli.common import load_adapter
    from ran.tasks import scoring as S

    model, tok, handle, doc = load_adapter(adapter)
    keys, _ = candidates(doc)
    text = args.text.replace("{key}", args.key)
    ids, mask = S.batch_encode(tok, [text])
    handle.reset_state()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    print(f"pass 1 (process {os.getpid()}): {text!r}")
    if args.key not in keys:
        print(f"note: {args.key!r} is not one of the {len(keys)} keys the adapter was trained on")
    with tempfile.TemporaryDirectory(prefix="ran-demo-") as tmp:
        state = Path(args.state) if args.state else Path(tmp) / "state.safetensors"
        handle.save_state(state)
        print(f"saved the reservoir state ({handle.state.shape[1]} units) to {state}")
        cmd = [sys.executable, "-m", "ran", "demo", "--adapter", str(adapter)]
        cmd += ["--question", args.question, "--recall", str(state)]
        child = subprocess.run(cmd, capture_output=True, text=True)
    print(child.stdout, end="")
    if child.returncode != 0:
        print(child.stderr, end="", file=sys.stderr)
        return child.returncode
    top = [
        ln.split(":", 1)[1].split()[0] for ln in child.stdout.splitlines() if ln.startswith("top:")
    ]
    ok = bool(top) and top[0] == args.key
    print(f"the secret was {args.key!r}: {'recalled' if ok else 'not recalled'}")
    return 0


def _recall(args, adapter: Path) -> int:
    import torch

    from ran.cli.common import CLIError, load_adapter
    from ran.tasks.episodes import EpisodeRunner
    from ran.tasks.probes import Episode

    _, tok, handle, doc = load_adapter(adapter)
    keys, prefix = candidates(doc)
    try:
        handle.load_state(args.recall)
    except ValueError as err:
        raise CLIError(str(err)) from None
    scoring = ((doc.get("training") or {}).get("config") or {}).get("scoring", "auto")
    episode = Episode((args.question,), (0,), tuple(prefix + k for k in keys), 0)
    with torch.no_grad():
        scores = EpisodeRunner(handle, tok, scoring).question_scores([episode])[0]
    probs = torch.softmax(scores.float(), dim=-1)
    print(f"pass 2 (process {os.getpid()}, state from {args.recall}): {args.question!r}")
    order = probs.argsort(descending=True)[:TOP].tolist()
    print(f"top-{len(order)} of {len(keys)} candidates:")
    for i in order:
        print(f"  {keys[i]:<12} {probs[i].item():.3f}")
    print(f"top: {keys[order[0]]} (p = {probs[order[0]].item():.3f})")
    return 0
