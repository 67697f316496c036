"""Notebook 06's retention half-life (ran.study.retention.half_life) and its text."""

from __future__ import annotations

import math

import pytest

from ran.study.retention import fmt_half, half_life


def test_half_life_interpolates_to_halfway_between_start_and_chance():
    # start 0.9, chance 0.1: halfway is 0.5, crossed between d = 2 (0.7) and d = 4 (0.3)
    assert half_life([0, 1, 2, 4], [0.9, 0.8, 0.7, 0.3], 0.1) == pytest.approx(3.0)


def test_half_life_beyond_the_range_and_without_signal():
    assert math.isinf(half_life([0, 8, 32], [0.9, 0.8, 0.7], 0.1))
    assert fmt_half(half_life([0, 8, 32], [0.9, 0.8, 0.7], 0.1), 32) == "> 32"
    assert half_life([0, 1], [0.05, 0.05], 0.0625) is None  # nothing above chance to retain
    assert fmt_half(None, 8) == "n/a"
    with pytest.raises(ValueError):
        half_life([0, 1], [0.5], 0.1)


def _esn_doc(edge=1.2, mc=8.9):
    return {
        "results": {
            "memory": {
                "50": {"max_mean": 6.0, "sr_at_max": 1.4},
                "400": {"max_mean": mc, "sr_at_max": 1.5},
            },
            "chaos": {"autonomous": {"50": 1.7, "400": edge}},
            "settings": {"lr": 1.0},
        }
    }


def test_esn_context_reads_the_largest_reservoir_and_tolerates_gaps():
    from ran.study.retention import esn_context

    s = esn_context(_esn_doc())["sentence"]
    assert "N = 400" in s and "8.9" in s and "sr ~ 1.2" in s
    assert esn_context(_esn_doc(edge=None)) is None  # no boundary inside the sr grid (smoke)
    assert esn_context(None) is None and esn_context({"results": {}}) is None


def test_regime_sentence_names_the_leak_rates_from_the_grid():
    import pandas as pd

    from ran.study.retention import regime_sentence

    grid = pd.DataFrame(
        [dict(lr=lr, sr=sr, distractors=8, idle_steps=32, n=8, d0=0.9, d=d, idle=i)
         for lr, d, i in ((1.0, 0.1, 0.0), (0.01, 0.9, 0.95)) for sr in (0.5, 0.9)]
    )  # fmt: skip
    s = regime_sentence(grid)
    assert "lr = 0.01: 0.900 / 0.900 / 0.950" in s and "lr = 1: 0.900 / 0.100 / 0.000" in s
    assert "best cell lr = 0.01" in s
