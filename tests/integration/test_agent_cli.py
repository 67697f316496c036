"""``python -m ran agent``: help, a scripted run, restore, user errors, and a SIGKILLed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from agent_helpers import make_adapter

from ran import __main__ as M
from ran.agent.events import read_log
from ran.util.results import REPO_ROOT

SCRIPT = """# a short conversation
The harbor was quiet this morning.
/idle 2
Agent, what is the harbor made of?
\x01\x02
/review
/reset
Nobody came today.
"""


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("cli") / "tiny")


def _run(capsys, *argv):
    code = M.main(["agent", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_the_options():
    proc = subprocess.run([sys.executable, "-m", "ran", "agent", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0
    for opt in ("--adapter", "--idle-every", "--script", "--home", "--gate", "--fresh"):
        assert opt in proc.stdout


def test_scripted_run_trains_the_gate_then_restores(adapter, tmp_path, capsys):
    script = tmp_path / "talk.txt"
    script.write_text(SCRIPT)
    home = tmp_path / "home"
    code, out, err = _run(capsys, "--adapter", str(adapter), "--home", str(home), "--script",
                          str(script), "--idle-every", "0")  # fmt: skip
    assert code == 0, err
    assert (
        "training one on the gate probe" in out
        and (adapter / "output_gate" / "gate.json").is_file()
    )
    assert "agent ready (fresh state, gate stateful)" in out
    assert "· pass 2: idle tick" in out and "· pass 3: idle tick" in out
    assert "! the message is empty" in out and "· reservoir state reset" in out
    assert "agent stopped after 6 passes" in out
    kinds = [e["kind"] for e in read_log(home / "events.jsonl")]
    assert kinds.count("checkpoint") == 6 and kinds[-1] == "stopped"
    code, out, _ = _run(capsys, "--adapter", str(adapter), "--home", str(home), "--script",
                        str(script), "--idle-every", "0", "--always-emit")  # fmt: skip
    assert code == 0 and "agent ready (restored at pass 6, gate always)" in out
    assert "agent stopped after 12 passes" in out and out.count("agent> ") == 3


@pytest.mark.parametrize(
    "argv, sentence",
    [
        (["--adapter", "{tmp}/missing"], "error: there is no trained adapter at {tmp}/missing;"),
        (["--script", "{tmp}/nope.txt"], "error: the script file {tmp}/nope.txt does not exist."),
        (["--script", "{tmp}/bad.txt"], "error: line 2: unknown command '/dance'; commands are"),
        (["--buffer-tokens", "0"], "error: buffer_tokens must be an integer >= 1, got 0."),
        (["--idle-every", "-1"], "error: --idle-every must be >= 0 seconds, got -1.0."),
    ],
)
def test_user_errors_print_one_sentence_and_exit_2(adapter, tmp_path, capsys, argv, sentence):
    (tmp_path / "bad.txt").write_text("hello\n/dance now\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--adapter" not in argv:
        argv += ["--adapter", str(adapter), "--always-emit"]
    code, out, err = _run(capsys, "--home", str(tmp_path / "h"), *argv)
    assert code == 2 and err.startswith(sentence.format(tmp=tmp_path)), err
    assert err.count("\n") == 1


def test_checkpoint_of_another_adapter_is_refused(adapter, tmp_path, capsys):
    home = tmp_path / "home"
    script = tmp_path / "s.txt"
    script.write_text("/idle 1\n")
    assert _run(capsys, "--adapter", str(adapter), "--home", str(home), "--script", str(script),
                "--always-emit")[0] == 0  # fmt: skip
    other = make_adapter(tmp_path / "other", seed=3)
    code, _, err = _run(capsys, "--adapter", str(other), "--home", str(home), "--script", str(script),
                        "--always-emit")  # fmt: skip
    assert code == 2 and "belongs to another adapter or model" in err and err.count("\n") == 1


def test_a_killed_agent_process_restarts_from_its_last_checkpoint(adapter, tmp_path, capsys):
    home = tmp_path / "home"
    script = tmp_path / "long.txt"
    script.write_text("".join(f"Message {i} about the mill.\n/idle 1\n" for i in range(2000)))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ran", "agent", "--adapter", str(adapter), "--home", str(home),
           "--script", str(script), "--always-emit", "--idle-every", "0"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log, t0 = home / "events.jsonl", time.monotonic()
    while time.monotonic() - t0 < 120:
        if log.is_file() and sum(e["kind"] == "checkpoint" for e in read_log(log)) >= 10:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done = max(e["pass_index"] for e in read_log(log) if e["kind"] == "checkpoint")
    record = json.loads((home / "checkpoint" / "agent.json").read_text())
    assert record["passes"] in (done, done + 1)
    short = tmp_path / "short.txt"
    short.write_text("/idle 1\n")
    code, out, _ = _run(capsys, "--adapter", str(adapter), "--home", str(home), "--script", str(short),
                        "--always-emit")  # fmt: skip
    assert code == 0 and f"agent ready (restored at pass {record['passes']}," in out


def test_status_line_on_a_terminal():
    import io
    from types import SimpleNamespace

    from ran.agent.cli import Display
    from ran.agent.events import Event
    from ran.agent.runtime import Counters

    agent = SimpleNamespace(counters=Counters(passes=3, idle_ticks=2, silent=1),
                            buffer=SimpleNamespace(tokens=40, budget=256))  # fmt: skip
    out = io.StringIO()
    show = Display(agent, out, tty=True)
    show(Event("idle", 3, data={"p": 0.01}))
    show(Event("emitted", 4, text="hello", data={"p": 0.9}))
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K[pass 3 | 2 idle ticks | 1 silent | 0 emitted | buffer 40/256")
    assert "idle tick (p = 0.01)]" in text and "\r\x1b[2Kagent> hello\n[pass 3" in text
    assert "emitted (p = 0.90)]" in text.splitlines()[-1]
