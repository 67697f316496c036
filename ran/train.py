"""Training the reservoir readout across passes, and evaluating it with controls.

One training step takes a batch of probe episodes, resets the reservoir, runs
every pass but the last through :meth:`handle.write_only` (the model only up
to the injected layer), runs the question pass through the full model, and
minimises the cross-entropy of the forced choice among the K candidates. The
gradient flows back through the slots into the state, through the fixed
reservoir and into the earlier passes (truncated at the episode boundary by
``detach_state``). Only the readout and gate (``handle.trainable_parameters()``,
plus LoRA adapters if enabled) are trained.

Every run is keyed by a hash of its :class:`TrainConfig`: the config, seed,
wall time and curves go to ``outputs.results/runs/<hash>.json`` and the trained
parameters to ``outputs.cache/runs/<hash>/params.safetensors``; a run whose
hash exists is loaded instead of retrained.

:func:`evaluate` runs the controls on the identical test episodes, in the same
batches: the trained reservoir, ``reset`` (state wiped before the question),
``shuffled`` (states rolled by one across the batch, so every question sees
another episode's state), ``stateless`` (gate closed, which
:mod:`ran.slots` makes bit-identical to the base model; with LoRA enabled it
is the adapted model) and ``oracle`` (every pass text in the question's
context, gate closed).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ran import probes as P
from ran.reservoir import ReservoirConfig
from ran.results import Outputs, package_versions, to_jsonable

CONTROLS = ("reservoir", "reset", "shuffled", "stateless", "oracle")
RUN_FORMAT = 1  # bump when the meaning of a saved run changes (invalidates the cache)
# Fields added after runs were cached: left out of the hash while at their default.
_HASH_OPTIONAL = {"kind": "reservoir"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (its hash keys the run cache)."""

    model_name: str = "tiny-llama"  # a ran.models name or a local HF id
    model_seed: int = 0  # seed of the tiny random models (ignored by real weights)
    layer: int | None = None  # injected layer; None = the surgery's default (middle)
    n_slots: int = 8  # M reservoir K/V slots
    pooling: str = "last"  # how the layer's attention output drives the reservoir
    gate_init: float = 0.0  # per-head gate pre-activation at init (tanh(0) = closed)
    readout_scale: float = 0.1  # readout init std is readout_scale / sqrt(N)
    normalize_drive: bool = True  # RMS-normalise the reservoir drive
    reservoir: ReservoirConfig = field(default_factory=ReservoirConfig)  # fixed ESN
    probe: str = "secret_word"  # a ran.probes name
    probe_params: dict = field(default_factory=dict)  # e.g. {"k": 16, "n_train": 2400}
    steps: int = 150  # optimiser steps (upper bound; early stopping may end sooner)
    batch_size: int = 16  # episodes per step
    learning_rate: float = 3e-3  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 10  # linear warm-up, then cosine decay to min_lr_ratio
    min_lr_ratio: float = 0.1  # final learning rate / peak
    grad_clip: float = 1.0  # max gradient norm (0 = no clipping)
    eval_every: int = 25  # steps between validation evaluations (0 = only at the end)
    patience: int = 3  # evaluations without val-accuracy gain before stopping (0 = never)
    eval_batch_size: int = 32  # episodes per evaluation batch
    scoring: str = "auto"  # forced choice: auto, first_token or sequence (see ran.probes)
    seed: int = 0  # readout init, data order
    lora_r: int = 0  # LoRA rank on the base model (0 = off, readout only)
    lora_alpha: int = 16  # LoRA alpha
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # LoRA target modules
    kind: str = "reservoir"  # memory mechanism, a ran.baselines kind (hashed only if not default)

    def __post_init__(self):
        if isinstance(self.reservoir, dict):
            self.reservoir = ReservoirConfig(**self.reservoir)
        self.lora_targets = tuple(self.lora_targets)
        self.probe_params = dict(self.probe_params)
        for name in ("steps", "batch_size", "n_slots", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "patience", "lora_r", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0 and weight_decay >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.scoring not in ("auto", "first_token", "sequence"):
            raise ValueError(f"scoring must be auto, first_token or sequence, not {self.scoring!r}")
        from ran.baselines import KINDS

        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        self.make_probe()  # validates probe name and parameters

    def make_probe(self) -> P.Probe:
        """The probe; its seed is ``seed`` unless ``probe_params`` sets one."""
        return P.make_probe(self.probe, **({"seed": self.seed} | self.probe_params))

    def injection_config(self):
        from ran.surgery import InjectionConfig

        return InjectionConfig(
            layer=self.layer,
            n_slots=self.n_slots,
            reservoir=self.reservoir,
            pooling=self.pooling,
            gate_init=self.gate_init,
            readout_scale=self.readout_scale,
            normalize_drive=self.normalize_drive,
            advance="forward",
            seed=self.seed,
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict; ``TrainConfig.from_dict(cfg.to_dict())`` has the same hash."""
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild a config saved by :meth:`to_dict` (e.g. a run file's ``config``)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)

    def config_hash(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of the config."""
        d = self.to_dict()
        for name, default in _HASH_OPTIONAL.items():  # fields added later: old hashes stay valid
            if d.get(name) == default:
                d.pop(name)
        blob = json.dumps({"format": RUN_FORMAT, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    """A trained (or loaded) run: the live model and handle, curves and paths."""

    config: TrainConfig
    hash: str
    model: object
    tokenizer: object
    handle: object
    history: dict
    wall_time_s: float
    loaded: bool
    run_path: Path
    params_path: Path
    episodes: dict = field(repr=False, default_factory=dict)

    def evaluate(self, split: str = "test", controls: tuple[str, ...] = CONTROLS) -> dict:
        """:func:`evaluate` on this run's ``split`` episodes."""
        eps = self.episodes[split]
        bs = self.config.eval_batch_size
        return evaluate(self.handle, self.tokenizer, eps, controls, bs, self.config.scoring)


# ----------------------------------------------------------------------------- statistics
def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``k / n``."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_summary(correct: torch.Tensor, chance: float) -> dict:
    """Accuracy, its Wilson 95% CI and chance for a boolean vector of outcomes."""
    k, n = int(correct.sum()), int(correct.numel())
    lo, hi = wilson_interval(k, n)
    return {"acc": k / n, "ci_low": lo, "ci_high": hi, "correct": k, "n": n, "chance": chance}


# ----------------------------------------------------------------------------- running episodes
def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 at each row's first real token (left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class EpisodeRunner:
    """Runs batches of episodes pass by pass through an injected model.

    Episodes of different lengths are right-aligned so every question pass
    happens in the same final call; a row whose episode has not started yet
    (or whose pass has fewer idle steps) keeps its state through the extra
    calls, so mixed schedules batch exactly. Equal schedules need no masking.
    """

    def __init__(self, handle, tokenizer, scoring: str = "auto"):
        self.h = handle
        self.model = handle.model
        self.tok = tokenizer
        self.scoring = scoring
        self.pad = P.pad_id(tokenizer)

    # -- state helpers
    def _state(self, batch: int) -> torch.Tensor:
        s = self.h.state
        return s if s is not None else torch.zeros(batch, self._units())

    def _units(self) -> int:
        from ran.baselines import state_width

        return state_width(self.h)

    def _keep(self, active: torch.Tensor, old: torch.Tensor) -> None:
        if not bool(active.all()):
            self.h.state = torch.where(active[:, None], self.h.state, old)

    def _idle(self, counts: list[int]) -> None:
        c = torch.tensor(counts)
        for m in range(int(c.max()) if len(counts) else 0):
            old = self._state(len(counts))
            self.h.idle(1, batch_size=len(counts))
            self._keep(c > m, old)

    def write(self, texts: list[str], active: torch.Tensor | None = None) -> None:
        """One cheap write pass (up to the injected layer) over a batch of texts."""
        ids, mask = P.batch_encode(self.tok, texts)
        old = self._state(len(texts)) if active is not None else None
        self.h.write_only(ids, mask)
        if active is not None:
            self._keep(active, old)

    # -- the question pass
    def question_scores(self, episodes: list[P.Episode]) -> torch.Tensor:
        """``(B, K)`` forced-choice scores of the question passes under the current state."""
        qb = P.encode_question(self.tok, episodes, self.scoring)
        if qb.first_token:
            ids, mask = P.pad_left(qb.prompts, self.pad)
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=_position_ids(mask),
                logits_to_keep=1,
            )
            return P.first_token_scores(out.logits[:, -1], qb.first_ids)
        k = len(episodes[0].candidates)
        ids, mask, cont = P.sequence_batch(qb, self.pad)
        if self.h is not None and self.h.state is not None:
            self.h.state = self.h.state.repeat_interleave(k, 0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask))
        return P.sequence_scores(out.logits, ids, cont, k)

    def run(self, episodes: list[P.Episode], control: str = "reservoir") -> torch.Tensor:
        """Reset the reservoir, run every pass, and score the question pass.

        Parameters
        ----------
        episodes : list of Episode
        control : str
            ``reservoir`` (normal), ``reset`` (state wiped before the question)
            or ``shuffled`` (states rolled by one across the batch before the
            question: each question sees another episode's state).

        Returns
        -------
        torch.Tensor
            ``(B, K)`` candidate scores (differentiable w.r.t. the readout).
        """
        if control not in ("reservoir", "reset", "shuffled"):
            raise ValueError("EpisodeRunner.run control must be reservoir, reset or shuffled")
        B = len(episodes)
        T = max(len(e.passes) for e in episodes)
        offsets = [T - len(e.passes) for e in episodes]
        self.h.reset_state()
        for s in range(T):
            js = [s - o if s >= o else None for o in offsets]
            active = torch.tensor([j is not None for j in js])
            self._idle([episodes[i].idle[j] if j is not None else 0 for i, j in enumerate(js)])
            if s == T - 1:
                break
            texts = [episodes[i].passes[j if j is not None else 0] for i, j in enumerate(js)]
            self.write(texts, None if bool(active.all()) else active)
        if control == "reset":
            self.h.reset_state()
        elif control == "shuffled":
            if B < 2:
                raise ValueError("the shuffled control needs batches of at least 2 episodes")
            self.h.state = self._state(B).roll(1, 0)
        return self.question_scores(episodes)


# ----------------------------------------------------------------------------- evaluation
def evaluate(
    handle,
    tokenizer,
    episodes: list[P.Episode],
    controls: tuple[str, ...] = CONTROLS,
    batch_size: int = 32,
    scoring: str = "auto",
) -> dict:
    """Forced-choice accuracy of every control on the identical episodes.

    Parameters
    ----------
    handle : ran.surgery.RANHandle
        The trained (or untrained) injection; ``handle.model`` is the model.
    tokenizer
        The model's tokenizer.
    episodes : list of Episode
        The test episodes; every control sees exactly these, in this order and
        batching.
    controls : tuple of str
        Any of ``reservoir``, ``reset``, ``shuffled``, ``stateless`` (the base
        model on the question pass alone) and ``oracle`` (the base model with
        every pass text in the question's context).
    batch_size : int
        Episodes per batch (also the pool the shuffled control draws from).
    scoring : {"auto", "first_token", "sequence"}

    Returns
    -------
    dict
        ``{control: {"acc", "ci_low", "ci_high", "correct", "n", "chance",
        "pred"}}`` plus ``"answers"``, ``"n"`` and ``"chance"``.
    """
    bad = [c for c in controls if c not in CONTROLS]
    if bad or not episodes:
        raise ValueError(f"unknown controls {bad} or no episodes; controls are {CONTROLS}")
    ks = {len(e.candidates) for e in episodes}
    if len(ks) != 1:
        raise ValueError("all episodes must have the same number of candidates")
    chance = 1.0 / ks.pop()
    runner = EpisodeRunner(handle, tokenizer, scoring)
    model = handle.model
    answers = torch.tensor([e.answer for e in episodes])
    out: dict = {"answers": answers.tolist(), "n": len(episodes), "chance": chance}
    chunks = [episodes[i : i + batch_size] for i in range(0, len(episodes), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:  # the shuffled control needs >= 2 per batch
        chunks[-2:] = [chunks[-2] + chunks[-1]]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for control in controls:
            preds = []
            for chunk in chunks:
                if control in ("stateless", "oracle"):
                    preds.append(_base_scores(runner, chunk, oracle=control == "oracle").argmax(1))
                else:
                    preds.append(runner.run(chunk, control).argmax(1))
            pred = torch.cat(preds)
            out[control] = accuracy_summary(pred == answers, chance) | {"pred": pred.tolist()}
        handle.reset_state()
    model.train(was_training)
    return out


def _base_scores(runner: EpisodeRunner, episodes: list[P.Episode], oracle: bool) -> torch.Tensor:
    """Question scores of the base model (injection disabled), optionally in-context."""
    if oracle:
        episodes = [
            P.Episode((e.oracle_prompt,), (0,), e.candidates, e.answer, e.probe, e.info)
            for e in episodes
        ]
    h = runner.h
    saved = h.slots.gate.detach().clone()
    h.reset_state()
    h.set_gate(0.0)  # tanh(0) = 0: the injected layer is bit-identical to the base layer
    try:
        return runner.question_scores(episodes)
    finally:
        h.set_gate(saved)
        h.reset_state()


# ----------------------------------------------------------------------------- training
def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _build(cfg: TrainConfig):
    """Load the model, freeze it, add LoRA if asked, and inject the reservoir."""
    from ran.baselines import make
    from ran.models import load_model

    model, tok = load_model(cfg.model_name, seed=cfg.model_seed)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    if cfg.lora_r:
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets)
        )
        model = inject_adapter_in_model(lora, model)
    handle = make(cfg.kind, model, cfg.injection_config())
    return model, tok, handle


def _named_trainable(model, handle) -> dict[str, torch.nn.Parameter]:
    """Trainable tensors by stable name: the handle's, then LoRA's (if any)."""
    out = {f"ran.{i}": p for i, p in enumerate(handle.trainable_parameters())}
    for name, p in model.named_parameters():
        if "lora_" in name:
            out[f"lora.{name}"] = p
    return out


def _paths(cfg: TrainConfig, outputs: Outputs) -> tuple[str, Path, Path]:
    h = cfg.config_hash()
    return (
        h,
        outputs.results / "runs" / f"{h}.json",
        outputs.cache / "runs" / h / "params.safetensors",
    )


def train(cfg: TrainConfig, outputs: Outputs | None = None, progress: bool = True) -> TrainResult:
    """Train (or load, if its hash exists) the readout of one configuration.

    Parameters
    ----------
    cfg : TrainConfig
    outputs : Outputs, optional
        Output roots; defaults to ``Outputs()``.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    TrainResult
        The live model, tokenizer and handle with the best-validation
        parameters loaded, curves and the probe's episodes by split.
    """
    from safetensors.torch import load_file, save_file

    outputs = outputs or Outputs()
    key, run_path, params_path = _paths(cfg, outputs)
    episodes = cfg.make_probe().splits()
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        model, tok, handle = _build(cfg)
        named = _named_trainable(model, handle)
        if run_path.is_file() and params_path.is_file():
            saved = load_file(str(params_path))
            if set(saved) != set(named):
                raise RuntimeError(f"cached run {params_path} does not match the model; delete it")
            with torch.no_grad():
                for name, p in named.items():
                    p.copy_(saved[name])
            doc = json.loads(run_path.read_text())
            return TrainResult(
                cfg,
                key,
                model,
                tok,
                handle,
                doc["history"],
                doc["wall_time_s"],
                True,
                run_path,
                params_path,
                episodes,
            )
        history = _fit(cfg, model, tok, handle, named, episodes, progress)
    wall = time.perf_counter() - t0
    params_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().contiguous().clone() for n, p in named.items()}, str(params_path))
    run_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "hash": key,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "wall_time_s": wall,
        "versions": package_versions(),
        "params": outputs.rel(params_path) if _inside(outputs, params_path) else str(params_path),
        "history": history,
    }
    run_path.write_text(json.dumps(to_jsonable(doc), indent=1, allow_nan=False) + "\n")
    return TrainResult(
        cfg, key, model, tok, handle, history, wall, False, run_path, params_path, episodes
    )


def _inside(outputs: Outputs, path: Path) -> bool:
    try:
        outputs.rel(path)
        return True
    except ValueError:
        return False


def _fit(cfg, model, tok, handle, named, episodes, progress) -> dict:
    """The optimisation loop; returns the curves and restores the best-val parameters."""
    params = list(named.values())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    runner = EpisodeRunner(handle, tok, cfg.scoring)
    train_eps, val_eps = episodes["train"], episodes["val"]
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    history = {"step": [], "loss": [], "lr": [], "val_step": [], "val_acc": []}
    best = (-1.0, 0, {n: p.detach().clone() for n, p in named.items()})
    evals_since_best = 0
    model.eval()  # no dropout: the base model is frozen and runs are deterministic
    bar = tqdm(range(cfg.steps), disable=not progress, desc=f"train {cfg.probe}", leave=False)
    for step in bar:
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(train_eps), generator=gen).tolist()
        batch = [train_eps[i] for i in order[: cfg.batch_size]]
        del order[: cfg.batch_size]
        scores = runner.run(batch, "reservoir")
        answers = torch.tensor([e.answer for e in batch])
        loss = torch.nn.functional.cross_entropy(scores, answers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        handle.detach_state()
        history["step"].append(step + 1)
        history["loss"].append(loss.item())
        history["lr"].append(sched.get_last_lr()[0])
        last = step + 1 == cfg.steps
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
            acc = evaluate(handle, tok, val_eps, ("reservoir",), cfg.eval_batch_size, cfg.scoring)[
                "reservoir"
            ]["acc"]
            history["val_step"].append(step + 1)
            history["val_acc"].append(acc)
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{acc:.3f}")
            if acc > best[0]:
                best = (acc, step + 1, {n: p.detach().clone() for n, p in named.items()})
                evals_since_best = 0
            else:
                evals_since_best += 1
                if cfg.patience and evals_since_best >= cfg.patience:
                    break
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(best[2][n])
    history["best_val_acc"], history["best_step"] = best[0], best[1]
    handle.reset_state()
    return history
