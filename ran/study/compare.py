"""One comparison of the cross-pass memory mechanisms on one model, every number with controls.

For each registered kind (:func:`ran.mechanisms.registry.kinds`), :func:`compare_mechanism` returns:

* secret-word recall as a K-way forced choice at every K of ``ks``, with the
  readout trained once at ``K_train = max(ks)`` (the keys of a smaller K are
  the first K keys, so the K_train readout serves every K), and every control
  of :func:`ran.tasks.episodes.evaluate` on the identical test episodes;
* elapsed passes (one training run of its own) with every control;
* idle retention: the recall-trained readout tested after 0, 4, 16 ... idle
  passes, *without* training on idle episodes;
* held-out perplexity at init (gate closed: must equal the base exactly) and
  after training with the state carried from a probe pass, with a paired
  bootstrap 95% CI over blocks;
* greedy generation (4-gram repetition, distinct-2, perplexity under the
  base), the forward-time overhead ratio with a bootstrap 95% CI of its
  median, the trainable parameter count and the training wall time.

The attractor (:mod:`ran.mechanisms.attractor`) is not trained: it is evaluated
as built, with its feedback gain ``g`` open; "trained" then means "feedback
on". Training runs are cached by :func:`ran.training.train.train`. :func:`compare_all`
runs every kind; the tables, must-shows and findings are in
:mod:`ran.study.tables`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ran.evaluation import measure as M
from ran.mechanisms import registry
from ran.mechanisms.attractor import AttractorConfig
from ran.mechanisms.registry import make, trainable_count
from ran.reservoir.config import ReservoirConfig
from ran.study import h1
from ran.tasks.episodes import CONTROLS, evaluate
from ran.training.config import TrainConfig
from ran.training.train import train
from ran.util.memo import memo
from ran.util.results import parse_list

IDLE_CONTROLS = ("reservoir", "reset", "stateless")


@dataclass
class CompareConfig:
    """Everything one comparison measures; ``train`` holds further TrainConfig fields."""

    model_name: str = "tiny-llama"  # a ran.injection.models name or a local HF id
    layer: int | None = None  # injected layer (None: the middle layer)
    seed: int = 0  # readout init, data order, probe episodes, bootstrap
    ks: tuple[int, ...] = (6, 16, 64)  # K of the recall test; the readout is trained at max(ks)
    n_train: int = 2400  # training episodes per probe
    n_val: int = 64  # validation episodes per probe (early stopping)
    n_test: int = 128  # test episodes per probe and K (identical for every control)
    steps: int = 150  # optimiser steps of each recall run (upper bound)
    elapsed_steps: int = 40  # optimiser steps of each elapsed-passes run
    batch_size: int = 16  # episodes per step
    learning_rate: float = 0.02  # peak learning rate
    kl_weight: float = 0.0  # KL(base || injected) weight of TrainConfig (0 = off)
    reservoir: ReservoirConfig = field(default_factory=ReservoirConfig)  # fixed ESN
    secret_params: dict = field(default_factory=dict)  # extra secret-word probe parameters
    elapsed_params: dict = field(default_factory=dict)  # e.g. {"k_max": 4, "pre_max": 2}
    idle_counts: tuple[int, ...] = (0, 4, 16)  # idle passes before the question
    idle_k: int = 16  # keys of the idle-retention test (<= max(ks))
    ppl_blocks: int = 16  # held-out blocks for perplexity
    block_len: int = 256  # tokens per block (also the overhead sequence length)
    gen_tokens: int = 500  # greedy tokens per prompt
    n_gen_prompts: int = 1  # held-out generation prompts
    overhead_reps: int = 10  # interleaved timing repetitions
    # other TrainConfig fields (warmup_steps, ...), those of TrainConfig.injection as a dict
    # under "injection" (gate_init, ...; the layer and the reservoir are the fields above)
    train: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ks = tuple(sorted(int(k) for k in self.ks))
        self.idle_counts = tuple(int(n) for n in self.idle_counts)
        if not self.ks or self.ks[0] < 2:
            raise ValueError(f"ks must be a non-empty list of K >= 2, got {self.ks}")
        if not 2 <= self.idle_k <= self.ks[-1] or min(self.idle_counts, default=-1) < 0:
            raise ValueError("idle_k must be in 2..max(ks) and idle_counts non-empty and >= 0")
        for name in ("n_test", "ppl_blocks", "gen_tokens", "n_gen_prompts", "overhead_reps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.block_len < 2:
            raise ValueError(f"block_len must be >= 2, got {self.block_len}")
        self.recall_config("reservoir"), self.elapsed_config("reservoir")  # validate both

    @property
    def k_train(self) -> int:
        return self.ks[-1]

    def _train_config(self, kind: str, probe: str, params: dict, steps: int) -> TrainConfig:
        train = dict(self.train)
        injection = dict(train.pop("injection", {}))
        for name in ("layer", "reservoir"):
            if name in injection:
                raise ValueError(f"train.injection.{name}: set CompareConfig.{name} instead")
        return TrainConfig(
            model_name=self.model_name, kind=kind, probe=probe, probe_params=params,
            injection=dict(layer=self.layer, reservoir=self.reservoir) | injection,
            steps=steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
            kl_weight=self.kl_weight, seed=self.seed, **train,
        )  # fmt: skip

    def secret(self) -> dict:
        """Secret-word probe parameters of the recall run (K = K_train)."""
        sizes = dict(n_train=self.n_train, n_val=self.n_val, n_test=self.n_test)
        return sizes | self.secret_params | {"k": self.k_train}

    def recall_config(self, kind: str) -> TrainConfig:
        return self._train_config(kind, "secret_word", self.secret(), self.steps)

    def elapsed_config(self, kind: str) -> TrainConfig:
        sizes = dict(n_train=self.n_train, n_val=self.n_val, n_test=self.n_test)
        return self._train_config(kind, "elapsed", sizes | self.elapsed_params, self.elapsed_steps)


def compare_base(cc: CompareConfig, outputs=None) -> M.Base:
    """:func:`ran.evaluation.measure.base_reference` with the settings of a comparison."""
    return M.base_reference(cc.model_name, cc.block_len, cc.ppl_blocks, cc.gen_tokens,
                          cc.n_gen_prompts, cc.train.get("model_seed", 0), outputs)  # fmt: skip


def run_summary(res) -> dict:
    """Hash, config, wall time, cache flag and curve summary of a TrainResult."""
    h = res.history
    return {"hash": res.hash, "config": res.config.to_dict(), "wall_time_s": res.wall_time_s,
            "loaded": res.loaded, "steps_run": len(h["step"]), "best_val_acc": h["best_val_acc"]}  # fmt: skip


# ----------------------------------------------------------------------------- one mechanism
def compare_mechanism(
    kind: str,
    cc: CompareConfig,
    base: M.Base,
    outputs=None,
    attractor: AttractorConfig | None = None,
    elapsed: bool = True,
    progress: bool = False,
    base_controls: bool = True,
) -> dict:
    """Every number of the comparison for one mechanism.

    Parameters
    ----------
    kind : str
        A registered kind (:func:`ran.mechanisms.registry.kinds`).
    cc : CompareConfig
    base : ran.evaluation.measure.Base
        From :func:`compare_base` (same ``cc``).
    outputs : ran.util.results.Outputs, optional
        Where training runs are cached.
    attractor : AttractorConfig, optional
        The attractor's settings (``kind="attractor"`` only; its ``gate`` > 0
        turns the feedback on).
    elapsed : bool
        Run (train, for a trainable kind) and evaluate the elapsed-passes probe;
        ``False`` leaves ``elapsed`` None (the costliest run, skippable).
    progress : bool
        Show training progress bars.
    base_controls : bool
        Also evaluate the ``stateless`` and ``oracle`` controls. They run the
        base model (gate closed), identical for every mechanism: one
        mechanism of a comparison needs them, the others may skip them.

    Returns
    -------
    dict
        ``kind``, ``trainable_params``, ``recall`` (K -> evaluation),
        ``elapsed``, ``idle`` (count -> evaluation), ``dppl_init``,
        ``dppl_trained``, ``generation``, ``overhead``, ``runs`` and
        ``train_wall_s``. With ``outputs``, the dict is cached (:mod:`ran.util.memo`)
        by every argument and the code, so a warm rerun returns it without
        evaluating (its timings included).
    """
    if kind not in registry.kinds():
        raise ValueError(f"kind must be one of {', '.join(registry.kinds())}, got {kind!r}")
    if attractor is not None and "attractor" not in registry.get(kind).options:
        raise ValueError(
            f"attractor settings apply only to a mechanism that takes them, not {kind!r}"
        )
    args = (kind, cc, base, outputs, attractor, elapsed, progress, base_controls)
    key = dict(kind=kind, cc=cc, attractor=attractor, elapsed=elapsed, controls=base_controls)
    return memo(outputs, "compare", key, _compare_mechanism, *args)


def _compare_mechanism(kind, cc, base, outputs, attractor, elapsed, progress, base_controls):
    from ran.injection.models import load_model

    rc = cc.recall_config(kind)
    trained = registry.get(kind).trained
    options = {} if attractor is None else {"attractor": attractor}
    runs, res = {}, None
    if not trained:  # nothing to train: inject into a fresh copy of the model
        model, tok = load_model(cc.model_name, seed=rc.model_seed)
        handle = make(kind, model, rc.injection_config(), **options)
    else:
        res = train(rc, outputs, progress=progress)
        model, tok, handle = res.model, res.tokenizer, res.handle
        runs["recall"] = run_summary(res)
    bs = rc.eval_batch_size
    out: dict = {"kind": kind, "trainable_params": trainable_count(handle)}
    controls = CONTROLS if base_controls else ("reservoir", "reset", "shuffled")
    idle_controls = IDLE_CONTROLS if base_controls else ("reservoir", "reset")
    out["recall"] = {
        k: evaluate(handle, tok, h1.probe_test_episodes("secret_word", cc.secret(), cc.seed, k=k,
                    n_test=cc.n_test), controls, bs, rc.scoring) for k in cc.ks
    }  # fmt: skip
    out["idle"] = {
        n: evaluate(handle, tok, h1.probe_test_episodes("idle_retention", cc.secret(), cc.seed,
                    k=cc.idle_k, idle_steps=(n,), n_test=cc.n_test), idle_controls, bs,
                    rc.scoring) for n in cc.idle_counts
    }  # fmt: skip
    ec = cc.elapsed_config(kind)
    if not trained and elapsed:
        eps = h1.probe_test_episodes("elapsed", ec.probe_params, cc.seed)
        out["elapsed"] = evaluate(handle, tok, eps, controls, bs, ec.scoring)
    out["dppl_init"] = M.dppl_at_init(base, kind, rc.injection_config(), **options)
    out["dppl_trained"] = M.dppl_carried(base, model, handle, cc.seed)
    out["generation"] = M.generate(model, handle, base, cc.gen_tokens)
    out["overhead"] = M.overhead(base.model, model, cc.block_len, cc.overhead_reps, cc.seed)
    handle.reset_state()
    if not trained:
        handle.remove()
    model = handle = res = None  # free this model before the elapsed run loads another
    out.setdefault("elapsed", None)
    if trained and elapsed:
        el = train(ec, outputs, progress=progress)
        runs["elapsed"] = run_summary(el)
        out["elapsed"] = el.evaluate("test", controls)
        del el
    out["runs"] = runs
    out["train_wall_s"] = sum(r["wall_time_s"] for r in runs.values())
    return out


def parse_kinds(text: str, kinds: list[str]) -> list[str]:
    """A comma-separated list of kinds; "all" is ``kinds``, "none" (or "") is empty."""
    text = text.strip()
    if text == "all":
        return list(kinds)
    if text in ("none", ""):
        return []
    chosen = parse_list(text, str)
    unknown = [t for t in chosen if t not in registry.kinds()]
    if unknown:
        raise ValueError(
            f"unknown kind(s) {unknown}; choose from {', '.join(registry.kinds())}, all, none"
        )
    return chosen


def check_elapsed_kinds(elapsed_kinds, base_kind: str) -> None:
    """Fail fast unless ``base_kind`` (the mechanism that runs the base-model controls) is
    among ``elapsed_kinds`` whenever any kind runs the elapsed probe: the stateless
    control of every elapsed row comes from it."""
    if elapsed_kinds and base_kind not in elapsed_kinds:
        raise ValueError(
            f"elapsed kinds {list(elapsed_kinds)} must include {base_kind!r}, which runs the "
            "stateless control of the elapsed probe"
        )


# ----------------------------------------------------------------------------- every mechanism
def compare_all(
    cc: CompareConfig,
    base: M.Base,
    kinds: list[str],
    elapsed_kinds: list[str],
    outputs=None,
    attractor_gate: float = 0.1,
    progress: bool = False,
) -> tuple[dict[str, dict], dict[str, str]]:
    """:func:`compare_mechanism` of every kind; the attractor twice (no gating, and
    gating + burn-in, feedback gain ``attractor_gate``).

    The first kind (``reservoir`` when present) runs the base-model controls and
    must be among ``elapsed_kinds`` if any kind runs the elapsed probe. A run that
    fails (e.g. training diverged to NaN) is reported in the second dict
    (label -> error) instead of stopping the others.
    """
    base_kind = "reservoir" if "reservoir" in kinds else kinds[0]
    check_elapsed_kinds(elapsed_kinds, base_kind)
    if outputs is not None:  # the runs of the kinds not cached yet, in worker processes
        from ran.training.jobs import train_all
        from ran.util.memo import cached

        todo = [k for k in kinds if registry.get(k).trained and not cached(outputs, "compare", dict(
            kind=k, cc=cc, attractor=None, elapsed=k in elapsed_kinds,
            controls=k == base_kind))]  # fmt: skip
        train_all([cc.recall_config(k) for k in todo]
                  + [cc.elapsed_config(k) for k in todo if k in elapsed_kinds], outputs)  # fmt: skip
    done, failed = {}, {}
    for kind in kinds:
        spec = registry.get(kind)  # a mechanism may declare variants compared side by side
        variants = spec.variants(attractor_gate) if spec.variants else [(kind, {})]
        for label, options in variants:
            t0 = time.perf_counter()
            try:
                r = compare_mechanism(kind, cc, base, outputs, **options,
                                      elapsed=kind in elapsed_kinds,
                                      base_controls=kind == base_kind, progress=progress)  # fmt: skip
            except (ValueError, FloatingPointError) as exc:
                failed[label] = f"{type(exc).__name__}: {exc}"
                print(f"{label} FAILED after {time.perf_counter() - t0:.0f} s: {failed[label]}")
                continue
            done[label] = r
            print(f"{label} ({time.perf_counter() - t0:.0f} s): "
                  + ", ".join(f"K={k} {r['recall'][k]['reservoir']['acc']:.3f}" for k in cc.ks)
                  + (f", elapsed {r['elapsed']['reservoir']['acc']:.3f}" if r["elapsed"] else "")
                  + f", ΔPPL {r['dppl_trained']['dppl_pct']:+.2f}%", flush=True)  # fmt: skip
    return done, failed
