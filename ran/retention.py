"""Notebook 06's computation: retention curves, half-lives, regime grids and their findings.

A *configuration* is a trained :class:`ran.train.TrainConfig` on the
``fact_in_text`` probe (the key inside running text). Each is evaluated on
the held-out test split (keys, templates, distractor wordings and plays never
seen in training) along two axes, with every control on the identical
episodes:

* distractor passes ``d`` between the fact and the question;
* idle reservoir ticks ``n`` (u = 0) before the question.

The *retention half-life* of a curve is the number of passes (or ticks) after
which recall is halfway between its value at 0 and chance, interpolated
linearly between measured points; a curve that never falls that far within
the measured range has a half-life beyond its last point (reported as
``> max``). The in-distribution row (training keys and templates on test
text) sits beside the held-out one.
"""

from __future__ import annotations

import math

from ran import probes as P
from ran.episodes import CONTROLS, evaluate
from ran.memo import memo
from ran.results import table, text

HELDOUT_TEXT = dict(lines_before=(1, 2), lines_after=(1, 2))  # the key always inside text


def test_episodes(cfg, n_test: int, **override) -> list[P.Episode]:
    """Held-out test episodes of a run's probe: the key inside text, ``override`` applied
    (e.g. ``distractors=(8,)``, ``idle_steps=(32,)``, ``heldout=False``, ``k=64``)."""
    params = {"seed": cfg.seed} | dict(cfg.probe_params)
    params |= {"distractors": (0,), "idle_steps": (0,), "n_test": n_test} | HELDOUT_TEXT
    return P.make_probe(cfg.probe, **(params | override)).splits()["test"]


def evaluate_condition(run, outputs, n_test: int, controls=CONTROLS, batch_size=32, **override):
    """Every control on the held-out test episodes of one condition (memoised by run)."""
    key = dict(run=run.hash, n=n_test, controls=list(controls), **override)

    def compute():
        eps = test_episodes(run.config, n_test, **override)
        return evaluate(run.handle, run.tokenizer, eps, tuple(controls), batch_size)

    res = memo(outputs, "retention", key, compute)
    return {c: {k: v for k, v in res[c].items() if k != "pred"} for c in controls} | {
        "chance": res["chance"],
        "n": res["n"],
    }


def curve(run, outputs, axis: str, values, n_test: int, controls=CONTROLS) -> list[dict]:
    """Recall along ``axis`` ("distractors" or "idle_steps") at each of ``values``."""
    if axis not in ("distractors", "idle_steps"):
        raise ValueError(f"axis must be 'distractors' or 'idle_steps', got {axis!r}")
    return [
        evaluate_condition(run, outputs, n_test, controls, **{axis: (int(v),)}) | {axis: int(v)}
        for v in values
    ]


def half_life(xs, accs, chance: float) -> float | None:
    """Passes until recall falls halfway from its value at ``xs[0]`` to ``chance``.

    Linear interpolation between measured points; ``math.inf`` when recall never
    falls that far within ``xs``; None when the first point is not above chance
    (there is nothing to retain).
    """
    if len(xs) != len(accs) or not xs:
        raise ValueError("half_life needs equal-length, non-empty xs and accs")
    start = accs[0]
    if not start > chance:
        return None
    mid = (start + chance) / 2
    pts = list(zip(xs, accs, strict=True))
    for (x0, a0), (x1, a1) in zip(pts[:-1], pts[1:], strict=True):
        if a1 <= mid:
            return x0 + (x1 - x0) * (a0 - mid) / (a0 - a1) if a0 != a1 else float(x1)
    return math.inf


def fmt_half(h: float | None, last) -> str:
    """A half-life as text: a number, ``> last`` or ``n/a`` (nothing above chance)."""
    if h is None:
        return "n/a"
    return f"> {last}" if math.isinf(h) else f"{h:.1f}"


def _acc(s: dict) -> str:
    return f"{s['acc']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def curve_table(label: str, axis: str, rows: list[dict], controls) -> dict:
    """A findings table of one configuration's curve (accuracy and CI per control)."""
    cols = [axis.replace("_steps", " ticks"), *controls, "chance"]
    body = [[r[axis], *[_acc(r[c]) for c in controls], r["chance"]] for r in rows]
    return table(f"{label}: held-out recall vs {cols[0]} (95% Wilson CIs)", cols, body)


def summary_rows(configs: dict[str, dict]) -> list[list]:
    """One row per configuration: recall at d = 0, at the largest d, after the most idle
    ticks, both half-lives, the reset and stateless controls at d = 0, train minutes."""
    out = []
    for label, c in configs.items():
        d, i = c["distractors"], c["idle"]
        chance = d[0]["chance"]
        hd = half_life([r["distractors"] for r in d], [r["reservoir"]["acc"] for r in d], chance)
        hi = half_life([r["idle_steps"] for r in i], [r["reservoir"]["acc"] for r in i], chance)
        out.append(
            [
                label,
                d[0]["reservoir"]["acc"],
                d[-1]["reservoir"]["acc"],
                i[-1]["reservoir"]["acc"],
                fmt_half(hd, d[-1]["distractors"]),
                fmt_half(hi, i[-1]["idle_steps"]),
                d[0]["reset"]["acc"],
                d[0]["stateless"]["acc"],
                c.get("in_distribution", {}).get("reservoir", {}).get("acc"),
                c["train_min"],
            ]
        )
    return out


SUMMARY_COLUMNS = [
    "configuration",
    "d=0",
    "d=max",
    "idle max",
    "half-life (passes)",
    "half-life (ticks)",
    "reset d=0",
    "stateless d=0",
    "in-dist. d=0",
    "train min",
]


def headline(label: str, c: dict, k: int) -> dict:
    """The generated headline sentence of the best configuration."""
    d, i = c["distractors"], c["idle"]
    d8 = next((r for r in d if r["distractors"] == 8), d[-1])
    return text(
        f"Best configuration ({label}), K = {k}, key inside running text, held-out keys and "
        f"templates: recall {_acc(d[0]['reservoir'])} at d = 0 (reset {d[0]['reset']['acc']:.3f}, "
        f"stateless {d[0]['stateless']['acc']:.3f}, chance {d[0]['chance']:.4f}); "
        f"{_acc(d8['reservoir'])} after {d8['distractors']} distractor passes; "
        f"{_acc(i[-1]['reservoir'])} after {i[-1]['idle_steps']} idle ticks "
        f"(n = {d[0]['n']} episodes per point)."
    )
