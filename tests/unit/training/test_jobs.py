"""ran.training.jobs / ran.training.executors: training jobs through submitit (real local executor, no mock)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ran.training import jobs as J
from ran.training.config import TrainConfig
from ran.training.executors import JobRunner, _alive_elsewhere, slurm_parameters
from ran.training.train import _paths
from ran.util.configio import updated
from ran.util.results import Outputs

BASE = dict(
    model_name="tiny-llama",
    injection={"n_slots": 4, "gate_init": 1.0},
    probe_params={"k": 4, "n_train": 64, "n_val": 8, "n_test": 8},
    steps=4,
    batch_size=4,
    eval_every=2,
    warmup_steps=1,
)
EVALS = [{"split": "test", "controls": ["reservoir", "reset"]}]


def _configs(n=3):
    reservoirs = [{"units": 32, "seed": s} for s in range(n)]
    return [updated(TrainConfig(**BASE), injection={"reservoir": r}) for r in reservoirs]


def _saved(cfg, outputs):
    _, run_path, params_path = _paths(cfg, outputs)
    return load_file(str(params_path)), json.loads(run_path.read_text())["history"]


def test_two_workers_are_bit_identical_to_serial_and_failures_are_listed(tmp_path, monkeypatch):
    cfgs = _configs(3)
    serial = Outputs("smoke", root=tmp_path / "serial")
    monkeypatch.delenv("RAN_LOWER_DISK", raising=False)
    rep_s = J.run_jobs([J.spec_for(c, serial, EVALS) for c in cfgs], "serial")
    assert torch.get_num_threads() == 1 and not rep_s.failures

    par = Outputs("smoke", root=tmp_path / "par")
    bad = TrainConfig(**BASE | {"model_name": "no-such-model"})
    specs = [J.spec_for(c, par, EVALS, threads=1) for c in [*cfgs, bad]]
    lower = tmp_path / "lower"
    rep_p = J.run_jobs(specs, "local", 2, tmp_path / "submitit", threads=1,
                       env={"RAN_LOWER_DISK": str(lower), "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert [r["key"] for r in rep_p.rows] == [c.config_hash() for c in cfgs]
    assert {r["threads"] for r in rep_p.rows} == {1}
    assert len({r["pid"] for r in rep_p.rows}) >= 2  # really separate worker processes
    for cfg, a, b in zip(cfgs, rep_s.rows, rep_p.rows, strict=True):
        pa, ha = _saved(cfg, serial)
        pb, hb = _saved(cfg, par)
        assert set(pa) == set(pb) and all(torch.equal(pa[n], pb[n]) for n in pa)
        assert ha == hb
        assert a["evaluations"] == b["evaluations"] and a["params_digest"] == b["params_digest"]
    # the failure is a row of its own, with the error and the worker's log
    (fail,) = rep_p.failures
    assert fail["key"] == bad.config_hash() and "no-such-model" in fail["detail"]
    assert fail["error"] and fail["log"].endswith(".err")
    # the workers shared the lower layers' outputs on disk (same episodes, same order)
    assert any(lower.rglob("*.safetensors"))


def test_a_live_job_of_an_earlier_run_is_waited_for_not_resubmitted(tmp_path):
    out = Outputs("smoke", root=tmp_path)
    marker = tmp_path / "done" / "x.json"
    spec = J.spec_for(_configs(1)[0], out, EVALS, key="x", marker=marker)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        doc = {"host": socket.gethostname(), "pid": proc.pid, "start": J._proc_start(proc.pid)}
        J.running_path(marker).parent.mkdir(parents=True)
        J.running_path(marker).write_text(json.dumps(doc))
        runner = JobRunner("serial")
        (job,) = runner.start([spec])
        assert not runner.pending and not job.done()  # attached, nothing queued
        marker.write_text(json.dumps({"key": "x", "evaluations": []}))
        report = runner.wait()
        assert report.rows == [{"key": "x", "evaluations": []}] and not report.failures
    finally:
        proc.kill()
        proc.wait()
    # the process gone without a marker: a failure, and a new runner would resubmit
    marker.unlink()
    assert _alive_elsewhere(spec) is None


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$(dirname "$0")/last_sbatch.sh"
echo "Submitted batch job 4242"
"""


def test_slurm_jobs_and_sbatch_script_without_a_cluster(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\n"),
                       ("scancel", "#!/bin/sh\n"), ("sacct", "#!/bin/sh\n")):  # fmt: skip
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    out = Outputs("smoke", root=tmp_path)
    specs = [J.spec_for(c, out, EVALS, threads=2) for c in _configs(3)]
    options = {"partition": "gpu", "gpus_per_node": 1, "timeout_min": 90, "cpus_per_task": 4,
               "mem_gb": 16, "account": "proj"}  # fmt: skip
    runner = JobRunner("slurm", tmp_path / "submitit", 2, threads=2, slurm_options=options)
    jobs = runner.start(specs)
    import submitit

    assert all(isinstance(j, submitit.SlurmJob) for j in jobs)
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    assert [j.submission().args[0] for j in jobs] == specs  # each array task runs its own spec
    assert all(j.submission().function is J.run_job for j in jobs)
    script = (bin_dir / "last_sbatch.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90",
                 "#SBATCH --array=0-2%2", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB",
                 "#SBATCH --account=proj"):  # fmt: skip
        assert line in script.splitlines()
    assert "srun" in script and "-m submitit.core._submit" in script
    runner.cancel()


def test_slurm_options_are_checked_by_name():
    assert slurm_parameters({"partition": "a", "timeout_min": 5}) == {
        "slurm_partition": "a",
        "timeout_min": 5,
    }
    with pytest.raises(ValueError, match="'partion'"):
        slurm_parameters({"partion": "a"})


def test_worker_count_and_train_all_skips(tmp_path, monkeypatch):
    monkeypatch.delenv("RAN_TRAIN_WORKERS", raising=False)
    monkeypatch.setattr(J, "cores", lambda: 2)
    assert J.default_workers(Outputs("default")) == 2
    assert J.default_workers(Outputs("smoke")) == 1
    monkeypatch.setenv("RAN_TRAIN_WORKERS", "1")
    assert J.default_workers(Outputs("default")) == 1
    # one worker: nothing is submitted, the caller trains in-process as before
    rep = J.train_all(_configs(2), Outputs("smoke", root=tmp_path), progress=None)
    assert rep.rows == [] and not (tmp_path / "build").exists()


def test_longest_first_starts_unknown_configs_then_the_longest_recorded(tmp_path):
    """Jobs start in LPT order: configs without a run record first, then by recorded wall
    time, longest first; an unreadable record counts as unknown."""
    cfgs = _configs(5)
    walls = [30.0, None, 300.0, "bad", 120.0]  # None: no record; "bad": a broken record
    todo = []
    for i, (cfg, wall) in enumerate(zip(cfgs, walls, strict=True)):
        path = tmp_path / f"{i}.json"
        if wall == "bad":
            path.write_text("{")
        elif wall is not None:
            path.write_text(json.dumps({"wall_time_s": wall}))
        todo.append((cfg, path))
    order = [cfgs.index(c) for c in J.longest_first(todo)]
    assert order == [1, 3, 2, 4, 0]  # the records have no config: nothing to estimate from
    assert J.longest_first([]) == []


def test_longest_first_estimates_a_new_config_from_its_recorded_kin(tmp_path):
    """A config with no record costs what a recorded run of its probe and mechanism did,
    scaled by steps; one with no such kin is unknown and starts first."""
    base = _configs(1)[0]
    old = updated(base, steps=100, learning_rate=0.5)  # recorded: 300 s for 100 steps
    (tmp_path / "old.json").write_text(json.dumps({"wall_time_s": 300.0, "config": old.to_dict()}))
    new = updated(base, steps=50)  # no record: about 150 s
    mid = updated(base, steps=100, seed=3)  # its own record: 200 s (new: 100 s from it)
    (tmp_path / "mid.json").write_text(json.dumps({"wall_time_s": 200.0, "config": mid.to_dict()}))
    alien = updated(base, probe="elapsed", probe_params={"k_max": 2, "n_train": 16})
    todo = [(new, tmp_path / "new.json"), (mid, tmp_path / "mid.json"),
            (alien, tmp_path / "alien.json")]  # fmt: skip
    assert J.longest_first(todo) == [alien, mid, new]
    assert J.estimated_wall(new, [(300.0, old.to_dict())]) == 150.0
    assert J.estimated_wall(alien, [(300.0, old.to_dict())]) is None
