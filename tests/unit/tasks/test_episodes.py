"""The reset control skips the passes its wiped state would forget, with the same scores."""

from __future__ import annotations

import torch
from conftest import cached_model

from ran.injection.config import InjectionConfig
from ran.mechanisms.reservoir_slots import inject
from ran.reservoir.config import ReservoirConfig
from ran.tasks.episodes import EpisodeRunner
from ran.tasks.probes import make_probe


def test_reset_control_scores_equal_running_every_pass_then_wiping():
    model, tok = cached_model("tiny-llama")
    eps = make_probe(
        "fact_in_text", k=4, distractors=(0, 2), idle_steps=(0, 3), n_train=20, n_val=8, n_test=8
    ).splits()["test"]
    with inject(model, InjectionConfig(reservoir=ReservoirConfig(units=32, lr=0.5))) as h:
        h.set_gate(1.0)
        runner = EpisodeRunner(h, tok)
        with torch.no_grad():
            fast = runner.run(eps, "reset")
            full = runner.run(eps, "reservoir")  # every pass written ...
            h.reset_state()  # ... then wiped, as the reset control used to do
            slow = runner.question_scores(eps)
        assert torch.equal(fast, slow)
        assert not torch.equal(full, slow)  # the state mattered, so the test can fail
