"""Cross-pass probes: disjoint splits, determinism, forced-choice scoring."""

import pytest
import torch

from ran.injection.models import byte_tokenizer
from ran.tasks import probes, scoring

SMALL = dict(n_train=200, n_val=40, n_test=40)


@pytest.mark.parametrize("name", sorted(probes.PROBES))
def test_splits_share_no_episode_and_no_pass_text(name):
    p = probes.make_probe(name, **SMALL)
    s = p.splits()
    assert [len(s[k]) for k in ("train", "val", "test")] == [200, 40, 40]
    sets = {k: set(v) for k, v in s.items()}
    assert all(len(sets[k]) == len(s[k]) for k in s)  # no duplicates within a split
    assert not sets["train"] & sets["test"] and not sets["train"] & sets["val"]
    assert not sets["val"] & sets["test"]
    # Context text (the non-template part) never crosses splits.
    first = {k: {e.passes[0] for e in v} for k, v in s.items()}
    assert not first["train"] & first["test"]


@pytest.mark.parametrize("name", sorted(probes.PROBES))
def test_same_seed_same_episodes_other_seed_different(name):
    a = probes.make_probe(name, seed=3, **SMALL).episodes("val")
    b = probes.make_probe(name, seed=3, **SMALL).episodes("val")
    c = probes.make_probe(name, seed=4, **SMALL).episodes("val")
    assert a == b and a != c


def test_passes_are_fresh_contexts():
    for ep in probes.make_probe("secret_word", k=8, **SMALL).episodes("test"):
        key = ep.candidates[ep.answer].strip()
        assert key in ep.passes[0] and key not in ep.question
        assert ep.passes[0] not in ep.question and len(ep.candidates) == 8
        assert ep.oracle_prompt.startswith(ep.passes[0])


def test_elapsed_and_idle_structure():
    for ep in probes.make_probe("elapsed", k_max=3, **SMALL).episodes("test"):
        assert len(ep.passes) == ep.answer + 2 and ep.candidates == (" 0", " 1", " 2", " 3")
    pre = probes.make_probe("elapsed", k_max=3, pre_max=2, **SMALL).episodes("test")
    for ep in pre:
        n_pre = dict(ep.info)["pre"]
        assert len(ep.passes) == n_pre + ep.answer + 2 and 0 <= n_pre <= 2
    assert len({dict(ep.info)["pre"] for ep in pre}) == 3  # every pre-event count occurs
    # passes since the reset no longer determine the answer
    assert len({(len(ep.passes), ep.answer) for ep in pre}) > len({len(ep.passes) for ep in pre})
    idle = probes.make_probe("idle_retention", idle_steps=(0, 5), **SMALL).episodes("test")
    assert {ep.idle for ep in idle} == {(0, 0), (0, 5)}


def test_answers_cover_candidates():
    eps = probes.make_probe("secret_word", k=4, **SMALL).episodes("train")
    assert {e.answer for e in eps} == {0, 1, 2, 3}


def test_user_keys_and_templates():
    p = probes.make_probe(
        "secret_word",
        k=3,
        keys=("red", "green", "blue"),
        write_templates=("Colour: {key}. {context}",),
        question_templates=("Colour was",),
        **SMALL,
    )
    ep = p.episodes("test")[0]
    assert ep.question == "Colour was" and ep.passes[0].startswith("Colour: ")


def test_bad_parameters_raise_one_clear_error():
    with pytest.raises(ValueError, match="k must be"):
        probes.make_probe("secret_word", k=1000)
    with pytest.raises(ValueError, match="unknown probe"):
        probes.make_probe("nope")
    with pytest.raises(ValueError, match="bad parameters"):
        probes.make_probe("elapsed", k=3)
    with pytest.raises(ValueError, match="distinct"):  # 2 keys x 1 template cannot fill 40
        probes.make_probe(
            "secret_word", k=2, write_templates=("{key}",), question_templates=("Q",), **SMALL
        ).episodes("test")


def test_first_token_scorer_picks_the_constructed_answer():
    logits = torch.randn(3, 50)
    cand = torch.tensor([[5, 7, 9, 11]] * 3)
    answers = torch.tensor([2, 0, 3])
    logits[torch.arange(3), cand[torch.arange(3), answers]] += 100.0
    scores = scoring.first_token_scores(logits, cand)
    assert scores.shape == (3, 4)
    assert torch.equal(scores.argmax(1), answers)
    assert torch.allclose(scores, torch.log_softmax(logits, -1)[:, [5, 7, 9, 11]])


def test_sequence_scorer_reads_only_the_continuation():
    ep = probes.Episode(("x", "Q:"), (0, 0), (" ab", " ac", " b"), answer=1)
    qb = scoring.QuestionBatch(prompts=[[1, 2]], rest=[[[3, 4], [3, 5], [6]]], first_token=False)
    ids, mask, cont = scoring.sequence_batch(qb, pad=0)
    assert ids.tolist() == [[1, 2, 3, 4], [1, 2, 3, 5], [0, 1, 2, 6]]
    assert cont.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    logits = torch.zeros(3, 4, 10)
    logits[1, 2, 5] = 50.0  # "ac": token 5 after prefix 3
    logits[:, 0, 9] = 80.0  # a strong logit on a prompt position must not count
    s = scoring.sequence_scores(logits, ids, cont, k=3)
    assert s.shape == (1, 3) and s.argmax(1).item() == ep.answer


def test_encode_question_moves_shared_prefix_into_the_prompt():
    tok = byte_tokenizer()
    eps = probes.make_probe("elapsed", k_max=3, **SMALL).episodes("test")[:4]
    qb = scoring.encode_question(tok, eps)
    assert qb.first_token and qb.first_ids.shape == (4, 4)
    assert tok.decode(qb.prompts[0]).endswith("rang is ")  # the shared space moved in
    assert tok.convert_ids_to_tokens(qb.first_ids[0].tolist()) == ["0", "1", "2", "3"]
    # Byte-level keys sharing their first letter force sequence scoring.
    p = probes.make_probe("secret_word", k=3, keys=("cat", "car", "dog"), **SMALL)
    qb = scoring.encode_question(tok, p.episodes("test")[:2])
    assert not qb.first_token and qb.first_ids is None
    with pytest.raises(ValueError, match="first token"):
        scoring.encode_question(tok, p.episodes("test")[:2], mode="first_token")


def test_pad_left_and_batch_encode():
    ids, mask = scoring.pad_left([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = scoring.batch_encode(byte_tokenizer(), ["ab", "abcd"])
    assert ids.shape == (2, 4) and mask[0].tolist() == [0, 0, 1, 1]


def test_elapsed_is_scored_on_the_answer_step_only():
    tok = byte_tokenizer()
    eps = probes.make_probe("elapsed", k_max=4, **SMALL).episodes("val")[:8]
    qb = scoring.encode_question(tok, eps)
    for ep, prompt in zip(eps, qb.prompts, strict=True):
        text = tok.decode(prompt)
        assert text == ep.question + " "  # the question pass alone: no event or filler text
        assert all(p not in text for p in ep.passes[:-1])
    answers = torch.tensor([e.answer for e in eps])
    rows = torch.arange(len(eps))
    logits = torch.zeros(len(eps), max(map(len, qb.prompts)), len(tok))
    wrong = qb.first_ids[rows, (answers + 1) % 5]
    logits[rows, :-1, wrong] = 100.0  # earlier steps favour a wrong answer: must be ignored
    logits[rows, -1, qb.first_ids[rows, answers]] = 5.0
    pred = scoring.first_token_scores(logits[:, -1], qb.first_ids).argmax(1)
    assert torch.equal(pred, answers)
