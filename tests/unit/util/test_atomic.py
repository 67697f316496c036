"""Crash-safe writes (ran.util.atomic) and the state files written with them.

Unit tests of the helper; the files it writes are byte-identical to the old
writers'; a writer killed with SIGKILL at random moments never leaves a torn
state file (every kill is followed by ``load_state`` and an exact comparison
with the states it was writing); an in-place write cut short does leave one;
and ``load_state`` refuses, in one sentence, files that are not state files,
states of another reservoir or model width, of the wrong width or batch.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import random
import signal
import stat
import time
import types

import pytest
import torch

from ran.injection.state import STATE_FORMAT, StateMixin
from ran.reservoir.config import ReservoirConfig
from ran.util import atomic
from ran.util.atomic import atomic_save_safetensors, atomic_write, atomic_write_json
from ran.util.results import Outputs, save_results

UNITS, BATCH = 4096, 64  # 1 MiB per state: a save takes long enough to be killed inside
N_KNOWN = 4  # the writer alternates between states filled with 1, 2, 3, 4
KILLS = 25
PRELOAD = [
    "pytest",
    "torch",
    "safetensors.torch",
    "ran.util.atomic",
    "ran.util.results",
    "ran.injection.state",
]


class StateOnly(StateMixin):
    """The state API of a handle on a real ReservoirConfig hash, without a model (cheap)."""

    def __init__(self, units: int = UNITS, input_dim: int = 8, seed: int = 0):
        cfg = ReservoirConfig(units=units, seed=seed)
        self.reservoir = types.SimpleNamespace(
            cfg=cfg, units=units, input_dim=input_dim, W=torch.zeros(())
        )  # what StateMixin reads: units, the config hash, W's dtype and device
        self._state = None
        self.last_drive = None


def known(k: int, units: int = UNITS, batch: int = BATCH) -> torch.Tensor:
    return torch.full((batch, units), float(k + 1))


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- the helper
def test_target_is_replaced_and_nothing_else_is_left(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")
    assert atomic_write(path, b"new") == path
    assert path.read_bytes() == b"new" and listing(tmp_path) == ["a.txt"]


def test_folder_is_created(tmp_path):
    path = tmp_path / "x" / "y" / "doc.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path, monkeypatch, where):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def boom(*args):
        raise KeyboardInterrupt  # also a BaseException: a Ctrl-C mid-write

    monkeypatch.setattr(atomic.os, where, boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and listing(tmp_path) == ["a.txt"]


def test_json_refuses_nan_without_touching_the_target(tmp_path):
    path = tmp_path / "doc.json"
    atomic_write_json(path, {"a": 1.5})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": math.nan})
    assert path.read_text() == json.dumps({"a": 1.5}, indent=1) + "\n"
    assert listing(tmp_path) == ["doc.json"]


def test_file_mode_is_what_a_plain_write_gives(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    fresh = tmp_path / "fresh.txt"
    atomic_write(fresh, "x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    kept.chmod(0o640)
    atomic_write(kept, "y")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


# --------------------------------------------------------------------------- byte-identical outputs
def split_safetensors(blob: bytes) -> tuple[dict, bytes]:
    """(header as a dict, tensor bytes) of a safetensors file."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def test_safetensors_and_state_files_match_what_save_file_wrote(tmp_path):
    """Byte-identical without metadata (the run cache's params); with metadata (state
    files) safetensors itself writes the metadata keys in a varying order (a Rust
    HashMap), so the header is compared as JSON and the tensor bytes exactly."""
    from safetensors.torch import save_file

    tensors = {"ran.0": torch.randn(3, 4), "ran.1": torch.randn(5)}
    new = atomic_save_safetensors(tensors, tmp_path / "new.safetensors").read_bytes()
    save_file(tensors, str(tmp_path / "old.safetensors"))
    assert new == (tmp_path / "old.safetensors").read_bytes()
    h = StateOnly(units=16)
    h.state = torch.randn(2, 16)
    new = h.save_state(tmp_path / "state.safetensors").read_bytes()
    meta = {"format": STATE_FORMAT, "reservoir_hash": h._state_hash()}
    save_file({"state": h.state}, str(tmp_path / "old_state.safetensors"), metadata=meta)
    old = (tmp_path / "old_state.safetensors").read_bytes()
    assert len(new) == len(old) and split_safetensors(new) == split_safetensors(old)


def test_the_same_tensors_and_metadata_give_the_same_bytes(tmp_path):
    """safetensors alone writes metadata keys in a varying order (so an adapter's file
    digest changed between two identical runs); the atomic writer sorts them: every save
    is byte-identical, and safetensors reads the file back whole."""
    from safetensors import safe_open

    tensors = {"b": torch.randn(3, 5), "a": torch.arange(7, dtype=torch.int64)}
    meta = {f"key{i}": f"value {i}" for i in range(12)}
    blobs = {atomic_save_safetensors(tensors, tmp_path / f"{i}.st", meta).read_bytes()
             for i in range(20)}  # fmt: skip
    assert len(blobs) == 1, "the atomic writer gave different bytes for the same input"
    blob = blobs.pop()
    assert int.from_bytes(blob[:8], "little") % 8 == 0
    with safe_open(tmp_path / "0.st", "pt") as f:
        assert f.metadata() == meta
        assert all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())


def test_results_json_keeps_its_formatting(tmp_path):
    out = Outputs(profile="smoke", root=tmp_path)
    path = save_results("unit", {"b": [1, 2.5], "a": {"z": None}}, out, seed=0)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=1, allow_nan=False) + "\n"
    assert listing(path.parent) == ["unit.json"]


# --------------------------------------------------------------------------- SIGKILL
def _writer(path: str, ready) -> None:
    """Save the known states in a loop, forever (until killed)."""
    torch.set_num_threads(1)
    h = StateOnly()
    states = [known(k) for k in range(N_KNOWN)]
    for i in itertools.count():
        h.state = states[i % N_KNOWN]
        h.save_state(path)
        if i == 0:
            ready.set()


def test_sigkill_at_random_moments_never_leaves_a_torn_state_file(tmp_path):
    """A forkserver (torch preloaded) restarts the writer in milliseconds after each kill."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # (the server's sys.path lacks tests/: not this module)
    path, reader = tmp_path / "state.safetensors", StateOnly()
    states = [known(k) for k in range(N_KNOWN)]
    rng, mid_write = random.Random(0), 0
    for _ in range(KILLS):
        ready = ctx.Event()
        proc = ctx.Process(target=_writer, args=(str(path), ready), daemon=True)
        proc.start()
        assert ready.wait(60), "the writer did not start"
        time.sleep(rng.uniform(0.0, 0.03))  # somewhere inside the save loop
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        strays = [p for p in tmp_path.iterdir() if p != path]  # killed between mkstemp and rename
        assert all(p.name.startswith(".state.safetensors.") for p in strays)
        mid_write += bool(strays)
        for p in strays:
            p.unlink()
        got = reader.load_state(path, batch_size=BATCH)
        assert sum(torch.equal(got, s) for s in states) == 1, "a torn or unknown state"
    assert mid_write > 0, "no kill landed inside a write; the test proves nothing"


def test_an_in_place_write_cut_short_leaves_a_torn_file_the_atomic_write_does_not(
    tmp_path, monkeypatch
):
    """Deterministic: the old results / run / pipeline writers (``Path.write_text``) wrote in
    place, so a crash after half the bytes left a torn JSON; the same crash inside
    :func:`atomic_write_json` leaves the previous file whole. (The old state writer,
    safetensors 0.8's ``save_file``, already renamed a temporary file, without fsync.)"""
    old, new = {"run": 1, "history": [0.5] * 50}, {"run": 2, "history": [0.25] * 50}
    path = atomic_write_json(tmp_path / "run.json", old)
    text = json.dumps(new, indent=1) + "\n"
    with open(path, "w") as fh:  # in place: truncated at open, half the bytes, then the crash
        fh.write(text[: len(text) // 2])
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
    atomic_write_json(path, old)

    def crash(fd):
        raise SystemExit("killed")

    monkeypatch.setattr(atomic.os, "fsync", crash)  # the same crash, mid-write, atomically
    with pytest.raises(SystemExit):
        atomic_write_json(path, new)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == old and listing(tmp_path) == ["run.json"]
    h = StateOnly(units=256)  # a torn state file is refused, never half-loaded
    h.state = known(0, 256, 8)
    h.save_state(tmp_path / "state.safetensors")
    blob = (tmp_path / "state.safetensors").read_bytes()
    (tmp_path / "state.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="is not a readable RAN state file"):
        h.load_state(tmp_path / "state.safetensors")


# --------------------------------------------------------------------------- mismatched states
def saved(tmp_path, h: StateOnly, batch: int = 2) -> object:
    h.state = torch.randn(batch, h.reservoir.units)
    return h.save_state(tmp_path / f"s{id(h)}.safetensors")


@pytest.mark.parametrize(
    "other",
    [dict(units=32), dict(input_dim=16), dict(seed=1)],
    ids=["reservoir-size", "model-width", "reservoir-seed"],
)
def test_a_state_of_another_reservoir_or_model_width_is_refused(tmp_path, other):
    path = saved(tmp_path, StateOnly(units=64))
    h = StateOnly(**({"units": 64} | other))
    with pytest.raises(
        ValueError, match=r"was saved from a different reservoir \(hash .*width\)\.$"
    ):
        h.load_state(path)
    assert h.state is None


def test_a_state_of_the_wrong_width_or_batch_is_refused(tmp_path):
    from safetensors.torch import save_file

    h = StateOnly(units=64)
    forged = tmp_path / "forged.safetensors"  # the right tag and hash, a wrong width
    meta = {"format": STATE_FORMAT, "reservoir_hash": h._state_hash()}
    save_file({"state": torch.zeros(2, 65)}, str(forged), metadata=meta)
    with pytest.raises(ValueError, match=r"must be a tensor of shape \(batch, 64\), got \(2, 65\)"):
        h.load_state(forged)
    path = saved(tmp_path, h, batch=2)
    with pytest.raises(ValueError, match="has batch size 2, expected 3"):
        h.load_state(path, batch_size=3)
    assert h.load_state(path, batch_size=2).shape == (2, 64)


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    h = StateOnly(units=64)
    untagged = tmp_path / "weights.safetensors"
    save_file({"state": torch.zeros(1, 64)}, str(untagged))
    with pytest.raises(ValueError, match="is not a RAN state file"):
        h.load_state(untagged)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1, 64)}, str(other), metadata={"format": STATE_FORMAT})
    with pytest.raises(ValueError, match="is not a RAN state file"):
        h.load_state(other)
    doc = atomic_write_json(tmp_path / "doc.json", {"state": [0.0]})
    with pytest.raises(ValueError, match="is not a readable RAN state file"):
        h.load_state(doc)


def test_an_injected_model_refuses_a_state_of_another_reservoir_size(tmp_path):
    from conftest import cached_model

    from ran.injection.config import InjectionConfig
    from ran.mechanisms.reservoir_slots import inject

    m, tok = cached_model("tiny-llama")
    with inject(m, InjectionConfig(reservoir=ReservoirConfig(units=64))) as h, torch.no_grad():
        m(**tok(["Remember this."], return_tensors="pt"))
        path = h.save_state(tmp_path / "state.safetensors")
    with inject(m, InjectionConfig(reservoir=ReservoirConfig(units=32))) as h:
        with pytest.raises(ValueError, match="saved from a different reservoir"):
            h.load_state(path)


def test_file_lock_serialises_two_processes(tmp_path):
    """Two processes in one lock never overlap: the log shows start/end pairs, not a mix
    (without the lock both would start before either ends)."""
    import subprocess
    import sys

    log, lock = tmp_path / "log", tmp_path / "sub" / ".build.lock"
    code = (
        "import sys, time\n"
        "from ran.util.atomic import file_lock\n"
        "with file_lock(sys.argv[1]):\n"
        "    open(sys.argv[2], 'a').write('start\\n')\n"
        "    time.sleep(0.5)\n"
        "    open(sys.argv[2], 'a').write('end\\n')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(lock), str(log)]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert log.read_text().split() == ["start", "end", "start", "end"]
    assert lock.is_file()  # the lock's folder was created
