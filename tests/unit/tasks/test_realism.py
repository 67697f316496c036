"""The realistic probes: held-out pools disjoint from training, distractors, idle, two facts."""

from __future__ import annotations

import pytest

from ran.tasks import wordlists as WL
from ran.tasks.probes import make_probe
from ran.tasks.realism import FactInText

SMALL = dict(n_train=200, n_val=40, n_test=60)


def _used(episodes, field):
    return {dict(e.info)[field] for e in episodes}


def test_heldout_splits_share_no_key_or_template_with_training():
    p = make_probe("fact_in_text", distractors=(0, 2), **SMALL)
    sp = p.splits()
    train_keys, test_keys = _used(sp["train"], "key"), _used(sp["test"], "key")
    assert train_keys and test_keys and not train_keys & test_keys
    assert not _used(sp["val"], "key") & (train_keys | test_keys)
    # every candidate of a test episode is a held-out key, and no training text appears
    train_writes = [t.split("{key}")[0] for t in WL.WRITE["train"]]
    for e in sp["test"]:
        assert all(c.strip() in WL.KEYS["test"] for c in e.candidates)
        assert not any(w and w in e.passes[0] for w in train_writes if len(w) > 8)
        question = e.passes[-1].split("\n")[-1]
        assert question in WL.QUESTION["test"]
    for e in sp["train"]:
        assert all(c.strip() in WL.KEYS["train"] for c in e.candidates)
        assert e.passes[-1].split("\n")[-1] in WL.QUESTION["train"]
    # the pools themselves are disjoint
    for pool in WL.POOLS.values():
        assert not set(pool["train"]) & set(pool["test"])
        assert not set(pool["train"]) & set(pool["val"])
        assert not set(pool["val"]) & set(pool["test"])


def test_in_distribution_variant_uses_training_pools_on_test_text():
    p = make_probe("fact_in_text", heldout=False, **SMALL)
    test = p.splits()["test"]
    assert _used(test, "key") <= set(WL.KEYS["train"])


def test_key_sits_inside_running_text_and_distractors_and_idle_are_placed():
    p = make_probe(
        "fact_in_text",
        lines_before=(1,),
        lines_after=(2,),
        distractors=(3,),
        idle_steps=(5,),
        **SMALL,
    )
    for e in p.splits()["test"][:20]:
        key = dict(e.info)["key"]
        fact = e.passes[0]
        i = fact.index(" " + key)
        assert i > 20 and len(fact) - i > 20  # text before and after the key
        assert len(e.passes) == 5 and e.idle == (0, 0, 0, 0, 5)
        assert all(key not in d for d in e.passes[1:-1])
        assert key not in e.passes[-1]


def test_own_test_pools_replace_the_defaults():
    p = make_probe(
        "fact_in_text",
        k=2,
        test_keys=("quasar", "nebula"),
        test_write=("They said {key} twice.",),
        test_questions=("What did they say?",),
        **SMALL,
    )
    test = p.splits()["test"]
    assert {c.strip() for e in test for c in e.candidates} == {"quasar", "nebula"}
    assert all("twice." in e.passes[0] for e in test)


def test_two_facts_bind_keys_to_two_names():
    p = make_probe("two_facts", **SMALL)
    for e in p.splits()["test"][:30]:
        info = dict(e.info)
        key, other = info["key"], info["other"]
        assert key != other and len(e.passes) == 3
        asked_pass = e.passes[0] if info["asked"] == "first" else e.passes[1]
        assert key in asked_pass and other in (
            e.passes[1] if info["asked"] == "first" else e.passes[0]
        )
        names = [n for n in WL.NAMES["test"] if n in e.passes[-1]]
        assert len(names) == 1 and names[0] in asked_pass


@pytest.mark.parametrize(
    "bad",
    [
        dict(k=1),
        dict(k=100),
        dict(distractors=()),
        dict(idle_steps=(-1,)),
        dict(text_distractor=2.0),
    ],
)
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        FactInText(**bad)


@pytest.mark.slow
def test_every_key_is_one_smollm2_token():
    from ran.injection.models import load_model

    _, tok = load_model("smollm2-135m")
    for keys in WL.KEYS.values():
        for key in keys:
            assert len(tok(" " + key, add_special_tokens=False)["input_ids"]) == 1, key


def test_many_training_keys_stay_disjoint_from_the_heldout_keys():
    class OneTokenPerWord:  # a stand-in tokenizer: every word is one token
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [hash(text)]}

    keys = WL.corpus_keys(OneTokenPerWord(), n=500)
    assert len(keys) == 500 and len(set(keys)) == 500
    assert not set(keys) & (set(WL.KEYS["val"]) | set(WL.KEYS["test"]))
    p = make_probe("fact_in_text", train_keys=keys, **SMALL)
    sp = p.splits()
    assert _used(sp["train"], "key") <= set(keys)
    assert _used(sp["test"], "key") <= set(WL.KEYS["test"])
