"""Reproducibility: the same config gives the same results file, and every results
file records its provenance (package versions, seed, wall time, model)."""

from __future__ import annotations

import json

import pytest

from ran.report.notebooks import NOTEBOOK_DIR, RECORDS
from ran.util.results import REPO_ROOT, Outputs, strip_volatile

# Timings that notebook 01 stores in its payload rather than in meta, so
# strip_volatile keeps them; dropped here by name (move them under meta, or add
# them to VOLATILE_META_KEYS, and this list can go).


def _run_notebook_in_process(name: str, root, monkeypatch, parameters: dict) -> dict:
    """Execute the code cells of ``notebooks/<name>.py`` in one fresh namespace with
    ``parameters`` applied after its parameters cell (as papermill injects them), with
    outputs under ``root``; return the results file it wrote. In-process, so no kernel
    start (a papermill run of 01 costs ~45 s on the shared cores, twice too long)."""
    import jupytext
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")  # plt.show() in the cells: a no-op
    monkeypatch.setenv("RAN_ROOT", str(root))
    nb = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    ns: dict = {"__name__": "__notebook__"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, f"{name}.py", "exec"), ns)  # noqa: S102
        if "parameters" in cell.metadata.get("tags", []):
            ns.update(parameters)
    plt.close("all")
    profile = parameters.get("profile", "default")
    return json.loads((Outputs(profile).results / f"{name}.json").read_text())


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_notebook_01_smoke_twice_gives_identical_results(tmp_path, monkeypatch):
    name, params = "01_esn_dynamics", {"profile": "smoke"}
    docs = []
    for run in ("a", "b"):
        doc = _run_notebook_in_process(name, tmp_path / run, monkeypatch, params)
        assert doc["meta"]["profile"] == "smoke" and doc["results"]["table"]
        docs.append(strip_volatile(doc))
    a, b = docs
    assert a["meta"] == b["meta"]
    assert a["findings"] == b["findings"]  # numbers in the captions, figure paths
    for key in sorted(set(a["results"]) | set(b["results"])):
        assert a["results"].get(key) == b["results"].get(key), f"results[{key!r}] differs"
    assert a == b
    # the figures too: Agg renders the same data to the same bytes
    figs = sorted((tmp_path / "a" / "build/smoke/figures").glob("01_*.png"))
    assert figs, "notebook 01 wrote no figures"
    for p in figs:
        twin = tmp_path / "b" / "build/smoke/figures" / p.name
        assert p.read_bytes() == twin.read_bytes(), f"figure {p.name} differs between runs"


def _results_files():
    folder = REPO_ROOT / "data" / "results"
    return sorted(folder.glob("*.json")) + sorted(folder.glob("runs/*.json"))


def _provenance(path, doc: dict) -> dict:
    """The provenance fields of a results file: ``meta`` of a save_results file; the
    top level (model in ``config``) of a cached training run under ``runs/``."""
    if path.parent.name == "runs":
        return {**doc, "model_name": doc.get("config", {}).get("model_name", "<missing>")}
    return doc.get("meta", {})


@pytest.mark.parametrize(
    "path", _results_files(), ids=lambda p: str(p.relative_to(REPO_ROOT / "data" / "results"))
)
def test_results_file_records_provenance(path):
    doc = json.loads(path.read_text())
    if path.stem in RECORDS:  # the runner's timing indexes (cold, warm), not result sets
        assert doc["meta"]["versions"] and doc["meta"]["timing"]
        return
    meta = _provenance(path, doc)
    missing = [k for k in ("versions", "seed", "wall_time_s", "model_name") if k not in meta]
    assert not missing, f"{path.name} lacks {missing} in its provenance"
    versions = meta["versions"]
    assert {"python", "torch", "numpy"} <= set(versions), versions
    assert isinstance(meta["seed"], int), f"{path.name}: seed {meta['seed']!r}"
    wall = meta["wall_time_s"]
    assert isinstance(wall, int | float) and wall > 0, f"{path.name}: wall_time_s {wall!r}"
    assert meta["model_name"] is None or isinstance(meta["model_name"], str)


def test_there_are_results_files():
    assert any(p.parent.name == "results" for p in _results_files())
