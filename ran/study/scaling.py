"""The RAN pipeline across models and reservoir sizes: one short recall run per point.

A *point* is one :class:`ran.training.config.TrainConfig` (model, reservoir units and
input scaling, K). :func:`scaling_point` trains (or loads) it and measures,
on the same code path for every architecture (GPT-2, Qwen2, Llama):

* recall on the test episodes with the reset, shuffled and stateless controls
  and chance (95% Wilson CIs);
* ΔPPL at init (gate closed: must equal the base exactly) and after training
  with the state carried from a probe pass (paired bootstrap 95% CIs);
* the forward-time overhead ratio (bootstrap 95% CI of the median);
* the base model's parameter count and the training wall time.

:func:`findings` builds notebook 04's findings blocks: the mechanism comparison
(:mod:`ran.study.tables`), the attractor's reported behaviours (:mod:`ran.study.claims`)
and the scaling table, sentence and figure (:func:`scaling_findings`).
"""

from __future__ import annotations

from ran.evaluation import measure as M
from ran.mechanisms.registry import trainable_count
from ran.study import claims as CL
from ran.study import compare as C
from ran.study import h1
from ran.study import tables as CT
from ran.tasks.episodes import evaluate
from ran.training.config import TrainConfig
from ran.training.train import train
from ran.util.memo import memo
from ran.util.results import figure, parse_list, table, text
from ran.util.stats import above

SCALE_CONTROLS = ("reservoir", "reset", "shuffled", "stateless")
SCALE_COLUMNS = ["model", "model params (M)", "units", "input scaling", "K", "recall", "reset",
                 "stateless", "chance", "ΔPPL init (%)", "ΔPPL trained (%)", "overhead ratio",
                 "train wall (min)"]  # fmt: skip


def n_params(model) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())


def per_model(models: list[str], values: str, cast=float) -> list:
    """One value per model from a comma string: one value for all, or exactly one each."""
    vals = parse_list(values, cast)
    if len(vals) == 1:
        return vals * len(models)
    if len(vals) != len(models):
        raise ValueError(f"need 1 or {len(models)} values for {len(models)} models, got {values!r}")
    return vals


def scaling_point(
    cfg: TrainConfig,
    outputs=None,
    n_test: int = 128,
    ppl_blocks: int = 8,
    block_len: int = 128,
    overhead_reps: int = 5,
    progress: bool = False,
) -> dict:
    """Train (or load) one point and measure recall, ΔPPL and overhead.

    Parameters
    ----------
    cfg : TrainConfig
        A secret-word run (``probe="secret_word"``, reservoir kind).
    outputs : ran.util.results.Outputs, optional
        Where the run is cached.
    n_test : int
        Test episodes (identical for every control).
    ppl_blocks, block_len : int
        Held-out perplexity blocks and tokens per block (also the overhead length).
    overhead_reps : int
        Interleaved timing repetitions.
    progress : bool
        Show the training progress bar.

    Returns
    -------
    dict
        ``model_name``, ``model_params``, ``units``, ``input_scaling``, ``k``,
        ``recall`` (evaluation with controls), ``dppl_init``, ``dppl_trained``,
        ``overhead``, ``trainable_params``, ``run``. With ``outputs``, cached
        (:mod:`ran.util.memo`) by every argument and the code.
    """
    if cfg.probe != "secret_word" or cfg.kind != "reservoir":
        raise ValueError("a scaling point is a secret-word run of the reservoir kind")
    args = (cfg, outputs, n_test, ppl_blocks, block_len, overhead_reps, progress)
    key = _point_key(cfg, n_test, ppl_blocks, block_len, overhead_reps)
    return memo(outputs, "scaling", key, _scaling_point, *args)


def _point_key(cfg, n_test, ppl_blocks, block_len, overhead_reps) -> dict:
    return dict(run=cfg.config_hash(), n_test=n_test, blocks=ppl_blocks, block_len=block_len,
                reps=overhead_reps)  # fmt: skip


def point_cached(cfg, outputs, n_test=128, ppl_blocks=8, block_len=128, overhead_reps=5) -> bool:
    """Whether :func:`scaling_point` with these arguments is cached (needs no training)."""
    from ran.util.memo import cached

    return cached(outputs, "scaling", _point_key(cfg, n_test, ppl_blocks, block_len, overhead_reps))


def _scaling_point(cfg, outputs, n_test, ppl_blocks, block_len, overhead_reps, progress):
    res = train(cfg, outputs, progress=progress)
    eps = h1.probe_test_episodes("secret_word", cfg.probe_params, cfg.seed, n_test=n_test)
    recall = evaluate(res.handle, res.tokenizer, eps, SCALE_CONTROLS, cfg.eval_batch_size,
                      cfg.scoring)  # fmt: skip
    base = M.base_reference(cfg.model_name, block_len, ppl_blocks, model_seed=cfg.model_seed)
    out = {
        "model_name": cfg.model_name,
        "model_params": n_params(base.model),
        "units": cfg.injection.reservoir.units,
        "input_scaling": cfg.injection.reservoir.input_scaling,
        "k": cfg.make_probe().n_candidates,
        "trainable_params": trainable_count(res.handle),
        "recall": recall,
        "dppl_init": M.dppl_at_init(base, "reservoir", cfg.injection_config()),
        "dppl_trained": M.dppl_carried(base, res.model, res.handle, cfg.seed),
        "overhead": M.overhead(base.model, res.model, block_len, overhead_reps, cfg.seed),
        "run": C.run_summary(res),
    }
    res.handle.reset_state()
    return out


def scaling_rows(points: list[dict]) -> list[list]:
    """One table row per point (accuracies with 95% Wilson CIs, ΔPPL and overhead with CIs)."""
    rows = []
    for p in points:
        r, d0, d1, o = p["recall"], p["dppl_init"], p["dppl_trained"], p["overhead"]
        rows.append(
            [p["model_name"], p["model_params"] / 1e6, p["units"], p["input_scaling"], p["k"],
             CT.fmt_acc(r["reservoir"]), CT.fmt_acc(r["reset"]), CT.fmt_acc(r["stateless"]),
             r["chance"], CT.fmt_ci(d0["dppl_pct"], d0["ci95"]),
             CT.fmt_ci(d1["dppl_pct"], d1["ci95"]), CT.fmt_ci(o["median_ratio"], o["ci95"], ".3f"),
             p["run"]["wall_time_s"] / 60]
        )  # fmt: skip
    return rows


def scaling_findings(
    points: list[dict],
    x_key: str,
    figure_path,
    outputs,
    *,
    scale_k: int,
    scale_steps: int,
    scale_n_test: int,
    scale_ppl_blocks: int,
    scale_block_len: int,
    scale_overhead_reps: int,
) -> list[dict]:
    """The scaling table, its sentence (points above both controls, best recall, exact
    ΔPPL at init) and figure. ``x_key`` "units": one model's reservoir units x input
    scaling (the default profile), else across models."""
    name = points[0]["model_name"]
    scale_what = (f"reservoir units x input scaling on {name}" if x_key == "units"
                  else "models " + ", ".join(p["model_name"] for p in points))  # fmt: skip
    best = max(points, key=lambda p: p["recall"]["reservoir"]["acc"])
    n_above = sum(above(p["recall"]["reservoir"], p["recall"]["reset"], p["recall"]["stateless"])
                  for p in points)  # fmt: skip
    return [
        table(
            f"Scaling ({scale_what}): K = {scale_k} secret-word recall after {scale_steps} steps "
            f"[95% Wilson CI] with the reset and stateless controls and chance ({scale_n_test} test "
            f"episodes), ΔPPL at init and after training ({scale_ppl_blocks} blocks x "
            f"{scale_block_len} tokens, bootstrap 95% CI), forward-time ratio ({scale_overhead_reps} "
            "reps, bootstrap 95% CI).", SCALE_COLUMNS, scaling_rows(points),
            timing_columns=CT.TIMING_COLUMNS),
        text(
            f"Scaling: the reservoir is above both the reset and the stateless control "
            f"(non-overlapping 95% CIs) at {n_above} of {len(points)} points; best recall "
            f"{CT.fmt_acc(best['recall']['reservoir'])} ({best['model_name']}, N = "
            f"{best['units']}, input scaling {best['input_scaling']:g}); ΔPPL at init is 0 exactly at "
            f"{sum(p['dppl_init']['dppl_pct'] == 0 for p in points)} of {len(points)} points."),
        figure(
            figure_path, f"Scaling ({scale_what}): recall with reset (dashed) and stateless (dotted "
            "line, open markers) controls and chance, ΔPPL after training and forward-time ratio vs "
            f"{x_key.replace('_', ' ')}; 95% CIs.", outputs),
    ]  # fmt: skip


def findings(
    cmp: dict[str, dict],
    cc,
    base_generation: dict,
    failed: dict,
    claim_rows: list,
    tol,
    attractor_gate: float,
    points: list[dict],
    x_key: str,
    figures: dict,
    outputs,
    **scale,
) -> list[dict]:
    """Notebook 04's findings: the comparison (:func:`ran.study.tables.findings`, the
    must-show at the middle K as the README headline), the attractor's reported
    behaviours (:func:`ran.study.claims.claims_findings`) and the scaling
    (:func:`scaling_findings`, ``scale`` its settings). ``figures``: ``comparison``
    and ``scaling`` paths."""
    k_head = cc.ks[len(cc.ks) // 2]  # the README headline is the must-show at the middle K
    out = CT.findings(cmp, cc, base_generation, figures["comparison"], outputs, failed,
                      CL.gated(attractor_gate), k_head)  # fmt: skip
    out += CL.claims_findings(claim_rows, attractor_gate, cc.model_name, tol)
    return out + scaling_findings(points, x_key, figures["scaling"], outputs, **scale)
