"""The architecture schematic of FINDINGS.md (``figures/00_architecture.png``), matplotlib only.

Left: one forward pass of the frozen LM, the token stream through layers 0..L-1,
layer L's self-attention over [M reservoir slots ; tokens] (slots from a learned
readout of r(t), blended by a per-head gate), then layers L+1..end. Right: the
drive u(t) (layer L's attention output at the last token) through the fixed
``W_in`` into the reservoir update with fixed ``W``. Bottom: the state carried
from pass t to pass t+1, never reset by a new prompt. Colours mark trained and
fixed parts. The file is byte-identical between runs (no timestamp metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

FILENAME = "00_architecture.png"
COLORS = {
    "frozen": "#d9d9d9",  # the pretrained LM, never changed
    "fixed": "#9ecae1",  # fixed random reservoir weights W, W_in
    "trained": "#fdae6b",  # learned readout and gate
    "state": "#c7e9c0",  # the carried state r(t)
}
LEGEND = {
    "frozen": "frozen pretrained LM",
    "fixed": "fixed random (never trained): W, W_in",
    "trained": "trained: slot readout, gates",
    "state": "reservoir state r(t) (carried)",
}


@dataclass(frozen=True)
class DiagramConfig:
    """Size and resolution of the schematic.

    Parameters
    ----------
    width, height : float
        Figure size in inches.
    dpi : int
        Resolution of the PNG.
    """

    width: float = 11.0
    height: float = 7.0
    dpi: int = 150

    def __post_init__(self):
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 2 <= v <= 40:
                raise ValueError(f"{name} must be a number of inches in [2, 40], got {v!r}.")
        if not isinstance(self.dpi, int) or not 50 <= self.dpi <= 600:
            raise ValueError(f"dpi must be an integer in [50, 600], got {self.dpi!r}.")


def _box(ax, x, y, w, h, label, kind, fontsize=9.5, weight="normal"):
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=COLORS[kind], edgecolor="#333333", linewidth=1.0,
        )
    )  # fmt: skip
    ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=fontsize,
            weight=weight, wrap=True)  # fmt: skip


def _arrow(ax, a, b, text=None, rad=0.0, ls="-", color="#222222", offset=(0.1, 0.0), **kw):
    ax.add_patch(
        FancyArrowPatch(
            a, b, arrowstyle="-|>", mutation_scale=13, linewidth=1.3, color=color,
            linestyle=ls, connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2,
        )
    )  # fmt: skip
    if text:
        mx, my = (a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1]
        ax.text(mx, my, text, fontsize=8.5, color=color, **({"va": "center"} | kw))


def draw(cfg: DiagramConfig | None = None) -> Figure:
    """The schematic as a matplotlib figure (see the module docstring)."""
    cfg = cfg or DiagramConfig()
    fig = Figure(figsize=(cfg.width, cfg.height))  # no pyplot: no global backend state
    ax = fig.subplots()
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 7)
    ax.axis("off")
    ax.text(0.2, 6.75, "one forward pass t (any prompt)", fontsize=11, weight="bold")

    # -- the frozen LM stack (bottom to top), layer L in the dashed box
    x0, w = 0.5, 4.4
    _box(ax, x0, 0.55, w, 0.5, "tokens of pass t  (embedding)", "frozen")
    _box(ax, x0, 1.35, w, 0.6, "layers 0 .. L-1", "frozen")
    ax.add_patch(FancyBboxPatch((x0 - 0.15, 2.3), w + 0.4, 2.3, boxstyle="round,pad=0.02",
                                facecolor="white", edgecolor="#333333", linestyle="--"))  # fmt: skip
    ax.text(x0, 4.4, "layer L self-attention", fontsize=10, weight="bold")
    _box(ax, x0 + 0.1, 3.45, 2.0, 0.75, "keys / values:\n[M slots ; tokens]", "frozen", 9)
    _box(ax, x0 + 2.35, 3.45, 1.7, 0.75, "slot readout\nr(t) -> M k/v slots", "trained", 8.5)
    _box(ax, x0 + 0.1, 2.45, 2.0, 0.75, "attention over\n[slots ; tokens]", "frozen", 9)
    _box(
        ax,
        x0 + 2.35,
        2.45,
        1.7,
        0.75,
        "gate (per head,\nopt. per token):\nblend with plain attn",
        "trained",
        8,
    )
    _arrow(ax, (x0 + 2.35, 3.82), (x0 + 2.1, 3.82))
    _arrow(ax, (x0 + 1.1, 3.45), (x0 + 1.1, 3.2))
    _arrow(ax, (x0 + 2.1, 2.82), (x0 + 2.35, 2.82))
    _box(ax, x0, 4.95, w, 0.6, "layers L+1 .. end  ->  next-token logits", "frozen")
    _arrow(ax, (x0 + w / 2, 1.05), (x0 + w / 2, 1.35))
    _arrow(ax, (x0 + 1.1, 1.95), (x0 + 1.1, 2.45), "queries, keys, values", offset=(0.1, -0.02))
    out_x = x0 + 4.25  # the layer-L output leaves the gate and goes up
    ax.plot([x0 + 4.05, out_x, out_x], [2.82, 2.82, 4.0], color="#222222", lw=1.3)
    _arrow(ax, (out_x, 4.0), (out_x, 4.95))

    # -- the reservoir (right)
    rt = (5.45, 3.45, 1.4, 0.75)  # r(t): x, y, w, h
    _box(ax, *rt, "r(t)\nN units", "state", 10, "bold")
    _box(ax, 7.3, 4.85, 2.6, 0.8, "u(t): layer-L attention\noutput at the last token", "frozen", 9)
    _box(ax, 7.5, 3.45, 2.2, 0.75, "W_in  (fixed random)", "fixed", 9.5)
    _box(ax, 6.0, 2.0, 4.6, 1.0,
         "r(t+1) = (1 - lr) r(t) + lr tanh(W r(t) + W_in u(t))\n"
         "W fixed random, spectral radius sr", "fixed", 9.5)  # fmt: skip
    _arrow(ax, (out_x, 4.6), (7.3, 5.25), "drive", offset=(-0.3, 0.3))
    _arrow(ax, (rt[0], 3.82), (x0 + 4.05, 3.82))
    ax.text(5.0, 4.35, "read by the readout", fontsize=8.5, va="center")
    _arrow(ax, (8.6, 4.85), (8.6, 4.2))
    _arrow(ax, (8.6, 3.45), (8.6, 3.0))
    _arrow(ax, (6.4, 3.45), (6.4, 3.0), "W r(t)", offset=(0.1, 0.0))

    # -- persistence across passes (bottom)
    _box(ax, 6.0, 0.55, 4.6, 0.95,
         "r(t+1) is the state of pass t+1: it persists across\nindependent forward passes "
         "and is never wiped\nby a new, unrelated prompt", "state", 9)  # fmt: skip
    _arrow(ax, (8.3, 2.0), (8.3, 1.5))
    _arrow(ax, (6.0, 1.0), (5.75, 3.45), rad=-0.35, ls="--", color="#2a7a2a")
    ax.text(5.9, 1.75, "pass t -> t+1", fontsize=8.5, color="#2a7a2a", va="center")
    ax.legend(
        handles=[Patch(facecolor=COLORS[k], edgecolor="#333333", label=v) for k, v in LEGEND.items()],
        loc="upper right", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False,
    )  # fmt: skip
    return fig


def save_architecture(path: Path | str, cfg: DiagramConfig | None = None) -> Path:
    """Draw the schematic and write it to ``path`` (PNG, deterministic bytes)."""
    cfg = cfg or DiagramConfig()
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"the architecture diagram is written as PNG, got {path.name!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(cfg).savefig(path, dpi=cfg.dpi, metadata={"Software": None}, bbox_inches="tight")
    return path
