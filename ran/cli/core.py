"""The library verbs of ``python -m ran``: ``train``, ``eval`` and ``demo``.

* ``train CONFIG [--out DIR] [--profile P]``: a :class:`ran.training.config.TrainConfig`
  from a JSON (or YAML) file, trained by :func:`ran.training.train.train` (cached by its
  hash) and saved as an adapter (:mod:`ran.mechanisms.adapter`), by default to
  ``data/adapters/<hash>`` under the profile's output root.
* ``eval ADAPTER [--probe NAME] [--param key=value ...] [--n-test N] [--out FILE]``:
  the adapter on a probe's test episodes with every control
  (:data:`ran.tasks.episodes.CONTROLS`), a results JSON and a one-line summary.
* ``demo [--adapter DIR]``: a secret written in one process, recalled in another
  (:mod:`ran.cli.demo`).

User errors (a bad config field, an unknown probe, a missing adapter) print one
sentence and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ran.cli.common import (  # noqa: F401  (CLIError, USER_ERROR: public here too)
    USER_ERROR,
    CLIError,
    load_adapter,
    parse_params,
    read_config_file,
)
from ran.util.results import PROFILES

COMMANDS = ("train", "eval", "demo")


# ----------------------------------------------------------------------------- parsers
def add_parsers(sub) -> None:
    """Add the ``train``, ``eval`` and ``demo`` sub-commands to an argparse subparsers object."""
    from ran.cli.demo import add_demo_parser

    tr = sub.add_parser(
        "train",
        help="train a readout from a TrainConfig file and save it as an adapter",
        description="Train a TrainConfig (JSON or YAML file of its fields) and save the adapter.",
    )
    tr.add_argument("config", help="JSON or YAML file of ran.training.config.TrainConfig fields")
    tr.add_argument("--out", help="adapter folder (default: data/adapters/<hash> of the profile)")
    tr.add_argument("--profile", choices=PROFILES, default="default", help="output roots")

    ev = sub.add_parser(
        "eval",
        help="evaluate an adapter on a probe's test episodes with every control",
        description="Evaluate an adapter with every control on a probe's test episodes.",
    )
    ev.add_argument("adapter", help="adapter folder written by save_pretrained / ran train")
    ev.add_argument(
        "--probe", help="a ran.tasks.probes name (default: the adapter's training probe)"
    )
    ev.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='probe parameter, the value parsed as JSON (k=16, keys=\'["a", "b"]\')',
    )
    ev.add_argument("--n-test", type=int, help="number of test episodes")
    ev.add_argument("--batch-size", type=int, default=32, help="episodes per batch")
    ev.add_argument("--out", help="results JSON (default: ADAPTER/eval_<probe>.json)")
    add_demo_parser(sub)


def run(args: argparse.Namespace) -> int:
    """Run one verb; a user error prints ``error: <sentence>`` and returns 2."""
    from ran.mechanisms.adapter import AdapterError
    from ran.util.configio import ConfigError

    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "eval":
            return cmd_eval(args)
        from ran.cli.demo import cmd_demo

        return cmd_demo(args)
    except (CLIError, ConfigError, AdapterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR


# ----------------------------------------------------------------------------- train
def read_train_config(path: str | Path):
    """A :class:`ran.training.config.TrainConfig` from a file; bad fields raise a one-sentence error."""
    from ran.training.config import TrainConfig
    from ran.util.configio import from_dict

    return from_dict(TrainConfig, read_config_file(path), Path(path).name)


def cmd_train(args) -> int:
    from ran.mechanisms.adapter import save_pretrained
    from ran.training.train import train
    from ran.util.results import Outputs

    cfg = read_train_config(args.config)
    outputs = Outputs(args.profile)
    result = train(cfg, outputs, progress=True)
    out = Path(args.out) if args.out else outputs.base / "data" / "adapters" / result.hash
    save_pretrained(result.handle, out, model_name=cfg.model_name, train_config=cfg)
    how = "loaded from the cache" if result.loaded else f"trained in {result.wall_time_s:.0f} s"
    best = result.history.get("best_val_acc")
    val = f", best validation accuracy {best:.3f}" if isinstance(best, float) else ""
    print(f"run {result.hash} ({how}{val}): {result.run_path}")
    print(f"adapter: {out}")
    return 0


# ----------------------------------------------------------------------------- eval
def _probe(doc: dict, name: str | None, params: dict):
    """The probe to evaluate: the training probe's parameters (and seed) when the names match."""
    from ran.tasks.probes import make_probe

    training = doc.get("training") or {}
    name = name or training.get("probe")
    if not name:
        raise CLIError("the adapter records no training probe; name one with --probe.")
    base = {}
    if name == training.get("probe"):
        seed = (training.get("config") or {}).get("seed", 0)
        base = {"seed": seed} | (training.get("probe_params") or {})
    try:
        return make_probe(name, **(base | params))
    except ValueError as err:
        raise CLIError(str(err).rstrip(".") + ".") from None


def summary_line(probe, result: dict) -> str:
    """``secret_word K=16 test n=128: reservoir 0.97 [0.93, 0.99] | reset 0.06 | ... | chance 0.0625``."""
    from ran.tasks.episodes import CONTROLS

    first, *rest = [c for c in CONTROLS if c in result]
    r = result[first]
    parts = [f"{first} {r['acc']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"]
    parts += [f"{c} {result[c]['acc']:.2f}" for c in rest]
    head = f"{probe.name} K={probe.n_candidates} test n={result['n']}"
    return f"{head}: {' | '.join(parts)} | chance {result['chance']:.4g}"


def cmd_eval(args) -> int:
    import torch

    from ran import __version__
    from ran.tasks.episodes import CONTROLS, evaluate
    from ran.util.atomic import atomic_write_json
    from ran.util.results import package_versions, to_jsonable

    params = parse_params(args.param)
    if args.n_test is not None:
        params["n_test"] = args.n_test
    adapter = Path(args.adapter)
    _, tok, handle, doc = load_adapter(adapter)
    probe = _probe(doc, args.probe, params)
    try:
        episodes = probe.splits()["test"]
    except ValueError as err:
        raise CLIError(str(err).rstrip(".") + ".") from None
    scoring = ((doc.get("training") or {}).get("config") or {}).get("scoring", "auto")
    with torch.no_grad():
        result = evaluate(handle, tok, episodes, CONTROLS, args.batch_size, scoring)
    line = summary_line(probe, result)
    out = Path(args.out) if args.out else adapter / f"eval_{probe.name}.json"
    doc_out = {
        "adapter": str(adapter),
        "probe": probe.name,
        "probe_params": probe.params(),
        "split": "test",
        "n": result["n"],
        "scoring": scoring,
        "summary": line,
        "results": result,
        "adapter_config": doc,
        "ran_version": __version__,
        "versions": package_versions(),
    }
    atomic_write_json(out, to_jsonable(doc_out))
    print(line)
    print(f"results: {out}")
    return 0
