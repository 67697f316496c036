"""``make bench``'s single results file: sections, fields and target flags (smoke sizes)."""

from __future__ import annotations

import json

import pytest

from ran.bench import (
    BENCHES,
    agent,
    evaljobs,
    lowercache,
    mixedwrites,
    notebooks,
    overhead,
    passcost,
    run_benches,
    store,
    sweep,
    training,
)
from ran.util.results import Outputs, save_results

FIELDS = {
    "overhead": ("median_ratio", "ratio_ci95", "median_plain_s", "median_injected_s", "target"),
    "pass_cost": ("curve", "ratio", "figure", "caption", "target"),
    "sweep": ("speedup_float64", "speedup_float32", "same_computation", "target"),
    "lowercache": ("ratio_on", "ratio_on_ci95", "ratio_shared", "median_s", "identical", "target"),
    "notebooks": ("rows", "total_minutes", "target"),
    "training": (
        "arms",
        "ratio",
        "identical_1_thread",
        "step",
        "all_identical",
        "run_hashes",
        "gflops",
        "ratio_in_training",
    ),
    "eval_jobs": ("median_s", "speedup_two_1t", "speedup_two_1t_ci95", "identical_to_1_thread"),
    "mixed_writes": ("workloads", "model", "n_test", "reps"),
    "agent": ("idle_tick_ms", "ratio", "rss_mb", "rss_growth_mb", "checkpointed_tick_ms", "target"),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Every section measured at smoke size under a temporary root; returns (outputs, doc)."""
    outputs = Outputs("smoke", root=tmp_path_factory.mktemp("bench"))
    small = passcost.PassCostConfig(model_name="tiny-llama", points=(1, 4, 16), reps=2, warmup=0)
    store.update(outputs, {"overhead": overhead.run(outputs, reps=2, seq_len=32)})
    store.update(outputs, {"pass_cost": passcost.run(outputs, small)})
    store.update(outputs, {"sweep": sweep.run(outputs, repeats=1)})
    store.update(outputs, {"lowercache": lowercache.run(outputs)})
    run_benches("notebooks", outputs, progress=None)
    store.update(outputs, {"training": training.run(outputs)})
    store.update(outputs, {"eval_jobs": evaljobs.run(outputs)})
    store.update(outputs, {"mixed_writes": mixedwrites.run(outputs)})
    small_agent = agent.AgentBenchConfig(model_name="tiny-llama", units=64, idle_ticks=400,
                                         rss_every=100, checkpoint_ticks=3, reps=3, warmup=1)  # fmt: skip
    store.update(outputs, {"agent": agent.run(outputs, small_agent)})
    doc = json.loads((outputs.results / "bench.json").read_text())
    return outputs, doc


def test_bench_json_has_every_section_with_its_fields(bench):
    outputs, doc = bench
    assert list(doc["results"]) == list(store.SECTIONS)
    for name, fields in FIELDS.items():
        sec = doc["results"][name]
        missing = [f for f in (*fields, "checks", "met", "summary", "wall_time_s") if f not in sec]
        assert not missing, f"section {name} lacks {missing}"
    assert not list(outputs.results.glob("bench_*.json")), "per-bench files are gone"
    assert doc["meta"]["name"] == "bench" and doc["meta"]["wall_time_s"] > 0


def _holds(c: dict) -> bool:
    return c["value"] <= c["target"] if c["op"] == "<=" else c["value"] >= c["target"]


def test_target_flags_agree_with_the_numbers(bench):
    _, doc = bench
    for name, sec in doc["results"].items():
        targeted = [c for c in sec["checks"] if c["target"] is not None]
        assert targeted, f"section {name} states no target"
        for c in sec["checks"]:
            if c["target"] is None:
                assert c["met"] is None
            elif c["value"] is not None:
                assert c["met"] == _holds(c), (name, c)
        assert sec["met"] == all(c["met"] for c in targeted), name
        assert " met" not in sec["summary"] and "target" not in sec["summary"], name
    table = next(b for b in doc["findings"] if b["kind"] == "table")
    assert table["columns"] == ["measure", "value", "95% CI"]
    flat = [c for sec in doc["results"].values() for c in sec["checks"]]
    assert [row[1] for row in table["rows"]] == [c["value"] for c in flat]
    targets = [b for b in doc["findings"] if b["kind"] == "target"]  # the Targets table's rows
    assert [(t["value"], t["met"]) for t in targets] == [
        (c["value"], c["met"]) for c in flat if c["target"] is not None
    ]


def test_describe_rebuilds_checks_and_summary_from_the_stored_section(bench):
    """``python -m ran bench refresh``: each section's sentence and checks follow from its
    stored numbers alone, so rebuilding them changes nothing."""
    import importlib

    from ran.bench import BENCHES

    _, doc = bench
    for section, module in BENCHES.values():
        if section == "notebooks":  # read again from the results files, not described
            continue
        stored = doc["results"][section]
        again = importlib.import_module(module).describe(json.loads(json.dumps(stored)))
        assert again["summary"] == stored["summary"], section
        assert json.loads(json.dumps(again["checks"])) == stored["checks"], section


def test_a_ratio_whose_ci_contains_1_is_within_noise():
    sec = {"checks": [store.check("t", 0.96, 1.02, ci=[0.81, 1.12], ratio=True),
                      store.check("u", 1.04, 1.05, ci=[1.03, 1.05], ratio=True),
                      store.check("v", 0.96, 1.02, ci=[0.81, 1.12])], "summary": "s"}  # fmt: skip
    noise, clear, not_ratio = store.target_blocks({"x": sec})
    assert noise["met"] is True and noise["note"] == "within noise"
    assert clear["note"] == "" and not_ratio["note"] == ""
    head = store.findings({"x": sec}, Outputs("smoke"))[0]["text"]
    assert "0.960 (95% CI 0.810-1.120; within noise of 1)" in head and " met" not in head


def test_pass_cost_section_measures_both_arms_at_every_point(bench):
    outputs, doc = bench
    sec = doc["results"]["pass_cost"]
    points = sec["config"]["points"]
    for arm in passcost.ARMS:
        assert [row["t"] for row in sec["curve"][arm]] == points
        assert all(len(row["times_s"]) == sec["config"]["reps"] for row in sec["curve"][arm])
    cached = [row["cached_tokens"] for row in sec["curve"]["context"]]
    assert cached == [(t - 1) * sec["config"]["pass_len"] for t in points]
    assert (outputs.base / sec["figure"].split("build/smoke/", 1)[-1]).stat().st_size > 0
    assert f"t = {points[-1]}" in sec["caption"]
    assert any(b["kind"] == "figure" for b in doc["findings"])


def test_one_section_update_keeps_the_others(bench):
    outputs, doc = bench
    new = json.loads(json.dumps(doc["results"]["sweep"]))
    new["summary"] = "replaced"
    sections = store.update(outputs, {"sweep": new})
    assert sections["sweep"]["summary"] == "replaced"
    for name in ("overhead", "pass_cost", "notebooks"):
        assert sections[name] == doc["results"][name]


def test_notebooks_table_reads_wall_times_from_results_meta(tmp_path):
    outputs = Outputs("smoke", root=tmp_path)
    save_results("01_dyn", {}, outputs, seed=0, wall_time_s=120.0)
    save_results("02_surg", {}, outputs, seed=0, wall_time_s=60.0)
    save_results("05_seeds", {}, outputs, seed=0, wall_time_s=1200.0)
    pipeline = {"meta": {"name": "pipeline", "timing": {"02_surgery_nb": 90.0}}, "results": {}}
    (outputs.results / "pipeline.json").write_text(json.dumps(pipeline))
    sec = notebooks.run(outputs)
    minutes = {r["notebook"][:2]: r["minutes"] for r in sec["rows"]}
    assert minutes == {"01": 2.0, "02": 1.5, "05": 20.0} | dict.fromkeys(("03", "04", "06", "07"))
    assert sec["total_minutes"] == pytest.approx(23.5)
    # missing notebooks: the 45-minute target cannot be met
    assert sec["checks"][0]["value"] is None and sec["met"] is False
    assert sec["checks"][2]["value"] == 20.0  # the longest, no target
    assert "03, 04" in sec["summary"] and "met" not in sec["summary"]
    for nb in ("03", "04", "06", "07"):
        save_results(f"{nb}_x", {}, outputs, seed=0, wall_time_s=300.0)
    sec = notebooks.run(outputs)
    assert sec["checks"][0]["value"] == pytest.approx(43.5) and sec["met"] is True
    save_results("03_y", {}, outputs, seed=0, wall_time_s=3000.0)  # the largest of 03's files
    assert notebooks.run(outputs)["met"] is False  # 23.5 + 50 + 15 > 45


def test_notebooks_target_reads_the_wall_time_of_a_run_in_lanes(tmp_path):
    """With lanes the notebooks overlap: the target is the last run's wall time when that
    run covered every notebook, else the sum of their minutes."""
    outputs = Outputs("smoke", root=tmp_path)
    stems = [f"{nb}_x" for nb in notebooks.NOTEBOOKS]
    for stem in stems:
        save_results(stem, {}, outputs, seed=0, wall_time_s=600.0)
    timing = dict.fromkeys(stems, 600.0)  # 70 notebook-minutes
    last = {"notebooks": stems, "lanes": 2, "elapsed_s": 40 * 60.0}
    meta = {"name": "pipeline", "timing": timing, "last_run": last}
    (outputs.results / "pipeline.json").write_text(json.dumps({"meta": meta, "results": {}}))
    sec = notebooks.run(outputs)
    assert sec["wall_minutes"] == pytest.approx(40.0) and sec["lanes"] == 2
    assert sec["total_minutes"] == pytest.approx(70.0) and sec["met"] is True
    assert "2 lane(s)" in sec["summary"]
    meta["last_run"] = last | {"notebooks": stems[:3]}  # a partial run: the sum counts
    (outputs.results / "pipeline.json").write_text(json.dumps({"meta": meta, "results": {}}))
    sec = notebooks.run(outputs)
    assert sec["wall_minutes"] == pytest.approx(70.0) and sec["met"] is False


def test_warm_rerun_is_checked_apart_from_the_cold_record(tmp_path):
    """make warm records pipeline_warm.json: its own check (5 min) beside the cold one, which
    it leaves alone; a warm run of some notebooks only is shown but not checked."""
    outputs = Outputs("smoke", root=tmp_path)
    stems = [f"{nb}_x" for nb in notebooks.NOTEBOOKS]
    for stem in stems:
        save_results(stem, {}, outputs, seed=0, wall_time_s=300.0)
    cold = {"name": "pipeline", "timing": dict.fromkeys(stems, 300.0),
            "last_run": {"notebooks": stems, "lanes": 1, "elapsed_s": 35 * 60.0}}  # fmt: skip
    (outputs.results / "pipeline.json").write_text(json.dumps({"meta": cold, "results": {}}))
    sec = notebooks.run(outputs)
    assert sec["warm"] is None and len(sec["checks"]) == 4 and "warm" not in sec["summary"]
    speed = {"before": {"gflops": 80.0}, "after": {"gflops": 120.0}}
    warm = {"name": "pipeline_warm", "timing": dict.fromkeys(stems, 30.0),
            "machine": dict.fromkeys(stems, speed),
            "last_run": {"notebooks": stems, "lanes": 1, "elapsed_s": 4.5 * 60}}  # fmt: skip
    path = outputs.results / "pipeline_warm.json"
    path.write_text(json.dumps({"meta": warm, "results": {}}))
    sec = notebooks.run(outputs)
    assert sec["wall_minutes"] == pytest.approx(35.0)  # the cold record, untouched
    warm_check = sec["checks"][-1]
    assert warm_check["value"] == pytest.approx(4.5) and warm_check["target"] == 5.0
    assert warm_check["met"] is True and sec["met"] is True
    assert "make warm) ran every notebook in 4.5 min at 80-120 GFLOPS" in sec["summary"]
    warm["last_run"] = warm["last_run"] | {"elapsed_s": 6 * 60.0}
    path.write_text(json.dumps({"meta": warm, "results": {}}))
    assert notebooks.run(outputs)["met"] is False
    warm["last_run"] = warm["last_run"] | {"notebooks": stems[:2]}
    path.write_text(json.dumps({"meta": warm, "results": {}}))
    sec = notebooks.run(outputs)
    assert sec["checks"][-1]["value"] is None and "2 notebook(s) only" in sec["summary"]


def test_pipeline_rejects_an_unknown_timing_record(tmp_path):
    from ran.pipeline import run as run_pipeline
    from ran.report.notebooks import pipeline_json

    with pytest.raises(ValueError, match="record must be one of"):
        run_pipeline("smoke", ["01"], record="pipeline_hot", notebook_dir=tmp_path)
    with pytest.raises(ValueError, match="record must be one of"):
        pipeline_json(Outputs("smoke", root=tmp_path), "other")
    assert (
        pipeline_json(Outputs("smoke", root=tmp_path), "pipeline_warm").name == "pipeline_warm.json"
    )


def test_check_and_update_reject_bad_input(tmp_path):
    assert store.check("x", 1.0, 2.0, "<=")["met"] is True
    assert store.check("x", 1.0, 2.0, ">=")["met"] is False
    assert store.check("x", 1.0, None)["met"] is None
    with pytest.raises(ValueError, match="op must be"):
        store.check("x", 1.0, 2.0, "<")
    with pytest.raises(ValueError, match="unknown bench section"):
        store.update(Outputs("smoke", root=tmp_path), {"speed": {}})
    with pytest.raises(ValueError, match="lacks"):
        store.update(Outputs("smoke", root=tmp_path), {"sweep": {"summary": "x"}})
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benches("everything", Outputs("smoke", root=tmp_path))
    assert set(BENCHES) == {"overhead", "passcost", "sweep", "lowercache", "notebooks", "training",
                            "evaljobs", "mixedwrites", "agent"}  # fmt: skip


@pytest.mark.parametrize(
    "kwargs", [dict(points=(2, 10)), dict(points=(1,)), dict(points=(1, 5, 5)), dict(reps=1)]
)
def test_pass_cost_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        passcost.PassCostConfig(**kwargs)


def test_filled_cache_holds_the_prefix_length():
    from ran.injection.models import load_model

    model, _ = load_model("tiny-llama")
    cache = passcost.filled_cache(model, 48, seed=0)
    assert cache.get_seq_length() == 48
    assert passcost.filled_cache(model, 0, seed=0).get_seq_length() == 0


def test_cli_bench_notebooks_writes_bench_json(tmp_path, monkeypatch):
    from ran.__main__ import main

    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    assert main(["bench", "notebooks", "--profile", "smoke"]) == 0
    doc = json.loads((tmp_path / "build/smoke/data/results/bench.json").read_text())
    assert list(doc["results"]) == ["notebooks"]


def test_cold_estimate_adds_the_training_time_of_reused_runs_once(tmp_path):
    outputs = Outputs("smoke", root=tmp_path)
    run = {"hash": "a", "loaded": True, "wall_time_s": 300.0}
    fresh = {"hash": "b", "loaded": False, "wall_time_s": 600.0}  # trained here: in the wall time
    columns = {"hash": ["c", "d"], "loaded": [True, False], "train_wall_s": [120.0, 60.0]}
    payload = {"runs": {"x": run, "y": fresh}, "scaling": [{"run": dict(run)}], "seeds": columns}
    save_results("03_x", payload, outputs, seed=0, wall_time_s=600.0)
    for nb in ("01", "02", "04", "05", "06", "07"):
        save_results(f"{nb}_x", {}, outputs, seed=0, wall_time_s=60.0)
    sec = notebooks.run(outputs)
    row = next(r for r in sec["rows"] if r["notebook"].startswith("03"))
    # run "a" counted once although recorded twice; "c" from the column form; b and d were trained
    assert row["reused_runs"] == 2 and row["reused_minutes"] == pytest.approx(7.0)
    assert row["cold_minutes"] == pytest.approx(17.0)
    assert sec["cold_minutes"] == pytest.approx(sec["total_minutes"] + 7.0)
    cold = next(c for c in sec["checks"] if "cold" in c["measure"])
    assert cold["value"] == pytest.approx(23.0) and cold["met"] is True  # 10 + 6 x 1 + 7
    assert "2 training run(s) were reused" in sec["summary"]
    # b and d were trained while the notebook ran: the training share of its own minutes
    assert row["trained_runs"] == 2 and row["training_minutes"] == pytest.approx(11.0)
    assert sec["training_minutes"] == pytest.approx(11.0)
    assert "the 2 run(s) trained as they ran took 11.0 min of training" in sec["summary"]


def test_cold_estimate_never_adds_a_run_trained_in_the_same_pipeline(tmp_path):
    outputs = Outputs("smoke", root=tmp_path)
    trained_in_03 = {"hash": "t", "loaded": False, "wall_time_s": 240.0}
    shared = {"hash": "s", "loaded": True, "wall_time_s": 120.0}  # reused by 04 and 05
    save_results("03_x", {"runs": [trained_in_03]}, outputs, seed=0, wall_time_s=600.0)
    loads_t = {"runs": [dict(trained_in_03, loaded=True), shared]}
    save_results("04_x", loads_t, outputs, seed=0, wall_time_s=300.0)
    save_results("05_x", {"runs": [shared]}, outputs, seed=0, wall_time_s=60.0)
    for nb in ("01", "02"):
        save_results(f"{nb}_x", {}, outputs, seed=0, wall_time_s=60.0)
    sec = notebooks.run(outputs)
    row = {r["notebook"][:2]: r for r in sec["rows"]}
    assert row["04"]["reused_runs"] == 1 and row["04"]["reused_minutes"] == pytest.approx(2.0)
    assert row["03"]["training_minutes"] == pytest.approx(4.0)
    # "t" is inside 03's wall time; "s" is added once although 04 and 05 both load it
    assert sec["cold_minutes"] == pytest.approx(sec["total_minutes"] + 2.0)


def test_cold_estimate_takes_the_runs_recorded_with_the_minutes(tmp_path):
    """A notebook regenerated from the cache marks its runs loaded; the minutes of the cold
    run in pipeline.json go with the runs pipeline.json recorded then, not with those flags."""
    outputs = Outputs("smoke", root=tmp_path)
    for nb in ("01", "02", "03", "05"):
        save_results(f"{nb}_x", {}, outputs, seed=0, wall_time_s=60.0)
    save_results("04_x", {"run": {"hash": "a", "loaded": True, "wall_time_s": 300.0}}, outputs,
                 seed=0, wall_time_s=30.0)  # fmt: skip
    timing = {f"{nb}_x": 60.0 for nb in ("01", "02", "03", "05")} | {"04_x": 600.0}
    meta = {"name": "pipeline", "timing": timing}
    path = outputs.results / "pipeline.json"
    path.write_text(json.dumps({"meta": meta, "results": {}}))
    stale = notebooks.run(outputs)  # no record of the runs: the regenerated flags count
    assert stale["cold_minutes"] == pytest.approx(14.0 + 5.0)
    assert stale["gflops"] is None and "speed was not recorded" in stale["summary"]
    empty = {"trained": {}, "loaded": {}}
    meta["runs"] = {k: empty for k in timing} | {"04_x": {"trained": {"a": 300.0}, "loaded": {}}}
    meta["machine"] = {"04_x": {"before": {"gflops": 80.0}, "after": {"gflops": 120.0}}}
    meta["cells"] = {"04_x": {"slowest": [[7, 300.0, "cmp = `compare`"], [2, 6.0, "x = 1"]]},
                     "05_x": {"slowest": [[3, 54.0, "seeds()"]]}}  # fmt: skip
    path.write_text(json.dumps({"meta": meta, "results": {}}))
    sec = notebooks.run(outputs)
    top = notebooks.slowest_cells(sec["rows"], 2)
    assert [(c["notebook"], c["cell"], c["minutes"]) for c in top] == [
        ("04_x", 7, 5.0),
        ("05_x", 3, 0.9),
    ]
    assert "the slowest cells: 04 cell 7 (5.0 min, `cmp = 'compare'`), 05 cell 3" in sec["summary"]
    row = next(r for r in sec["rows"] if r["notebook"].startswith("04"))
    assert row["reused_runs"] == 0 and row["trained_runs"] == 1
    assert sec["cold_minutes"] == pytest.approx(14.0) == sec["total_minutes"]
    assert row["gflops"] == [80.0, 120.0] and sec["gflops"] == [80.0, 120.0]
    assert "80 to 120 GFLOPS" in sec["summary"]


def test_matmul_gflops_measures_and_rejects_bad_sizes():
    from ran.bench import machine

    assert machine.matmul_gflops(n=128, reps=2) > 0
    snap = machine.snapshot()
    assert snap["gflops"] > 0 and snap["threads"] >= 1
    assert snap["cpu"]["capability"] and isinstance(snap["cpu"]["model"], str)
    with pytest.raises(ValueError, match="n >= 64"):
        machine.matmul_gflops(n=8)


def test_eval_jobs_split_the_episodes_and_agree(bench):
    """The 2 workers evaluate the two halves of the same batches: their predictions, joined,
    are the 1-thread process's (the tiny model is exact at any thread count too)."""
    sec = bench[1]["results"]["eval_jobs"]
    assert sec["identical_to_1_thread"] and sec["identical_to_2_threads"], sec["summary"]
    assert all(len(v) == sec["reps"] for v in sec["times_s"].values())
    assert sec["speedup_two_1t"] > 0 and "2 one-thread processes" in sec["summary"]
    eps = list(range(40))  # 5 batches of 8: the first half ends at a batch boundary
    assert evaljobs._half(eps, 8, 0) == eps[:16] and evaljobs._half(eps, 8, 1) == eps[16:]
    with pytest.raises(ValueError, match="n_test >= 2 \\* batch"):
        evaljobs.measure("tiny-llama", 4, 8, 1, 8)


def test_mixed_writes_run_fewer_rows_and_agree(bench):
    """The started-rows arm sends fewer rows through the write passes than the every-row
    arm, on every workload, and both give the same predictions."""
    sec = bench[1]["results"]["mixed_writes"]
    assert set(sec["workloads"]) == set(mixedwrites.WORKLOADS)
    for name, w in sec["workloads"].items():
        n = w["rows_written"]
        assert 0 < n["started_rows"] < n["all_rows"], (name, n)
        assert w["same_predictions"] and w["max_abs_diff"] < 1e-4, (name, w)
        assert all(len(v) == sec["reps"] for v in w["times_s"].values()) and w["ratio"] > 0
    assert "started rows only" in sec["summary"]
    with pytest.raises(ValueError, match="reps >= 1"):
        mixedwrites.measure("tiny-llama", 8, 0)


def test_lowercache_bench_reuses_and_changes_nothing(bench):
    _, doc = bench
    sec = doc["results"]["lowercache"]
    assert sec["identical"] is True
    assert len(sec["times_s"]["off"]) == sec["reps"] == 2
    served = sec["served_calls"]  # off runs every layer; shared finds what on stored
    assert served["off"] == 0 < served["on"] < served["shared"], served
    with pytest.raises(ValueError, match="reps"):
        lowercache.measure("tiny-llama", 4, 16, 0, 8)


def test_training_arms_give_identical_runs(bench):
    sec = bench[1]["results"]["training"]
    assert sec["all_identical"] and sec["identical_1_thread"] and sec["step"]["identical"]
    assert set(sec["arms"]) == set(training.ARMS) and sec["arms"]["shared"]["lower_files"] > 0
    assert sec["arms"]["workers"]["processes"] == 2
    for arm in sec["arms"].values():  # the loops are part of the wall time
        assert arm["train_steps_per_s"] >= arm["steps_per_s"] and arm["outside_training_s"] >= 0
    assert "inside the training loops only, 2 workers" in sec["summary"]


def test_agent_section_times_ticks_passes_and_memory(bench):
    sec = bench[1]["results"]["agent"]
    assert len(sec["rss_mb"]) == 400 // 100 + 1 and sec["state_finite"]
    assert 0 < sec["idle_tick_ms"]["median"] <= sec["idle_tick_ms"]["p99"]
    assert sec["checkpointed_tick_ms"]["median"] > sec["idle_tick_ms"]["median"]
    assert len(sec["prompted_s"]["times"]) == len(sec["plain_s"]["times"]) == 3
    lo, hi = sec["ratio"]["ci95"]
    assert lo <= sec["ratio"]["median"] <= hi
    with pytest.raises(ValueError, match="idle_ticks"):
        agent.AgentBenchConfig(idle_ticks=1)
