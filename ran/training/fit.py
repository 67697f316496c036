"""The optimisation loop behind :func:`ran.training.train.train` (one configuration, one run).

Each step draws ``cfg.batch_size`` training episodes (the order is seeded by
``cfg.seed``), runs them with :class:`ran.tasks.episodes.EpisodeRunner` (gradient
through the slots, the state and the earlier passes of the episode), adds the
KL term if ``cfg.kl_weight > 0`` (:class:`ran.training.kl.KLTerm`), clips and steps
AdamW, and detaches the state at the episode boundary. Validation accuracy
every ``cfg.eval_every`` steps drives early stopping; the best parameters are
restored at the end.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ran.tasks.episodes import EpisodeRunner, evaluate
from ran.training.kl import KLTerm

if TYPE_CHECKING:
    from ran.training.config import TrainConfig


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def fit(cfg, model, tok, handle, named, episodes, progress, fixed=frozenset()) -> dict:
    """The optimisation loop of :func:`ran.training.train.train`: AdamW on ``named`` (the readout,
    gate and any LoRA adapters) with a warm-up and cosine schedule, validation every
    ``cfg.eval_every`` steps with early stopping; returns the curves and leaves the
    best-validation parameters loaded (``cfg.select == "last"``: the final step's). The
    tensors named in ``fixed`` are kept as they are (e.g. a fitted read gate). The curves'
    ``validation_s`` (seconds spent validating) is a timing: ``train`` moves it to the run
    record's ``phase_s``, out of the history two runs of one config share bit for bit."""
    params = [p for n, p in named.items() if n not in fixed]
    for n, p in named.items():
        p.requires_grad_(n not in fixed)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    runner = EpisodeRunner(handle, tok, cfg.scoring)
    train_eps, val_eps = episodes["train"], episodes["val"]
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    history = {"step": [], "loss": [], "lr": [], "val_step": [], "val_acc": []}
    kl_term = KLTerm(cfg, model, tok, handle) if cfg.kl_weight else None
    if kl_term is not None:
        history["kl"] = []
    best = (-1.0, 0, {n: p.detach().clone() for n, p in named.items()})
    evals_since_best, validation_s = 0, 0.0
    model.eval()  # no dropout: the base model is frozen and runs are deterministic
    bar = tqdm(range(cfg.steps), disable=not progress, desc=f"train {cfg.probe}", leave=False)
    for step in bar:
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(train_eps), generator=gen).tolist()
        batch = [train_eps[i] for i in order[: cfg.batch_size]]
        del order[: cfg.batch_size]
        base_logp = kl_term.base(step) if kl_term is not None else None
        scores = runner.run(batch, "reservoir")
        answers = torch.tensor([e.answer for e in batch])
        loss = torch.nn.functional.cross_entropy(scores, answers)
        if kl_term is not None:
            kl = kl_term(step, base_logp, runner.read_state)
            history["kl"].append(kl.item())
            loss = loss + cfg.kl_weight * kl
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
            t_val = time.perf_counter()
            acc = evaluate(handle, tok, val_eps, ("reservoir",), cfg.eval_batch_size, cfg.scoring)[
                "reservoir"
            ]["acc"]
            validation_s += time.perf_counter() - t_val
            history["val_step"].append(step + 1)
            history["val_acc"].append(acc)
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{acc:.3f}")
            if acc > best[0] or (cfg.select == "last" and last):
                best = (acc, step + 1, {n: p.detach().clone() for n, p in named.items()})
                evals_since_best = 0
            else:
                evals_since_best += 1
                if cfg.patience and cfg.select == "val" and evals_since_best >= cfg.patience:
                    break
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(best[2][n])
    history["best_val_acc"], history["best_step"] = best[0], best[1]
    history["validation_s"] = validation_s
    handle.reset_state()
    return history
