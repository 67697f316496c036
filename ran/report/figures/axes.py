"""Log-scale axes with readable ticks.

Matplotlib's default log axis labels major ticks as powers of ten and, when the data span
less than about a decade, labels the minor ticks too (``6x10^0 2x10^1 3x10^1 ...``), which
overlap the ticks a figure sets itself. :func:`log_axis` sets a log scale whose major ticks
are either the measured values (``ticks``, e.g. the K of a capacity curve) or 1-2-5 per
decade (at most ``max_ticks`` of them), labelled as plain numbers (``0.3``, ``16``, ``1000``;
``1e-12`` below 1e-3), with no minor ticks or labels.
"""

from __future__ import annotations

import math

from matplotlib import ticker


def plain(v: float) -> str:
    """A tick label: ``16``, ``0.3``, ``1000``, ``2e+04`` above 1e4 and ``1e-05`` below 1e-3."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    return f"{v:g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.0e}"


def decade_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Ticks 1-2-5 per decade within [lo, hi] (1 per decade, then every few decades, when
    that gives more than ``max_ticks``)."""
    lo, hi = sorted((lo, hi))
    lo = max(lo, 1e-300)
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for subs in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0**d for d in range(d0, d1 + 1) for m in subs if lo <= m * 10.0**d <= hi]
        if len(ticks) <= max_ticks:
            return ticks
    step = math.ceil((d1 - d0 + 1) / max_ticks)
    return [10.0**d for d in range(d0, d1 + 1, step) if lo <= 10.0**d <= hi]


def log_axis(ax, axis: str = "x", ticks=None, labels=None, max_ticks: int = 8) -> None:
    """Put ``axis`` ("x" or "y") of ``ax`` on a log scale with readable ticks.

    ``ticks``: the major tick positions (e.g. the measured x values), labelled ``labels``
    or plain numbers; without them, 1-2-5 per decade over the axis' data limits, decided
    when the figure is drawn.
    """
    getattr(ax, f"set_{axis}scale")("log")
    a = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None:
        ticks = [float(t) for t in ticks]
        names = [plain(t) for t in ticks] if labels is None else list(labels)
        pairs = dict(zip(ticks, names, strict=True))
        a.set_major_locator(ticker.FixedLocator(sorted(pairs)))
        a.set_major_formatter(ticker.FixedFormatter([pairs[t] for t in sorted(pairs)]))
    else:
        a.set_major_locator(_DecadeLocator(max_ticks))
        a.set_major_formatter(ticker.FuncFormatter(lambda v, _: plain(v)))
    a.set_minor_locator(ticker.NullLocator())
    a.set_minor_formatter(ticker.NullFormatter())


class _DecadeLocator(ticker.Locator):
    """:func:`decade_ticks` over the current view limits."""

    def __init__(self, max_ticks: int):
        self.max_ticks = max_ticks

    def __call__(self):
        lo, hi = self.axis.get_view_interval()
        return self.tick_values(lo, hi)

    def tick_values(self, vmin, vmax):
        if not (vmin > 0 and vmax > 0):
            vmin, vmax = max(vmin, 1e-300), max(vmax, 1.0)
        return decade_ticks(vmin, vmax, self.max_ticks)
