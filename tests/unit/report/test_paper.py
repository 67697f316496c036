"""FINDINGS as a paper: the generated abstract, the Targets table, the runs appendix, ratios
within noise, and no over-precise numbers (fake results under a temporary root)."""

from __future__ import annotations

import json
import re

from ran.report.abstract import SOURCES, abstract
from ran.report.appendix import label, runs_table
from ran.report.findings import fill_markers, render_findings
from ran.report.render import significant_digits, tidy_numbers
from ran.report.targets import render_targets
from ran.util.results import REPO_ROOT, Outputs, save_results, table, target, text
from ran.util.wording import ratio_text, spans_one

NUMBER_RE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def _too_precise(md: str, max_sig: int = 6) -> list[str]:
    """The numbers of rendered markdown with more than ``max_sig`` significant digits (code
    spans, where hashes live, left out)."""
    plain = re.sub(r"`[^`]*`", "", md)
    return [n for n in NUMBER_RE.findall(plain) if significant_digits(n) > max_sig]


def _acc(a: float) -> dict:
    return {"acc": a, "ci_low": a - 0.05, "ci_high": min(1.0, a + 0.05), "n": 128}


def test_targets_table_collects_the_targets_of_two_results_files(tmp_path):
    out = Outputs("smoke", root=tmp_path)
    save_results("03_demo", {}, out, seed=0, findings=[
        text("Recall 0.970 [0.920, 1.000]."),
        target("recall at K = 16", "0.970 [0.920, 1.000]", ">= 0.95", True),
        target("recall at K = 64", "0.586 [0.499, 0.668]", ">= 0.9", False),
    ])  # fmt: skip
    save_results("bench", {}, out, seed=0, findings=[
        target("overhead ratio", 0.9605, "<= 1.02", True, ci=[0.8116, 1.121], ratio=True),
        target("pass ratio", 1.041, "<= 1.05", True, ci=[1.027, 1.049], ratio=True),
    ])  # fmt: skip
    md = render_targets(out)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4 and md.count("Table: Targets") == 1
    assert md.startswith("4 targets, 3 met and 1 NOT met; 1 of the ratios are within noise")
    assert "| recall at K = 64 | 0.586 [0.499, 0.668] | >= 0.9 | NOT met |  | `03_demo` |" in md
    assert (
        "| overhead ratio | 0.9605 [0.8116, 1.121] | <= 1.02 | met | within noise | `bench` |" in md
    )
    assert "| pass ratio | 1.041 [1.027, 1.049] | <= 1.05 | met |  | `bench` |" in md
    assert rows[0].startswith("| recall at K = 16") and rows[-1].startswith("| pass ratio")
    # a section does not repeat its targets: they are rendered once, in the Targets table
    section = render_findings(json.loads((out.results / "03_demo.json").read_text()))
    assert "Recall 0.970" in section and "K = 64" not in section and ">= 0.95" not in section
    empty = render_targets(Outputs("smoke", root=tmp_path / "none"))
    assert empty.startswith("*No targets recorded yet")


def test_abstract_says_no_results_yet_for_missing_files(tmp_path):
    out = Outputs("smoke", root=tmp_path)
    names = sorted({n for files, _ in SOURCES for n in files if not n.endswith("?")})
    none = abstract(out)
    assert none.startswith("No results yet for ") and all(f"`{n}`" in none for n in names)
    assert "06_extended" not in none  # an optional source is never asked for
    seeds = {
        "variance": {"min": 0.148, "max": 0.293, "mean": 0.213, "sd": 0.062},
        "settings": {"seeds": list(range(8)),
                     "base_config": {"steps": 30, "probe_params": {"k": 16}}},
        "chi2_homogeneity": {"p": 7.8e-07},
    }  # fmt: skip
    save_results("05_seed_selection", seeds, out, seed=0)
    cap = {"16": {"reservoir": _acc(0.97), "reset": _acc(0.05), "stateless": _acc(0.05),
                  "chance": 1 / 16, "n": 128}}  # fmt: skip
    save_results("03_h1_nondestruction", {"capacity": cap}, out, seed=0)  # no perplexity
    some = abstract(out)
    assert "Across 8 reservoir seeds, K = 16 test accuracy" in some
    assert "from 0.148 to 0.293 (mean 0.213, sd 0.062; chi-square" in some
    assert "beyond sampling noise" in some
    assert "among K = 16 with accuracy 0.970 [0.920, 1.000]" in some
    assert "against 0.050 with the state reset" in some
    assert "lack a number this sentence needs" in some  # H1 without its perplexities
    assert "No results yet for `02_surgery`, `06_retention`, `07_agent`, `bench`" in some
    assert "`05_seed_selection`" not in some.split("No results yet")[1]


def test_a_ratio_whose_ci_contains_1_is_within_noise():
    assert spans_one([0.812, 1.121]) and spans_one((1.0, 1.2)) and not spans_one([1.03, 1.05])
    assert ratio_text(0.961, [0.812, 1.121]) == "0.961 (95% CI 0.812-1.121; within noise of 1)"
    assert ratio_text(1.041, [1.027, 1.049]) == "1.041 (95% CI 1.027-1.049)"
    assert "IQR 0.982-1.039; within noise" in ratio_text(1.015, [0.982, 1.039], interval="IQR")
    noisy = target("overhead", 0.961, "<= 1.02", True, ci=[0.812, 1.121], ratio=True)
    assert noisy["met"] is True and noisy["note"] == "within noise"  # still met, but noise
    assert target("overhead", 0.961, "<= 1.02", True, ci=[0.812, 1.121])["note"] == ""
    assert target("saving", 0.66, "<= 0.7", True, ci=[0.41, 0.77], ratio=True)["note"] == ""


def test_no_rendered_number_has_more_than_six_significant_digits(tmp_path):
    out = Outputs("smoke", root=tmp_path)
    doc = {"meta": {"name": "03_x", "profile": "smoke"}, "findings": [
        text("NLL 4.058846033465747 vs 4.058846033465747; share 1.000000-1.000000; v3.11.7."),
        table("A caption with 0.000123456789", ["a", "b", "c"],
              [[1575945, 4.058846033465747, "57.90744924970"]], fmt=".10g"),
    ]}  # fmt: skip
    md = render_findings(doc, tmp_path, tmp_path)
    assert _too_precise(md) == [], _too_precise(md)
    assert "NLL 4.05885 vs 4.05885" in md and "1.00000-1.00000" in md and "v3.11.7" in md
    assert "| 1.58M | 4.05885 | 57.9074 |" in md and "0.000123457" in md
    assert tidy_numbers("p = 6.84e-07, hash 6c47c7ebabc0d5b1, 0.0000000") == (
        "p = 6.84e-07, hash 6c47c7ebabc0d5b1, 0.0000000"
    )
    # the committed FINDINGS.md, as rendered from data/results
    committed = (REPO_ROOT / "FINDINGS.md").read_text()
    assert not re.search(r"[0-9]\.[0-9]{7,}", committed)
    assert _too_precise(committed) == []
    assert out.results  # (the fake root is only a place to render from)


def test_appendix_lists_the_runs_the_results_name(tmp_path):
    out = Outputs("smoke", root=tmp_path)
    cfg = {"model_name": "m", "kind": "reservoir", "probe": "secret_word",
           "probe_params": {"k": 16}, "steps": 10, "learning_rate": 0.02, "batch_size": 8,
           "kl_weight": 3.0, "query_gate": True,
           "reservoir": {"units": 512, "sr": 0.9, "lr": 1.0, "input_scaling": 1.0, "seed": 0}}  # fmt: skip
    (out.results / "runs").mkdir(parents=True)
    nested = {k: v for k, v in cfg.items() if k not in ("query_gate", "reservoir")} | {
        "injection": {"readout": "decoded", "write_gate": True, "reservoir": {
            "units": 1024, "sr": 0.9, "lr": 0.01, "input_scaling": 0.1, "seed": 0}}}  # fmt: skip
    for h in ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"):
        rec = {"hash": h, "config": nested if h[0] == "b" else cfg, "wall_time_s": 120.0,
               "history": {"step": [5, 10]}}  # fmt: skip
        (out.results / "runs" / f"{h}.json").write_text(json.dumps(rec))
    save_results("03_h1", {"runs": {"secret_word K=16": {"hash": "aaaaaaaaaaaaaaaa"}}}, out, seed=0)
    save_results("04_cmp", {"comparison": {"reservoir": {"runs": {"recall": {
        "hash": "aaaaaaaaaaaaaaaa"}}}}, "points": [{"run": {"hash": "bbbbbbbbbbbbbbbb"}}],
        "seeds": {"hash": ["dddddddddddddddd"]}}, out, seed=0)  # fmt: skip
    md = runs_table(out)
    assert md.startswith("2 training runs are named by the current results")
    assert "3 run records, 1 of them from earlier configurations" in md
    assert "1 hashes in the results have no record there" in md and "every run is on m" in md
    row = next(line for line in md.splitlines() if "`aaaaaaaaaaaaaaaa`" in line)
    assert "| 03, 04 | secret_word K=16; reservoir recall | secret_word K=16 |" in row
    assert "reservoir, N 512, sr 0.9, leak 1, input 1, seed 0; peak lr 0.02, batch 8, KL 3, " in row
    assert row.endswith("| 2/10 | 2 |")
    assert "`cccccccccccccccc`" not in md and "`bbbbbbbbbbbbbbbb`" in md
    nested_row = next(line for line in md.splitlines() if "`bbbbbbbbbbbbbbbb`" in line)
    assert ("reservoir (decoded read), N 1024, sr 0.9, leak 0.01, input 0.1, seed 0; "
            "peak lr 0.02, batch 8, KL 3, write gate |") in nested_row  # fmt: skip
    assert label(("settings", "h1_hash")) == "H1 run"
    assert label(("per_seed", "hash", 3)) == "seed 3"
    assert label(("scaling", "points", 0, "run", "hash")) == "scaling point 0"


def test_collected_blocks_fill_their_markers(tmp_path):
    out = Outputs("smoke", root=tmp_path)
    md = "".join(f"<!-- BEGIN GENERATED: {n} -->\nold\n<!-- END GENERATED: {n} -->\n"
                 for n in ("abstract", "targets", "appendix"))  # fmt: skip
    filled, names = fill_markers(md, out, tmp_path, tmp_path)
    assert names == ["abstract", "targets", "appendix"] and "\nold\n" not in filled
    assert "No results yet" in filled and "No targets recorded yet" in filled
    assert "No training runs recorded yet" in filled


def test_retention_sentence_takes_the_trade_off_from_the_wide_comparison():
    from ran.report.abstract import retention_sentence

    pt = {"reservoir": _acc(0.9), "reset": _acc(0.07), "stateless": _acc(0.05), "chance": 0.0625}
    ret = {"measured": {"best": {"distractors": [pt | {"distractors": 0}, pt | {"distractors": 8}],
                                 "idle": [pt | {"idle_steps": 32}]}},
           "configs": {"best": {"read_gate": {"tail": 3}}}, "tradeoff": []}  # fmt: skip
    wide = {"tradeoff": [{"kl_weight": 3.0, "h1": {"dppl_pct": 64.6}, "d0": {"reservoir": _acc(0.97)}},
                         {"kl_weight": 30.0, "h1": {"dppl_pct": 80.0}, "d0": {"reservoir": _acc(0.5)}}]}  # fmt: skip
    alone = retention_sentence(ret)
    assert "smallest cost" not in alone and "after 8 distractor passes" in alone
    both = retention_sentence(ret, wide)
    assert "instead of the fitted gate the smallest cost is +64.6% (weight 3)" in both
