"""TrainConfig: the nested InjectionConfig, its round trip, the hash and the moved fields."""

import dataclasses
import json
from dataclasses import replace

import pytest

from ran.injection.config import InjectionConfig
from ran.reservoir.config import ReservoirConfig
from ran.training.config import RUN_FORMAT, TrainConfig
from ran.util.configio import ConfigError, from_dict, updated

NESTED = TrainConfig(
    injection=InjectionConfig(
        layer=1, n_slots=2, gate_init=0.5, query_gate=True,
        reservoir=ReservoirConfig(units=32, sr=0.8, seed=3),
    ),
    probe_params={"k": 4}, steps=5, seed=2,
)  # fmt: skip


def test_nested_config_round_trips_with_the_same_hash():
    d = NESTED.to_dict()
    assert d["injection"]["reservoir"]["units"] == 32 and "n_slots" not in d
    back = TrainConfig.from_dict(json.loads(json.dumps(d)))  # through JSON, as a run file
    assert back == NESTED and back.config_hash() == NESTED.config_hash()
    assert isinstance(back.injection, InjectionConfig)
    assert isinstance(back.injection.reservoir, ReservoirConfig)
    assert from_dict(TrainConfig, d).config_hash() == NESTED.config_hash()  # a config file


def test_the_hash_is_sha256_of_the_whole_config_and_the_format():
    import hashlib

    from ran.training.config import HASH_OPTIONAL

    d = NESTED.to_dict()
    assert all(d.pop(name) == default for name, default in HASH_OPTIONAL.items())
    blob = json.dumps({"format": RUN_FORMAT, "config": d}, sort_keys=True)
    assert NESTED.config_hash() == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert RUN_FORMAT == 2
    # a hash-optional field counts once it leaves its default
    gated = replace(
        NESTED, injection=replace(NESTED.injection, query_gate=True), read_gate={"tail": 2}
    )
    blob = json.dumps({"format": RUN_FORMAT, "config": gated.to_dict()}, sort_keys=True)
    assert gated.config_hash() == hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    "change",
    [
        {"injection": {"n_slots": 3}},
        {"injection": {"query_gate": False}},
        {"injection": {"readout_scale": 0.2}},
        {"injection": {"reservoir": {"seed": 4}}},
        {"injection": {"reservoir": {"lr": 0.5}}},
    ],
)
def test_configs_differing_in_one_nested_injection_field_hash_differently(change):
    other = updated(NESTED, **change)
    assert other != NESTED and other.config_hash() != NESTED.config_hash()
    assert other.to_dict() | {"injection": None} == NESTED.to_dict() | {"injection": None}


@pytest.mark.parametrize("name", ["n_slots", "reservoir", "layer", "query_gate", "gate_init"])
def test_a_flat_legacy_field_raises_naming_it_and_its_new_place(name):
    value = NESTED.to_dict()["injection"][name]
    with pytest.raises(ValueError, match=rf"no field '{name}': it now lives under 'injection'"):
        TrainConfig(**{name: value})
    flat = {k: v for k, v in NESTED.to_dict().items() if k != "injection"} | {name: value}
    with pytest.raises(ValueError, match=rf"'{name}': it now lives under 'injection'"):
        TrainConfig.from_dict(flat)
    with pytest.raises(ConfigError, match=rf"'{name}': it now lives under 'injection'"):
        from_dict(TrainConfig, flat, "run.json")
    with pytest.raises(ValueError, match=rf"'{name}': it now lives under 'injection'"):
        dataclasses.replace(NESTED, **{name: value})


def test_injection_takes_a_dict_and_training_sets_advance_and_the_readout_seed():
    cfg = TrainConfig(injection={"n_slots": 2, "reservoir": {"units": 32}}, seed=5)
    assert cfg.injection == InjectionConfig(n_slots=2, reservoir=ReservoirConfig(units=32))
    inj = cfg.injection_config()
    assert inj.seed == 5 and inj.advance == "forward"
    assert dataclasses.replace(inj, seed=0) == cfg.injection
    for bad, words in [
        ({"seed": 1}, "injection.seed is set by training"),
        ({"advance": "generate"}, "injection.advance is set by training"),
        ({"n_slotz": 1}, "unknown field 'injection.n_slotz'"),
        ({"reservoir": {"units": 0}}, "reservoir units must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=words):
            TrainConfig(injection=bad)
