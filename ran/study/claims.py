"""The inference-time attractor layer's reported behaviours, checked against measurements.

The attractor layer was reported to change perplexity by about 0%, to cost
about 6.5% extra compute, to degrade long (~500-token) generation, and to be
fixed by gating the feedback with a burn-in. :func:`claims` turns two
measurements of :func:`ran.study.compare.compare_mechanism` (the attractor with its
feedback on, without and with the gating + burn-in) and the base model's
generation into a table "claim | reported | measured | reproduces?", where
every verdict follows from the numbers and the tolerances of
:class:`Tolerances`, stated in the table's caption.
"""

from __future__ import annotations

from dataclasses import dataclass

from ran.mechanisms.attractor import AttractorConfig, gated, ungated  # noqa: F401  (named here)

REPORTED = {
    "dppl": "about 0% ΔPPL",
    "overhead": "about 6.5% overhead",
    "degrades": "degrades ~500-token generation",
    "fix": "gating + burn-in fixes it",
}
CLAIM_COLUMNS = ["claim", "reported", "measured", "reproduces?"]
OVERHEAD_CLAIM = "forward-time overhead"  # the row that states a time (a rerun's diff skips it)


@dataclass(frozen=True)
class Tolerances:
    """When a measurement counts as reproducing a claim."""

    dppl_pct: float = 1.0  # "about 0%": the 95% CI of ΔPPL within ±this (percent)
    overhead_low_pct: float = 0.0  # "about 6.5%": the CI of the overhead (%) within [low, high]
    overhead_high_pct: float = 15.0
    rep4_margin: float = 0.05  # degraded: rep-4 above the base's by more than this (absolute)
    ppl_margin_pct: float = (
        10.0  # ... or its perplexity under the base above the base's by this (%)
    )

    def __post_init__(self):
        if self.dppl_pct <= 0 or self.rep4_margin < 0 or self.ppl_margin_pct < 0:
            raise ValueError("dppl_pct must be > 0 and the generation margins >= 0")
        if not self.overhead_low_pct <= self.overhead_high_pct:
            raise ValueError("overhead_low_pct must not exceed overhead_high_pct")

    def describe(self) -> str:
        """The tolerances as one sentence (for captions)."""
        return (
            f"about 0% means a 95% CI of ΔPPL within ±{self.dppl_pct:g}%; about 6.5% means a "
            f"95% CI of the overhead within {self.overhead_low_pct:g}-{self.overhead_high_pct:g}% "
            "(a CI across an edge is inconclusive); generation is degraded when "
            f"its 4-gram repetition exceeds the base's by more than {self.rep4_margin:g} or its "
            f"perplexity under the base exceeds the base's by more than {self.ppl_margin_pct:g}%"
        )


def degradation(gen: dict, base_gen: dict, tol: Tolerances) -> dict:
    """Rep-4 and base-PPL differences of a generation against the base model's."""
    d_rep = gen["rep4"]["mean"] - base_gen["rep4"]["mean"]
    d_ppl = 100 * (gen["base_ppl"]["mean"] / base_gen["base_ppl"]["mean"] - 1)
    worse = d_rep > tol.rep4_margin or d_ppl > tol.ppl_margin_pct
    return {"d_rep4": d_rep, "d_base_ppl_pct": d_ppl, "degraded": bool(worse)}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def band_verdict(ci: list[float], low: float, high: float) -> str:
    """ "yes" when the 95% CI lies inside [low, high], "no" when it misses the band
    entirely, "inconclusive" when it straddles an edge (the data cannot decide)."""
    lo, hi = sorted(ci)
    if low <= lo and hi <= high:
        return "yes"
    if hi < low or lo > high:
        return "no"
    return "inconclusive"


def claims(no_gate: dict, with_gate: dict, base_gen: dict, tol: Tolerances | None = None) -> list:
    """Rows "claim | reported | measured | reproduces?" from two attractor measurements.

    Parameters
    ----------
    no_gate, with_gate : dict
        :func:`ran.study.compare.compare_mechanism` results of the attractor with its
        feedback on, without (:func:`ungated`) and with (:func:`gated`) the
        gating + burn-in (only ``dppl_trained``, ``overhead`` and
        ``generation`` are read).
    base_gen : dict
        The base model's generation (``ran.study.compare.Base.generation``).
    tol : Tolerances, optional

    Returns
    -------
    list of list
        One row per claim; the last cell is "yes", "no", "inconclusive" (ΔPPL
        and overhead: the 95% CI straddles an edge of the tolerance band, see
        :func:`band_verdict`) or, for the fix when there is no degradation to
        fix, "untestable".
    """
    tol = tol or Tolerances()
    d0, d1 = no_gate["dppl_trained"], with_gate["dppl_trained"]
    dppl_ok = band_verdict(d0["ci95"], -tol.dppl_pct, tol.dppl_pct)
    o = no_gate["overhead"]
    ovh = 100 * (o["median_ratio"] - 1)
    ovh_ci = [100 * (x - 1) for x in o["ci95"]]
    ovh_ok = band_verdict(ovh_ci, tol.overhead_low_pct, tol.overhead_high_pct)
    g0 = degradation(no_gate["generation"], base_gen, tol)
    g1 = degradation(with_gate["generation"], base_gen, tol)
    fix = "untestable" if not g0["degraded"] else _yes(not g1["degraded"])
    n = no_gate["generation"]["per_prompt"][0]["n_tokens"]

    def gen_text(g: dict) -> str:
        return f"rep-4 {g['d_rep4']:+.3f}, base PPL {g['d_base_ppl_pct']:+.1f}% vs base"

    return [
        ["ΔPPL with the feedback on", REPORTED["dppl"],
         f"{d0['dppl_pct']:+.2f}% [{d0['ci95'][0]:+.2f}, {d0['ci95'][1]:+.2f}] without gating; "
         f"{d1['dppl_pct']:+.2f}% with gating", dppl_ok],
        [OVERHEAD_CLAIM, REPORTED["overhead"],
         f"{ovh:+.1f}% [{ovh_ci[0]:+.1f}, {ovh_ci[1]:+.1f}] (median, bootstrap 95% CI)",
         ovh_ok],
        [f"{n}-token greedy generation, no gating", REPORTED["degrades"], gen_text(g0),
         _yes(g0["degraded"])],
        [f"{n}-token greedy generation, gating + burn-in", REPORTED["fix"], gen_text(g1), fix],
    ]  # fmt: skip


def timing_rows(claim_rows: list) -> list[int]:
    """Indices of the claim rows that state a time (the forward-time overhead)."""
    return [i for i, row in enumerate(claim_rows) if row[0] == OVERHEAD_CLAIM]


def claims_findings(
    claim_rows: list, attractor_gate: float, model_name: str, tol: Tolerances
) -> list:
    """The claims table (with its settings and tolerances in the caption) and the sentence
    counting the reported behaviours that reproduce, as findings blocks; empty without rows."""
    from ran.util.results import table, text

    if not claim_rows:
        return []
    g_cfg = gated(attractor_gate)
    s_star = g_cfg.eta * (1 - g_cfg.decay) / (g_cfg.decay + g_cfg.eta * (1 - g_cfg.decay))
    return [
        table(
            f"The attractor layer's reported behaviours, measured on {model_name} with feedback "
            f"gain g = {attractor_gate:g} (no gating: burn-in 0, threshold 0; gating + burn-in: "
            f"burn-in {g_cfg.burn_in} passes, threshold {g_cfg.threshold:g}); g = "
            f"{attractor_gate:g} makes the feedback {100 * attractor_gate * s_star:.0f}% of the "
            f"residual stream's RMS at the fixed-point strength s* = {s_star:.2f} of a repeated "
            "input, a small edit as for a layer reported to leave perplexity unchanged. Verdicts "
            f"follow from the numbers: {tol.describe()}.", CLAIM_COLUMNS, claim_rows,
            timing_rows=timing_rows(claim_rows)),
        text(
            f"{sum(r[-1] == 'yes' for r in claim_rows)} of {len(claim_rows)} reported behaviours "
            f"of the attractor layer reproduce on {model_name} "
            f"({sum(r[-1] == 'inconclusive' for r in claim_rows)} inconclusive at this sample "
            "size): " + "; ".join(f"{r[1]}: {r[-1]}" for r in claim_rows) + "."),
    ]  # fmt: skip
