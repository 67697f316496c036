"""generate() with a carried state: every mode, against a reference loop of plain forward calls.

The reference feeds the prompts, then each returned sequence's tokens one at a
time through the injected model with the KV cache (as generate() does), from
the prompt's state repeated for each returned sequence, and records the
logits and the state after every call. Greedy must give the same tokens;
sampling and beam search must give, for every returned sequence and every
step, the logits generate() computed for the row that produced that token
(``output_logits`` with ``beam_indices`` for beams): the state each sequence
read at every step is the one its own history produced. After the call the
handle holds one row per prompt, the state of the first returned sequence.
The gate is open and the state is written by a first pass, so a wrong state
changes the logits.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cached_model

from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.mechanisms.attractor import AttractorConfig
from ran.mechanisms.registry import make
from ran.mechanisms.reservoir_slots import inject
from ran.reservoir.config import ReservoirConfig

PROMPTS = ["The quick brown fox", "To be"]  # the second is left-padded
FIRST = ["Remember the lantern.", "A second memory row"]
SMALL = InjectionConfig(reservoir=ReservoirConfig(units=64, seed=1), n_slots=4, readout_scale=3.0)
NEW = 6  # new tokens per generate() call
TOL = dict(atol=1e-4, rtol=1e-4)  # batch composition differs from generate()'s: float noise only

model = cached_model


def enc(tok, texts):
    return tok(texts, return_tensors="pt", padding=True)


def reference(m, h, prompt, rows: int, tokens, state0, reset_each_step: bool = False):
    """Feed the prompts (each repeated ``rows`` times), then ``tokens`` (R, n) one by one.

    Returns the logits of every call, [(R, V)] * n (call t predicts token t), and the
    handle's state after every call, [(R, N)] * n. ``reset_each_step``: every call
    starts from ``state0`` (advance="generate": generate() reads one state throughout).
    """
    ids = prompt["input_ids"].repeat_interleave(rows, dim=0)
    mask = prompt["attention_mask"].repeat_interleave(rows, dim=0)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # what generate() derives
    start = None if state0 is None else state0.repeat_interleave(rows, dim=0)
    logits, states, cache = [], [], None
    for t in range(tokens.shape[1]):
        if t == 0 or reset_each_step:
            h.state = start
        out = m(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
            use_cache=True,
        )  # fmt: skip
        logits.append(out.logits[:, -1].float())
        states.append(h.state)
        cache, ids = out.past_key_values, tokens[:, t : t + 1]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        pos = pos[:, -1:] + 1
    return logits, states


def open_handle(m, tok, cfg=SMALL, first=True):
    h = inject(m, cfg)
    h.set_gate(1.0)
    if first:
        m(**enc(tok, FIRST))  # a state that matters
    return h


def check_returned(m, h, prompt, out, rows, state0, final, beams: bool, reset_each_step=False):
    """Every returned sequence against the reference; ``final`` the handle's state after generate()."""
    t0 = prompt["input_ids"].shape[1]
    if beams:  # the row (of B * num_beams) that produced each token of each returned sequence
        src = out.beam_indices.long()  # (R, n), -1 past the end of a sequence
        length = (src >= 0).sum(1)  # (R,)
        # a sequence moved to another row after step 1 (step 0's rows are all the prompt's):
        # without the reorder it would have read another beam's state there
        assert ((src[:, 2:] != src[:, 1:-1]) & (src[:, 2:] >= 0)).any(), "no beam was reordered"
    else:
        src = torch.arange(out.sequences.shape[0])[:, None].expand(-1, len(out.logits))
        length = torch.full((out.sequences.shape[0],), len(out.logits))
    n = int(length.max())
    tokens = out.sequences[:, t0 : t0 + n]
    logits, states = reference(m, h, prompt, rows, tokens, state0, reset_each_step)
    for i in range(tokens.shape[0]):
        for t in range(int(length[i])):
            got = out.logits[t][src[i, t]]
            torch.testing.assert_close(logits[t][i], got.float(), **TOL)
    firsts = torch.arange(0, tokens.shape[0], rows)  # the first returned sequence per prompt
    want = torch.stack([states[int(length[i]) - 1][i] for i in firsts])
    assert final.shape == (prompt["input_ids"].shape[0], want.shape[1])
    torch.testing.assert_close(final.float(), want.float(), **TOL)
    return length


# --------------------------------------------------------------------------- greedy
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_greedy_equals_a_manual_argmax_loop(name, impl):
    m, tok = model(name, impl)
    prompt = enc(tok, PROMPTS)
    with open_handle(m, tok) as h, torch.no_grad():
        s0 = h.state.clone()
        out = m.generate(**prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        final = h.state
        h.state = s0  # manual loop: model(prompt), argmax, feed it, ...
        ids, mask = prompt["input_ids"], prompt["attention_mask"]
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache, picked = None, []
        for _ in range(NEW):
            o = m(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache)
            scores = o.logits[:, -1].clone()
            scores[:, tok.eos_token_id] = -float("inf")  # min_new_tokens
            ids = scores.argmax(-1, keepdim=True)
            picked.append(ids)
            cache, pos = o.past_key_values, pos[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    assert torch.equal(out[:, prompt["input_ids"].shape[1] :], torch.cat(picked, 1))
    assert final.shape == s0.shape
    torch.testing.assert_close(final, h.state, **TOL)
    assert not torch.allclose(final, s0)  # the state moved during generate()


# --------------------------------------------------------------------------- sampling
def test_sampling_with_two_returned_sequences_per_prompt():
    m, tok = model("tiny-llama")
    prompt = enc(tok, PROMPTS)
    kw = dict(max_new_tokens=NEW, do_sample=True, num_return_sequences=2)
    kw |= dict(return_dict_in_generate=True, output_logits=True)
    with open_handle(m, tok) as h, torch.no_grad():
        s0 = h.state.clone()
        torch.manual_seed(0)
        out = m.generate(**prompt, **kw)
        final = h.state
        h.state = s0
        torch.manual_seed(0)
        again = m.generate(**prompt, **kw).sequences  # same seed, same state: same samples
        assert torch.equal(again, out.sequences)
        check_returned(m, h, prompt, out, 2, s0, final, beams=False)
    rows = out.sequences[:, prompt["input_ids"].shape[1] :]
    assert not torch.equal(rows[0], rows[1]) or not torch.equal(rows[2], rows[3])


# --------------------------------------------------------------------------- beam search
@pytest.mark.parametrize(
    "name,impl,n_return",
    [("tiny-llama", "sdpa", 1), ("tiny-llama", "eager", 2), ("tiny-gpt2", "sdpa", 3)],
)
def test_beam_search_each_beam_reads_its_own_history(name, impl, n_return):
    m, tok = model(name, impl)
    prompt = enc(tok, PROMPTS)
    kw = dict(max_new_tokens=NEW, num_beams=3, num_return_sequences=n_return, do_sample=False)
    kw |= dict(return_dict_in_generate=True, output_logits=True)
    with open_handle(m, tok) as h, torch.no_grad():
        s0 = h.state.clone()
        out = m.generate(**prompt, **kw)
        final = h.state
        check_returned(m, h, prompt, out, n_return, s0, final, beams=True)


def test_beam_search_keeps_the_state_of_beams_that_finish_early():
    """With an EOS that the beams produce, hypotheses finish at different steps; the
    returned best beam's state is the one from the step that finished it."""
    m, tok = model("tiny-llama")
    prompt = enc(tok, PROMPTS)
    kw = dict(max_new_tokens=NEW, num_beams=3, num_return_sequences=2)
    kw |= dict(return_dict_in_generate=True, output_logits=True)
    with open_handle(m, tok) as h, torch.no_grad():
        s0 = h.state.clone()
        free = m.generate(**prompt, **kw, min_new_tokens=NEW)
        t0 = prompt["input_ids"].shape[1]
        early = []
        for eos in dict.fromkeys(free.sequences[:, t0 + 1].tolist()):  # second tokens
            h.state = s0
            out = m.generate(**prompt, **kw, eos_token_id=eos)
            length = check_returned(m, h, prompt, out, 2, s0, h.state, beams=True)
            early.append(int(length.min()) < NEW)
    assert any(early)  # with one of them, some returned hypotheses did finish early


def test_beam_search_with_advance_generate_reads_one_state_and_steps_once():
    m, tok = model("tiny-llama")
    prompt = enc(tok, PROMPTS)
    cfg = InjectionConfig(
        reservoir=SMALL.reservoir, n_slots=4, readout_scale=3.0, advance="generate"
    )
    kw = dict(max_new_tokens=NEW, num_beams=3, num_return_sequences=2)
    kw |= dict(return_dict_in_generate=True, output_logits=True)
    with open_handle(m, tok, cfg) as h, torch.no_grad():
        s0 = h.state.clone()
        out = m.generate(**prompt, **kw)
        check_returned(m, h, prompt, out, 2, s0, h.state, beams=True, reset_each_step=True)


@pytest.mark.parametrize("mode", ["greedy", "sample", "beam"])
def test_generate_without_a_state_starts_from_zeros(mode):
    m, tok = model("tiny-llama")
    prompt = enc(tok, PROMPTS)
    kw = {
        "greedy": dict(do_sample=False, min_new_tokens=NEW),
        "sample": dict(do_sample=True, num_return_sequences=2),
        "beam": dict(num_beams=3, num_return_sequences=2),
    }[mode]
    rows = kw.get("num_return_sequences", 1)
    with open_handle(m, tok, first=False) as h, torch.no_grad():
        assert h.state is None
        torch.manual_seed(1)
        out = m.generate(
            **prompt, **kw, max_new_tokens=NEW, return_dict_in_generate=True, output_logits=True
        )
        assert h.state.shape == (2, 64)
        check_returned(m, h, prompt, out, rows, None, h.state, beams=mode == "beam")


def test_state_after_generate_has_the_prompt_batch_and_the_next_pass_runs():
    m, tok = model("tiny-qwen2")
    prompt = enc(tok, PROMPTS)
    with open_handle(m, tok) as h, torch.no_grad():
        for kw in (
            dict(num_beams=3),
            dict(num_beams=3, num_return_sequences=3, do_sample=True),
            dict(do_sample=True, num_return_sequences=2),
            dict(do_sample=False),
        ):
            m.generate(**prompt, max_new_tokens=3, **kw)
            assert h.state.shape == (2, 64) and h.last_drive.shape[0] == 2
            m(**prompt)  # the next plain pass sees the prompt batch again
        assert "_update_finished_beams" not in m.__dict__  # nothing outlives the call
        with pytest.raises(ValueError, match="batch size changed from 2 to 1"):
            m.generate(**enc(tok, PROMPTS[:1]), max_new_tokens=2, num_beams=2)
        assert h.state.shape == (2, 64)  # a failed call keeps the state it had
    assert "generate" not in m.__dict__


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("kind", ["prefix", "additive", "attractor", "recurrent", "persistent"])
def test_baselines_follow_the_beams_too(kind):
    m, tok = model("tiny-llama")
    prompt = enc(tok, PROMPTS)
    options = {"attractor": AttractorConfig(gate=0.5, burn_in=1)} if kind == "attractor" else {}
    kw = dict(max_new_tokens=4, num_beams=3, num_return_sequences=2)
    kw |= dict(return_dict_in_generate=True, output_logits=True)
    with make(kind, m, SMALL, **options) as h, torch.no_grad():
        if kind != "attractor":
            h.set_gate(1.0)
        m(**enc(tok, FIRST))
        m(**enc(tok, FIRST))  # attractor: past its burn-in
        s0 = h.state.clone()
        out = m.generate(**prompt, **kw)
        check_returned(m, h, prompt, out, 2, s0, h.state, beams=True)
    assert "generate" not in m.__dict__


# --------------------------------------------------------------------------- bf16
def test_bf16_exact_at_init_and_generates_with_a_state():
    m, tok = load_model("tiny-llama")
    m.to(torch.bfloat16)
    prompt = enc(tok, PROMPTS)
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    with torch.no_grad():
        ref_logits, ref_gen = m(**prompt).logits, m.generate(**prompt, **kw)
        with inject(m, SMALL) as h:  # gate closed: bit-identical in bf16 too
            assert h.reservoir.W.dtype == torch.bfloat16
            assert torch.equal(m(**prompt).logits, ref_logits)
            assert torch.equal(m.generate(**prompt, **kw), ref_gen)
            h.set_gate(1.0)
            m(**enc(tok, FIRST))
            for extra in (dict(), dict(num_beams=3, num_return_sequences=2)):
                out = m.generate(**prompt, **kw, **extra)
                assert out.shape[0] == 2 * extra.get("num_return_sequences", 1)
                assert h.state.dtype == torch.bfloat16 and h.state.shape == (2, 64)
                assert bool(torch.isfinite(h.state).all())
            assert m(**prompt).logits.dtype == torch.bfloat16  # the state feeds the next pass
