"""python -m ran train / eval / demo (ran.cli.core, ran.cli.demo) on a tiny adapter."""

import json
import re
import sys

import pytest
from conftest import TINY_RUN

from ran import __main__ as M
from ran.cli.demo import DEFAULT_QUESTION, DEFAULT_TEXT
from ran.mechanisms.adapter import CONFIG_NAME, WEIGHTS_NAME
from ran.training.config import TrainConfig
from ran.util.results import Outputs

CONFIG = TINY_RUN | {"injection": TINY_RUN["injection"] | {"reservoir": {"units": 64}}}
SUMMARY = re.compile(
    r"^secret_word K=4 test n=8: reservoir \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \| reset \d\.\d\d "
    r"\| shuffled \d\.\d\d \| stateless \d\.\d\d \| oracle \d\.\d\d \| chance 0\.25$"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Outputs under a temporary RAN_ROOT (the smoke profile writes under build/smoke)."""
    path = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAN_ROOT", str(path))
        yield path


@pytest.fixture(scope="module")
def adapter(root):
    """`python -m ran train` of a 2-step tiny-llama config, into its default folder."""
    config = root / "tiny.json"
    config.write_text(json.dumps(CONFIG))
    assert M.main(["train", str(config), "--profile", "smoke"]) == 0
    folder = Outputs("smoke").base / "data" / "adapters" / TrainConfig(**CONFIG).config_hash()
    return folder


def test_train_writes_run_and_adapter(adapter, root):
    assert adapter.is_relative_to(root / "build" / "smoke" / "data" / "adapters")
    assert (adapter / CONFIG_NAME).is_file() and (adapter / WEIGHTS_NAME).is_file()
    doc = json.loads((adapter / CONFIG_NAME).read_text())
    assert doc["training"]["probe"] == "secret_word" and doc["training"]["probe_params"]["k"] == 4
    run = Outputs("smoke").results / "runs" / f"{adapter.name}.json"
    assert json.loads(run.read_text())["hash"] == adapter.name


def test_train_yaml_and_out(adapter, tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "mine"
    assert M.main(["train", str(config), "--profile", "smoke", "--out", str(out)]) == 0
    assert "loaded from the cache" in capsys.readouterr().out  # same hash as the JSON run
    assert (out / CONFIG_NAME).is_file()


@pytest.mark.parametrize(
    "doc, sentence",
    [
        (
            CONFIG | {"stepz": 3},
            "tiny.json: unknown field 'stepz' (TrainConfig has no such field).",
        ),
        (CONFIG | {"batch_size": 0}, "tiny.json: batch_size must be >= 1, got 0."),
        (CONFIG | {"steps": "two"}, "tiny.json: field 'steps' must be an integer, got 'two'."),
        (
            CONFIG | {"injection": {"reservoir": {"unitz": 3}}},
            "tiny.json: unknown field 'injection.reservoir.unitz' (ReservoirConfig has no such "
            "field).",
        ),
        (
            CONFIG | {"n_slots": 4},
            "tiny.json: TrainConfig has no field 'n_slots': it now lives under 'injection' "
            "(TrainConfig(injection=InjectionConfig(n_slots=...)), or injection: {n_slots: ...} "
            "in a config file).",
        ),
        ([1, 2], "tiny.json must be a mapping of TrainConfig fields, got [1, 2]."),
    ],
)
def test_bad_config_exits_2_with_one_sentence(tmp_path, capsys, doc, sentence):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(doc))
    assert M.main(["train", str(config), "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {sentence}\n"


def test_unreadable_config(tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text("{oops")
    assert M.main(["train", str(config)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {config} is not valid JSON: ")
    assert M.main(["train", str(tmp_path / "none.json")]) == 2
    assert "does not exist." in capsys.readouterr().err


def test_eval_writes_results_and_summary(adapter, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert M.main(["eval", str(adapter), "--probe", "secret_word", "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert SUMMARY.match(line), line
    doc = json.loads(out.read_text())
    assert doc["summary"] == line and doc["probe"] == "secret_word" and doc["n"] == 8
    for control in ("reservoir", "reset", "shuffled", "stateless", "oracle"):
        r = doc["results"][control]
        assert r["n"] == 8 and 0 <= r["ci_low"] <= r["acc"] <= r["ci_high"] <= 1
    assert doc["probe_params"]["k"] == 4  # the training probe's parameters by default
    assert doc["adapter_config"]["kind"] == "reservoir"


def test_eval_params_and_n_test(adapter, capsys):
    args = ["eval", str(adapter), "--param", "k=3", "--param", 'keys=["dog","cat","owl"]']
    assert M.main([*args, "--n-test", "6"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("secret_word K=3 test n=6: reservoir ")
    doc = json.loads((adapter / "eval_secret_word.json").read_text())
    assert doc["probe_params"]["keys"] == ["dog", "cat", "owl"]


@pytest.mark.parametrize(
    "extra, start",
    [
        (["--probe", "nope"], "error: unknown probe 'nope'; choose one of "),
        (["--param", "k=abc"], "error: bad parameters for probe 'secret_word': "),
        (["--param", "k"], "error: --param needs KEY=VALUE, got 'k'."),
    ],
)
def test_eval_bad_probe_or_param(adapter, capsys, extra, start):
    assert M.main(["eval", str(adapter), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1


def test_eval_missing_adapter(tmp_path, capsys):
    assert M.main(["eval", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / CONFIG_NAME} is missing; {tmp_path} is not a saved RAN adapter.\n"
    )


def test_demo_two_processes(adapter, capsys):
    assert M.main(["demo", "--adapter", str(adapter), "--key", "river"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    text = re.escape(repr(DEFAULT_TEXT.replace("{key}", "river")))  # the key inside text
    first = re.fullmatch(rf"pass 1 \(process (\d+)\): {text}", lines[0])
    question = re.escape(repr(DEFAULT_QUESTION))
    second = [re.fullmatch(rf"pass 2 \(process (\d+), state from .+\): {question}", ln)
              for ln in lines if ln.startswith("pass 2")]  # fmt: skip
    assert first and len(second) == 1 and second[0]
    assert first.group(1) != second[0].group(1)  # two processes
    assert "top-4 of 4 candidates:" in lines
    table = lines[lines.index("top-4 of 4 candidates:") + 1 :][:4]
    assert sorted(row.split()[0] for row in table) == ["apple", "candle", "river", "tiger"]
    assert sum(float(row.split()[1]) for row in table) == pytest.approx(1.0, abs=2e-3)
    assert lines[-1].startswith("the secret was 'river': ")


def test_demo_without_adapter(root, capsys):
    assert M.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: there is no trained adapter at {root}/data/adapters/")
    assert "`make all`" in err and "python -m ran train" in err and err.count("\n") == 1


@pytest.mark.parametrize("verb", ["train", "eval", "demo"])
def test_help_lists_options(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        M.main([verb, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    options = {
        "train": ["--out", "--profile"],
        "eval": ["--probe", "--param", "--n-test", "--out"],
        "demo": ["--adapter", "--key", "--text", "--recall"],
    }[verb]
    assert out.startswith(f"usage: python -m ran {verb}") and all(o in out for o in options)


def test_yaml_without_pyyaml_is_one_sentence(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text("steps: 2\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    assert M.main(["train", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"error: reading {config} needs PyYAML, which is not installed; write the config as JSON.\n"
    )
