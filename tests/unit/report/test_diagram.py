"""The architecture schematic: a deterministic PNG, embedded in FINDINGS.md."""

from __future__ import annotations

import pytest

from ran.report.diagram import FILENAME, DiagramConfig, save_architecture
from ran.report.findings import MARKER_RE
from ran.util.results import REPO_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_save_architecture_writes_a_png_twice_identically(tmp_path):
    a = save_architecture(tmp_path / "a" / FILENAME, DiagramConfig(dpi=60))
    b = save_architecture(tmp_path / "b" / FILENAME, DiagramConfig(dpi=60))
    data = a.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert data == b.read_bytes(), "two renders differ (timestamp or software metadata?)"


@pytest.mark.parametrize("kwargs", [dict(dpi=10), dict(width=0.5), dict(height="7")])
def test_diagram_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        DiagramConfig(**kwargs)


def test_save_architecture_rejects_other_formats(tmp_path):
    with pytest.raises(ValueError, match="PNG"):
        save_architecture(tmp_path / "arch.svg")


def test_findings_embeds_the_diagram_outside_generated_blocks():
    text = (REPO_ROOT / "FINDINGS.md").read_text(encoding="utf-8")
    link = f"](figures/{FILENAME})"
    assert link in text
    outside = MARKER_RE.sub("", text)
    assert link in outside
    arch = text.index("# Architecture")
    assert arch < text.index(link) < text.index("# Literature grounding")
