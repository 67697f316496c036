"""Notebook 06's findings: the headline, summary and curve tables, the regime, recurrence and
echo-state sentences, and :func:`findings`, which assembles them from the measured curves
(:func:`ran.study.retention.study`) in the order FINDINGS.md shows them."""

from __future__ import annotations

import math

from ran.study.h1 import DPPL_TARGET_PCT
from ran.study.h1_tradeoff import openness_sentence
from ran.study.retention import CURVE_CONTROLS, HELDOUT_TEXT, half_life
from ran.study.tables import fmt_acc
from ran.util.results import table, target, text
from ran.util.stats import above


def fmt_half(h: float | None, last) -> str:
    """A half-life as text: a number, ``> last`` or ``n/a`` (nothing above chance)."""
    if h is None:
        return "n/a"
    return f"> {last}" if math.isinf(h) else f"{h:.1f}"


def curve_table(label: str, axis: str, rows: list[dict], controls) -> dict:
    """A findings table of one configuration's curve (accuracy and CI per control)."""
    cols = [axis.replace("_steps", " ticks"), *controls, "chance"]
    body = [[r[axis], *[fmt_acc(r[c]) for c in controls], r["chance"]] for r in rows]
    return table(f"{label}: held-out recall vs {cols[0]} (95% Wilson CIs)", cols, body)


def summary_rows(configs: dict[str, dict]) -> list[list]:
    """One row per configuration: recall at d = 0, at the largest d, after the most idle
    ticks, both half-lives, the reset and stateless controls at d = 0, train minutes."""
    out = []
    for label, c in configs.items():
        d, i = c["distractors"], c["idle"]
        chance = d[0]["chance"]
        hd = hi = None  # no half-life when recall at 0 is not clearly above its reset control
        if above(d[0]["reservoir"], d[0]["reset"]):
            hd = half_life(
                [r["distractors"] for r in d], [r["reservoir"]["acc"] for r in d], chance
            )
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


def headline(label: str, c: dict, k: int, h1: dict | None = None, large=None, k_large=0) -> dict:
    """The generated headline sentence of the first configuration (the learned write side),
    with its K = ``k_large`` point and its H1 cost when measured."""
    d, i = c["distractors"], c["idle"]
    d8 = next((r for r in d if r["distractors"] == 8), d[-1])
    verdict = "above" if above(d[0]["reservoir"], d[0]["reset"]) else "not above"
    return text(
        f"Learned write side ({label}), K = {k}, key inside running text, held-out keys and "
        f"templates: recall {fmt_acc(d[0]['reservoir'])} at d = 0 (reset {d[0]['reset']['acc']:.3f}, "
        f"stateless {d[0]['stateless']['acc']:.3f}, chance {d[0]['chance']:.4f}); "
        f"{fmt_acc(d8['reservoir'])} after {d8['distractors']} distractor passes; "
        f"{fmt_acc(i[-1]['reservoir'])} after {i[-1]['idle_steps']} idle ticks "
        f"(n = {d[0]['n']} episodes per point). At d = 0 recall is {verdict} the reset "
        f"control with non-overlapping 95% CIs."
        + (
            f" K = {k_large}: {fmt_acc(large['d0']['reservoir'])} at d = 0."
            if large is not None
            else ""
        )
        + (
            f" H1 cost: dPPL {h1['dppl_pct']:+.2f}% on plain text after a fact pass."
            if h1 is not None
            else ""
        )
    )


def regime_sentence(grid, esn: dict | None = None) -> str:
    """Which regime lasts, read off the grid (and notebook 01's echo-state results if given)."""
    best = grid.sort_values(["idle", "d", "d0"], ascending=False).iloc[0]
    by_lr = grid.groupby("lr")[["d0", "d", "idle"]].mean().sort_index()
    g0 = grid.iloc[0]
    per_lr = "; ".join(
        f"lr = {lr:g}: {r.d0:.3f} / {r.d:.3f} / {r.idle:.3f}"
        for lr, r in by_lr.iloc[::-1].iterrows()
    )
    spread = grid.groupby("lr")["idle"].agg(lambda v: v.max() - v.min()).max()
    out = (
        f"The lasting regime is the slow one. Recall at d = 0 / after {int(g0.distractors)} "
        f"distractors / after {int(g0.idle_steps)} idle ticks, averaged over sr: {per_lr}; best "
        f"cell lr = {best.lr:g}, sr = {best.sr:g} ({best.idle:.3f} after the idle ticks). The leak "
        f"rate decides, the spectral radius hardly does (at most {spread:.3f} between the sr of "
        f"one lr after the idle ticks). Every reservoir step moves the state by lr (tanh(...) - r): "
        f"with lr x steps << 1 the written direction is still there to decode; at lr = 1 each idle "
        f"tick replaces r by tanh(W r) and each weakly gated distractor token overwrites part of "
        f"it, so both idle ticks and distractor passes erase the fact."
    )
    if esn:
        out += " " + esn["sentence"]
    return out


def recurrence_sentence(measured: dict, best_label: str) -> str | None:
    """What the fixed recurrence W adds to the best configuration (its W = 0 reference)."""
    ref = measured.get("no recurrence (W = 0)")
    if ref is None:
        return None
    b = measured[best_label]

    def at(m, axis, v):
        return point(m["distractors" if axis == "distractors" else "idle"], axis, v)

    dmax = b["distractors"][-1]["distractors"]
    imax = b["idle"][-1]["idle_steps"]
    pairs = [
        (f"d = {dmax}", at(b, "distractors", dmax), at(ref, "distractors", dmax)),
        (f"{imax} idle ticks", at(b, "idle_steps", imax), at(ref, "idle_steps", imax)),
    ]
    cmp = "; ".join(
        f"{name}: {fmt_acc(x['reservoir'])} with W vs {fmt_acc(y['reservoir'])} with W = 0"
        for name, x, y in pairs
    )
    return (
        f"What the fixed recurrence adds ({best_label}): {cmp}. With W = 0 the state is a leaky "
        f"sum of the gated writes, which decays without rotating, so the fixed decoder still reads "
        f"it: this memory is the leaky integrator. "
        + ("; ".join(
            f"{name}: {'the two differ (non-overlapping 95% CIs)' if above(x['reservoir'], y['reservoir']) or above(y['reservoir'], x['reservoir']) else 'no measured difference (the 95% CIs overlap)'}"
            for name, x, y in pairs
        ))
        + "."
    )  # fmt: skip


def esn_context(doc: dict | None) -> dict | None:
    """Notebook 01's memory capacity and echo-state boundary (its results JSON), for the
    regime sentence; None when they are missing."""
    try:
        r = doc["results"]
        n = max(r["memory"], key=int)
        mem, edge = r["memory"][n], r["chaos"]["autonomous"][n]
        lr = r["settings"]["lr"]
    except (KeyError, TypeError, ValueError):
        return None
    if None in (mem.get("max_mean"), mem.get("sr_at_max"), edge, lr):
        return None  # e.g. the smoke profile: no boundary inside its sr grid
    return {"sentence": (
        f"Notebook 01 (bare reservoir, N = {n}, lr = {lr:g}) measured the same trade: linear memory "
        f"capacity rises with sr to {mem['max_mean']:.1f} at sr = {mem['sr_at_max']:g}, while the "
        f"echo-state property (the state forgetting its start) is lost above sr ~ {edge:g}; at "
        f"lr = 1 that memory lasts a handful of steps, which is why idle ticks erase it here and "
        f"a small leak rate, not a larger sr, is what makes the state last."
    )}  # fmt: skip


def _default(field: str):
    from ran.tasks.realism import FactInText

    return FactInText.__dataclass_fields__[field].default


def point(rows: list[dict], axis: str, value: int) -> dict:
    """The point of a curve at ``value`` (the last one when ``value`` was not measured)."""
    return next((r for r in rows if r[axis] == value), rows[-1])


def bar_rows(measured: dict[str, dict]) -> list[dict]:
    """Rows (configuration, condition, acc, lo, hi) of the CI-bar panel: d = 0, d = 8
    (or the largest d), the most idle ticks, and the in-distribution row."""
    rows = []
    for label, m in measured.items():
        d8 = point(m["distractors"], "distractors", 8)
        picks = {
            "d=0": m["distractors"][0]["reservoir"],
            f"d={d8['distractors']}": d8["reservoir"],
            f"idle {m['idle'][-1]['idle_steps']}": m["idle"][-1]["reservoir"],
            "in-dist. d=0": m["in_distribution"]["reservoir"],
        }
        for cond, s in picks.items():
            rows.append(
                dict(
                    configuration=label,
                    condition=cond,
                    acc=s["acc"],
                    lo=s["ci_low"],
                    hi=s["ci_high"],
                )
            )
    return rows


def findings(
    measured,
    best_label,
    grid_df,
    large,
    k,
    k_large,
    fig_path,
    outputs,
    h1=None,
    esn=None,
    tradeoff=(),
) -> list[dict]:
    """Notebook 06's findings blocks: headline, summary table, curves, grid, H1, the trade-off
    blocks ``tradeoff`` (:func:`ran.study.h1_tradeoff.tradeoff_findings`), capacity."""
    from ran.tasks import wordlists as WL
    from ran.util.results import figure

    b = measured[best_label]
    h1 = h1 or {}
    out = [headline(best_label, b, k, h1.get(best_label), large, k_large) | {"headline": True}]
    sizes = {w: [len(WL.POOLS[w][s]) for s in ("train", "val", "test")] for w in WL.POOLS}
    out.append(
        text(
            "Probe pools (train / val / test, pairwise disjoint): "
            + "; ".join(f"{w} {a} / {v} / {t}" for w, (a, v, t) in sizes.items())
            + f". At test the key has {HELDOUT_TEXT['lines_before']} Shakespeare lines before "
            f"it and {HELDOUT_TEXT['lines_after']} after it (training: {_default('lines_before')} "
            f"before, {_default('lines_after')} after)."
        )
    )
    ac = b["all_controls"]
    out.append(
        text(
            f"Every control at d = 0 ({best_label}): reservoir {fmt_acc(ac['reservoir'])}, reset "
            f"{ac['reset']['acc']:.3f}, shuffled state {ac['shuffled']['acc']:.3f}, stateless "
            f"{ac['stateless']['acc']:.3f}, in-context oracle {ac['oracle']['acc']:.3f}; "
            f"in-distribution (training keys and templates) {fmt_acc(b['in_distribution']['reservoir'])}."
        )
    )
    if "two_facts" in b:
        tf = b["two_facts"]
        out.append(
            text(
                f"Two facts bound to names in different passes ({best_label}): "
                f"{fmt_acc(tf['reservoir'])} (reset {tf['reset']['acc']:.3f}, stateless "
                f"{tf['stateless']['acc']:.3f}, chance {tf['chance']:.4f})."
            )
        )
    out.append(
        table(
            f"Held-out recall per configuration (K = {k}): d = distractor passes, idle = "
            "ticks; half-lives interpolate between measured points",
            SUMMARY_COLUMNS,
            summary_rows(measured),
            timing_columns=["train min"],
        )
    )
    for label, m in measured.items():
        out.append(curve_table(label, "distractors", m["distractors"], CURVE_CONTROLS))
        out.append(curve_table(label, "idle_steps", m["idle"], CURVE_CONTROLS))
    if grid_df is not None and len(grid_df):
        g0 = grid_df.iloc[0]
        rows = grid_df[["lr", "sr", "d0", "d", "idle"]].values.tolist()
        out.append(
            table(
                f"Regime grid: the best run's learned write and read sides with its fixed reservoir "
                f"swapped for each leak rate lr and spectral radius sr (same seed and size; not "
                f"retrained), held-out recall at d = 0, after {int(g0.distractors)} distractor "
                f"passes and after {int(g0.idle_steps)} idle ticks (n = {int(g0.n)} per cell)",
                ["lr", "sr", "d=0", f"d={int(g0.distractors)}", f"idle {int(g0.idle_steps)}"],
                rows,
            )
        )
        out.append(text(regime_sentence(grid_df, esn)))
    rec = recurrence_sentence(measured, best_label)
    if rec:
        out.append(text(rec))
    for label, r in (h1 or {}).items():
        out.append(
            text(
                f"H1 with the new read and write side ({label}): perplexity of {r['n_blocks']} "
                f"held-out blocks of {r['block_len']} tokens with the state of one fact pass "
                f"carried {r['ppl_trained']:.2f} vs {r['ppl_base']:.2f} untouched (dPPL "
                f"{r['dppl_pct']:+.2f}%); at init the logits are torch.equal to the base model's: "
                f"{'yes' if r['init_equal'] else 'no'}."
                + (" " + openness_sentence(r["openness"]) if r.get("openness") else "")
            )
        )
        out.append(
            target(
                f"Retention: H1, dPPL on plain text after a fact pass ({label})",
                f"{r['dppl_pct']:+.2f}%",
                f"|dPPL| <= {DPPL_TARGET_PCT:g}%",
                abs(r["dppl_pct"]) <= DPPL_TARGET_PCT,
            )
        )
    out += list(tradeoff)
    if large is not None:
        d0 = large["d0"]
        out.append(
            text(
                f"Capacity, K = {k_large} held-out keys ({best_label}): {fmt_acc(d0['reservoir'])} at "
                f"d = 0 (reset {d0['reset']['acc']:.3f}, stateless {d0['stateless']['acc']:.3f}, "
                f"chance {d0['chance']:.4f}); {fmt_acc(large['d8']['reservoir'])} after 8 distractors."
            )
        )
    out.append(
        figure(
            fig_path,
            "Held-out recall vs distractor passes and idle ticks (95% CI bands; dashed: reset "
            "control; dotted: chance), CI bars per condition, and the lr x sr regime grid.",
            outputs,
        )
    )
    return out


def extended_findings(measured, default_rows, k, fig_path, outputs, tradeoff=()) -> list[dict]:
    """The findings of the wide comparison (``06_extended``): the rows ``make all`` does not
    train (those not in ``default_rows``) beside the default ones, their curves, and the KL
    trade-off blocks ``tradeoff``."""
    from ran.util.results import figure

    extra = [lb for lb in measured if lb not in default_rows]
    out = [
        text(
            f"The wide comparison adds {len(extra)} configuration(s) to notebook 06's default "
            f"rows ({', '.join(extra) or 'none'}) on the same held-out probe (K = {k}), with the "
            "default rows loaded from their cached runs and evaluations."
        ),
        table(
            f"Held-out recall per configuration, wide comparison (K = {k}): d = distractor "
            "passes, idle = ticks; half-lives interpolate between measured points",
            SUMMARY_COLUMNS,
            summary_rows(measured),
            timing_columns=["train min"],
        ),
    ]
    for label in extra:
        out.append(
            curve_table(label, "distractors", measured[label]["distractors"], CURVE_CONTROLS)
        )
        out.append(curve_table(label, "idle_steps", measured[label]["idle"], CURVE_CONTROLS))
    out += list(tradeoff)
    out.append(
        figure(
            fig_path,
            "Wide comparison: held-out recall vs distractor passes and idle ticks (95% CI bands; "
            "dashed: reset control; dotted: chance) and CI bars per condition.",
            outputs,
        )
    )
    return out
