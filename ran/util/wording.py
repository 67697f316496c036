"""How generated sentences word a measured ratio and a number.

A time ratio (injected / untouched, pass 1000 / pass 1, a speed-up) is measured on a
shared CPU; when its confidence interval contains 1 the data cannot tell it from no
change, and the sentence says so (:func:`ratio_text`: "within noise of 1") instead of
reading a ratio below 1 as a saving or any ratio as a target met. Targets themselves
are not worded in sentences: they are :func:`ran.util.results.target` blocks, rendered
once as the Targets table of FINDINGS.md.
"""

from __future__ import annotations

import math

NOISE = "within noise"  # the note of a ratio whose CI contains 1


def spans_one(ci) -> bool:
    """Whether an interval ``[lo, hi]`` contains 1 (False without an interval)."""
    if not ci or len(ci) != 2 or any(v is None for v in ci):
        return False
    lo, hi = sorted(float(v) for v in ci)
    return lo <= 1.0 <= hi


def ratio_text(value: float, ci, *, digits: int = 3, interval: str = "95% CI") -> str:
    """``"0.961 (95% CI 0.812-1.121; within noise of 1)"``, or without the note when the
    interval excludes 1; ``interval`` names it (e.g. ``"IQR"``)."""
    if ci is None:
        return f"{value:.{digits}f}"
    lo, hi = ci
    note = f"; {NOISE} of 1" if spans_one(ci) else ""
    return f"{value:.{digits}f} ({interval} {lo:.{digits}f}-{hi:.{digits}f}{note})"


def equal_or_pair(a: float, b: float, digits: int = 4) -> str:
    """Two values that should match: ``"4.0588 for both, exactly equal"`` when they are equal
    as floats, else ``"4.0588 vs 4.0590 (differ by 2.00e-04)"`` (``digits`` decimals)."""
    if a == b:
        return f"{a:.{digits}f} for both, exactly equal"
    return f"{a:.{digits}f} vs {b:.{digits}f} (differ by {abs(a - b):.2e})"


def round_sig(x: float, n: int = 6) -> str:
    """``x`` with at most ``n`` significant digits: fixed notation (trailing zeros kept) for
    1e-4 <= |x| < 10**n, else ``g`` notation."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    mag = math.floor(math.log10(abs(x)))
    if -4 <= mag < n:
        return f"{x:.{max(n - 1 - mag, 0)}f}"
    return f"{x:.{n}g}"
