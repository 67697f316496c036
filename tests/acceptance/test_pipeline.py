"""The runner and the report: failures name the notebook, smoke never touches committed
results, FINDINGS blocks are rendered from results files and the PDF builds."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from ran import pipeline
from ran.report.findings import fill_markers, format_value, render_table, report
from ran.util.results import REPO_ROOT, Outputs, figure, save_results, table, text


def _tree_digest(folder):
    h = hashlib.sha256()
    if folder.exists():
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _write_nb(path, body):
    path.write_text('# %% tags=["parameters"]\nprofile = "default"\n\n# %%\n' + body + "\n")


def test_select_by_number_and_unknown(tmp_path):
    for name in ("01_a.py", "02_b.py", "helper.py"):
        _write_nb(tmp_path / name, "x = 1")
    nbs = pipeline.list_notebooks(tmp_path)
    assert [p.name for p in nbs] == ["01_a.py", "02_b.py"]
    assert [p.name for p in pipeline.select(nbs, ["2"])] == ["02_b.py"]
    with pytest.raises(pipeline.PipelineError, match="no notebook matches 07"):
        pipeline.select(nbs, ["07"])


def test_failing_notebook_is_named(tmp_path, monkeypatch):
    _write_nb(tmp_path / "01_ok.py", "assert profile == 'smoke'")
    _write_nb(tmp_path / "02_broken.py", "raise ValueError('the probe exploded')")
    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    with pytest.raises(pipeline.PipelineError) as err:
        pipeline.run("smoke", notebook_dir=tmp_path, html=False, progress=False)
    msg = str(err.value)
    assert "02_broken" in msg and "the probe exploded" in msg
    # the notebook before it ran, with profile injected, and its time was recorded
    timing = json.loads((tmp_path / "build/smoke/data/results/pipeline.json").read_text())
    assert "01_ok" in timing["meta"]["timing"]


@pytest.mark.parametrize("src", pipeline.list_notebooks(), ids=lambda p: p.stem)
def test_papermill_parses_every_parameter(src, tmp_path):
    """papermill's parameter inspection (``--help-notebook``, type inference) skips a
    line with more than one ``=``, e.g. in its comment; every parameter must be read."""
    import nbformat
    from papermill.translators import PythonTranslator

    nb = pipeline.to_ipynb(src, tmp_path / f"{src.stem}.ipynb")
    cell = next(c for c in nbformat.read(nb, 4).cells if "parameters" in c.metadata.get("tags", []))
    names = [ln.split("=")[0].strip() for ln in cell.source.splitlines() if ln and ln[0].isalpha()]
    parsed = [p.name for p in PythonTranslator.inspect(cell)]
    assert parsed == names, f"papermill skipped {sorted(set(names) - set(parsed))}"


def test_render_table_formats_and_checks_width():
    block = table("cap", ["a", "b"], [[0.123456, [1.0, 2.5]], ["x", None]], fmt=".2f")
    md = render_table(block)
    assert "| 0.12 | [1.00, 2.50] |" in md and "| x | n/a |" in md and "Table: cap" in md
    with pytest.raises(ValueError, match="row of 1 cells"):
        render_table(table("bad", ["a", "b"], [[1]]))
    assert format_value(True) == "yes" and format_value(3) == "3"


def test_fill_markers_uses_results_file(tmp_path):
    out = Outputs("default", root=tmp_path)
    fig = out.figure_path("01_x.png")
    fig.write_bytes(b"png")
    save_results(
        "01_demo",
        {"v": 0.25},
        out,
        seed=3,
        findings=[text("measured 0.25"), figure(fig, "a figure", out), table("t", ["k"], [[7]])],
    )
    md = "intro\n<!-- BEGIN GENERATED: 01_demo -->\nstale\n<!-- END GENERATED: 01_demo -->\n"
    md += "<!-- BEGIN GENERATED: 09_missing -->\n<!-- END GENERATED: 09_missing -->\n"
    filled, names = fill_markers(md, out, tmp_path, tmp_path)
    assert names == ["01_demo"]
    assert "stale" not in filled and "measured 0.25" in filled
    assert "](figures/01_x.png)" in filled and "| 7 |" in filled and "seed 3" in filled
    assert "No results yet for `09_missing`" in filled
    assert "run `python -m ran run --profile default` and" in filled
    # a results file outside make all names the options of ran run that write it
    extra = fill_markers(md.replace("09_missing", "04_extended"), out, tmp_path, tmp_path)[0]
    assert "`python -m ran run --profile default --only 04 -p extended true`" in extra
    # idempotent: filling the filled text again gives the same text
    assert fill_markers(filled, out, tmp_path, tmp_path)[0] == filled


_TIMED = """
import os, time
t0 = time.time()
assert threads == 1 and os.environ["OMP_NUM_THREADS"] == "1", (threads, os.environ.get("OMP_NUM_THREADS"))
assert os.environ["RAN_TRAIN_WORKERS"] == "1"
time.sleep({sleep})
open(os.path.join({out!r}, "{name}.times"), "w").write(f"{{t0}} {{time.time()}}")
"""


def test_lanes_overlap_notebooks_and_wait_for_dependencies(tmp_path, monkeypatch):
    """Two lanes: independent notebooks overlap in time, a notebook starts only after
    the ones it reads (06 after 01, 07 after 06), each lane runs at 1 thread."""
    out = tmp_path / "times"
    out.mkdir()
    for name, sleep in (("01_a", 6), ("04_b", 6), ("06_c", 1), ("07_d", 1)):
        body = _TIMED.format(sleep=sleep, out=str(out), name=name)
        (tmp_path / f"{name}.py").write_text(
            '# %% tags=["parameters"]\nprofile = "default"\nthreads = 2\n\n# %%\n' + body
        )
    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    rep = pipeline.run("smoke", notebook_dir=tmp_path, html=False, progress=False, lanes=2)
    t = {p.stem: tuple(map(float, p.read_text().split())) for p in out.glob("*.times")}
    assert set(t) == {"01_a", "04_b", "06_c", "07_d"} and rep.lanes == 2
    assert t["01_a"][0] < t["04_b"][1] and t["04_b"][0] < t["01_a"][1]  # 01 and 04 overlap
    assert t["06_c"][0] >= t["01_a"][1] and t["07_d"][0] >= t["06_c"][1]
    meta = json.loads((tmp_path / "build/smoke/data/results/pipeline.json").read_text())["meta"]
    assert meta["last_run"]["lanes"] == 2 and set(meta["timing"]) == set(t)


def test_lanes_stop_at_a_failure_and_skip_its_dependents(tmp_path, monkeypatch):
    _write_nb(tmp_path / "01_broken.py", "raise ValueError('no echo today')")
    _write_nb(tmp_path / "06_needs_01.py", "open('ran_06', 'w').write('x')")
    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    with pytest.raises(pipeline.PipelineError, match="01_broken.*no echo today"):
        pipeline.run("smoke", notebook_dir=tmp_path, html=False, progress=False, lanes=2)
    assert not (tmp_path / "ran_06").exists()


def test_default_lanes_is_one_unless_asked(monkeypatch):
    monkeypatch.delenv("RAN_PIPELINE_LANES", raising=False)
    assert pipeline.default_lanes() == 1
    monkeypatch.setenv("RAN_PIPELINE_LANES", "2")
    assert pipeline.default_lanes() == 2
    monkeypatch.setenv("RAN_PIPELINE_LANES", "two")
    with pytest.raises(ValueError, match="RAN_PIPELINE_LANES must be an integer"):
        pipeline.default_lanes()


def test_schedule_order_longest_chain_first():
    nbs = [pipeline.Path(f"{n}.py") for n in ("01_a", "03_b", "04_c", "06_d", "07_e")]
    order = pipeline.schedule_order(nbs, {"03_b": 60.0, "04_c": 600.0})
    assert [p.stem for p in order] == ["04_c", "03_b", "01_a", "06_d", "07_e"]
    # 06 waits for 01 and 03, 07 for 06: 03 starts the longest chain (60 + 500 + 200 s), then
    # 01's (10 + 500 + 200 s)
    sec = {"01_a": 10.0, "03_b": 60.0, "04_c": 600.0, "06_d": 500.0, "07_e": 200.0}
    order = pipeline.schedule_order(nbs, sec)
    assert [p.stem for p in order] == ["03_b", "01_a", "06_d", "04_c", "07_e"]
    meta = {"timing": {"06_d": 100.0}, "runs": {"06_d": {"loaded": {"h": 900.0}}}}
    assert pipeline.cold_seconds(meta) == {"06_d": 1000.0}  # warm seconds + reused training


def test_pipeline_json_pairs_minutes_with_machine_speed_and_runs(tmp_path, monkeypatch):
    save = (
        "from ran.util.results import Outputs, save_results\n"
        "run = {{'hash': 'h1', 'loaded': {loaded}, 'wall_time_s': 5.0}}\n"
        "save_results('01_ok', {{'run': run}}, Outputs(profile), seed=0, wall_time_s=1.0)"
    )
    _write_nb(tmp_path / "01_ok.py", save.format(loaded=False))
    slow = "# %%\nimport time\n\ntime.sleep(0.4)  # stands in for jobs.train_all(...)\n"
    _write_nb(tmp_path / "02_plain.py", "x = 1\n\n" + slow)
    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    pipeline.run("smoke", notebook_dir=tmp_path, html=False, progress=False)
    path = tmp_path / "build/smoke/data/results/pipeline.json"
    meta = json.loads(path.read_text())["meta"]
    stems = {"01_ok", "02_plain"}
    assert set(meta["timing"]) == set(meta["machine"]) == set(meta["runs"]) == stems
    cells = meta["cells"]["02_plain"]  # papermill's per-cell record: the sleep is the slowest
    assert set(meta["cells"]) == stems and cells["slowest"][0][2] == "import time"
    assert 0.4 <= cells["slowest"][0][1] <= cells["train_cells_s"] <= cells["code_s"]
    assert meta["cells"]["01_ok"]["train_cells_s"] == 0.0
    for when in ("before", "after"):
        assert meta["machine"]["01_ok"][when]["gflops"] > 0
    assert meta["runs"]["01_ok"] == {"trained": {"h1": 5.0}, "loaded": {}}
    assert meta["runs"]["02_plain"] == {"trained": {}, "loaded": {}}  # 01's file is not 02's
    # rerun 01 from the cache: its three entries are replaced together, 02's are kept
    _write_nb(tmp_path / "01_ok.py", save.format(loaded=True))
    pipeline.run("smoke", only=["01"], notebook_dir=tmp_path, html=False, progress=False)
    again = json.loads(path.read_text())["meta"]
    assert again["runs"]["01_ok"] == {"trained": {}, "loaded": {"h1": 5.0}}
    assert again["timing"]["02_plain"] == meta["timing"]["02_plain"]
    assert again["machine"]["02_plain"] == meta["machine"]["02_plain"]


def test_smoke_pipeline_end_to_end():
    """All notebooks in the smoke profile, HTML, report and PDF; committed outputs untouched."""
    committed = [REPO_ROOT / "data" / "results", REPO_ROOT / "figures"]
    before = [_tree_digest(p) for p in committed]
    findings_before = (REPO_ROOT / "FINDINGS.md").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "ran", "run", "--profile", "smoke"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    smoke = Outputs("smoke")
    for nb in pipeline.list_notebooks():
        assert (smoke.build / "html" / f"{nb.stem}.html").stat().st_size > 10_000
    assert any(smoke.results.glob("0*.json")), "the smoke notebooks wrote no results"
    rep = report("smoke")
    assert (smoke.build / "FINDINGS.pdf").read_bytes()[:4] == b"%PDF"
    assert rep["filled"], "no generated section was filled from smoke results"
    assert [_tree_digest(p) for p in committed] == before
    assert (REPO_ROOT / "FINDINGS.md").read_bytes() == findings_before
