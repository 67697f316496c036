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
