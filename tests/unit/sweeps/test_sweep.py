"""``python -m ran sweep``: sweep files, the real local executor, kill and resume, the table."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ran.__main__ import main
from ran.sweeps.sweep import read_sweep
from ran.util.results import REPO_ROOT

BASE = {
    "model_name": "tiny-llama",
    "injection": {"n_slots": 4, "reservoir": {"units": 32}, "gate_init": 1.0},
    "probe_params": {"k": 4, "n_train": 64, "n_val": 8, "n_test": 8},
    "steps": 3,
    "batch_size": 4,
    "eval_every": 0,
    "warmup_steps": 1,
}
SWEEP = {
    "name": "t4",
    "profile": "smoke",
    "base": BASE,
    "axes": {"injection.reservoir.seed": [0, 1], "learning_rate": [0.01, 0.03]},
    "evaluate": [
        {"split": "test", "controls": ["reservoir", "reset"]},
        {"split": "val", "controls": ["reservoir"], "label": "v"},
    ],  # fmt: skip
    "executor": {"max_parallel": 2},
}


def _write(tmp_path: Path, doc: dict, name="sweep.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "change, words",
    [
        ({"axis": {}}, "unknown field 'axis'"),
        (
            {"axes": {"injection.reservoir.sed": [1]}},
            "'sed' is not a field of 'injection.reservoir'",
        ),
        ({"axes": {"injection.nslots": [1]}}, "'nslots' is not a field of 'injection'"),
        ({"axes": {"steps.x": [1]}}, "'steps' has no nested fields"),
        ({"axes": {"stepz": [1]}}, "'stepz' is not a TrainConfig field"),
        ({"axes": {"reservoir.seed": [1]}}, "field 'reservoir': it now lives under 'injection'"),
        ({"base": BASE | {"n_slots": 4}}, "field 'n_slots': it now lives under 'injection'"),
        ({"axes": {"steps": [0]}}, "steps must be >= 1"),
        ({"axes": {"steps": []}}, "axis 'steps' must be a non-empty list"),
        ({"base": BASE | {"batch_size": "8"}}, "field 'batch_size' must be an integer"),
        ({"evaluate": [{"split": "dev"}]}, "evaluate[0]: field 'split'"),
        ({"evaluate": [{"controls": ["oracel"]}]}, "evaluate[0]: field 'controls'"),
        ({"slurm": {"partion": "gpu"}}, "unknown Slurm option 'partion'"),
        ({"executor": {"max_parallel": 0}}, "max_parallel"),
        ({"profile": "fast"}, "field 'profile'"),
    ],
)
def test_bad_sweep_file_is_one_sentence_naming_the_field(tmp_path, capsys, change, words):
    path = _write(tmp_path, SWEEP | change)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sweep.json") and words in err, err
    assert err.count("\n") == 0 and err.endswith(".")


def test_committed_sweep_files_parse():
    ex = read_sweep(REPO_ROOT / "sweeps" / "example_local.yaml")
    assert len(ex.jobs()) == 8 and ex.base["model_name"] == "tiny-llama"
    paper = read_sweep(REPO_ROOT / "sweeps" / "05_seed_study_paper.yaml")
    cfgs = [c for _, c in paper.jobs()]
    assert paper.profile == "paper" and len(cfgs) == 32
    assert sorted(c.injection.reservoir.seed for c in cfgs) == list(range(32))
    first = cfgs[0].to_dict()
    for c in cfgs[1:]:  # only the reservoir seed differs
        d = c.to_dict()
        res = d["injection"]["reservoir"]
        assert res["seed"] != first["injection"]["reservoir"]["seed"]
        res["seed"] = first["injection"]["reservoir"]["seed"]
        assert d == first


def _run(path: Path, root: Path, *extra) -> subprocess.Popen:
    env = os.environ | {"RAN_ROOT": str(root), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ran", "sweep", str(path), "--executor", "local", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def test_local_sweep_killed_and_resumed_loses_no_finished_job(tmp_path):
    path = _write(tmp_path, SWEEP)
    root = tmp_path / "root"
    done = root / "build" / "smoke" / "sweeps" / "t4" / "done"
    proc = _run(path, root)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(done.glob("*[0-9a-f].json"))) < 1:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the sweep command dies; its running jobs finish alone
    proc.wait()
    finished_at_kill = {p.name for p in done.glob("*[0-9a-f].json")}
    assert 1 <= len(finished_at_kill) < 4
    resumed = _run(path, root, "--max-parallel", "2")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "finished earlier (skipped)" in out
    skipped = int(out.split("jobs, ")[1].split(" finished")[0])
    assert skipped >= len(finished_at_kill)  # nothing finished before the kill is redone
    table = root / "build" / "smoke" / "data" / "results" / "sweeps" / "t4"
    doc = json.loads(table.with_suffix(".json").read_text())["results"]
    assert doc["finished"] == 4 and not doc["failed"] and not doc["pending"]
    first, second = doc["history"]  # the killed invocation never wrote its outcome
    assert first["outcome"] == "running" and first["skipped"] == 0
    assert second == second | {"outcome": "complete", "skipped": skipped, "to_run": 4 - skipped}
    with open(table.with_suffix(".csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 3  # 4 jobs x (test: 2 controls + val: 1 control)
    assert {r["status"] for r in rows} == {"ok"}
    assert {(r["injection.reservoir.seed"], r["learning_rate"]) for r in rows} == {
        ("0", "0.01"), ("0", "0.03"), ("1", "0.01"), ("1", "0.03")}  # fmt: skip
    assert {r["label"] for r in rows} == {"secret_word/test", "v/val"}
    # a rerun does nothing but rewrite the table
    again = _run(path, root).communicate(timeout=120)[0]
    assert "4 finished earlier (skipped), 0 to run" in again
    doc = json.loads(table.with_suffix(".json").read_text())["results"]
    assert [h["skipped"] for h in doc["history"]] == [0, skipped, 4]


def test_failed_job_is_a_row_and_the_exit_code_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    doc = SWEEP | {"name": "t2", "axes": {"model_name": ["tiny-llama", "no-such-model"]}}
    assert main(["sweep", str(_write(tmp_path, doc)), "--executor", "serial"]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 jobs finished" in out and "FAILED" in out and "no-such-model" in out
    res = json.loads((tmp_path / "build/smoke/data/results/sweeps/t2.json").read_text())
    rows = res["results"]["rows"]
    (bad,) = [r for r in rows if r["status"] == "failed"]
    assert bad["model_name"] == "no-such-model" and "no-such-model" in bad["error"]
    assert res["results"]["failed"][0]["tag"] == {"model_name": "no-such-model"}


def test_notebook_05_paper_configs_are_the_sweep_files(monkeypatch):
    """The paper profile of notebook 05 trains exactly the committed sweep's 32 configs."""
    import jupytext
    import torch

    nb = jupytext.read(REPO_ROOT / "notebooks" / "05_seed_selection.py")
    scope: dict = {}
    threads = torch.get_num_threads()
    try:
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            exec(compile(cell.source, "05", "exec"), scope)
            if "parameters" in cell.metadata.get("tags", []):
                scope["profile"] = "paper"  # what papermill injects
            if "cfgs" in scope:
                break
    finally:
        torch.set_num_threads(threads)
    sweep = read_sweep(scope["sweep_file"])
    assert [c.config_hash() for c in scope["cfgs"]] == [c.config_hash() for _, c in sweep.jobs()]


def test_readme_sweep_example_parses(tmp_path):
    import re

    section = (REPO_ROOT / "README.md").read_text().split("## Sweeps on a cluster", 1)[1]
    (block,) = re.findall(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    path = tmp_path / "readme.yaml"
    path.write_text(block)
    sweep = read_sweep(path)
    assert sweep.name == "example_local" and len(sweep.jobs()) == 2 * 2 * 4
    assert sweep.slurm["partition"] == "gpu"
