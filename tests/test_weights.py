"""Weights: validation and durable storage."""

from __future__ import annotations

import pytest

from turnout.errors import ConfigError
from turnout.weights import Weights


@pytest.mark.parametrize("body, message", [
    ({"green": 101}, "weight of green must be an integer 0..100, got 101"),
    ({"green": -1}, "weight of green must be an integer 0..100, got -1"),
    ({"green": "10"}, "weight of green must be an integer 0..100, got '10'"),
    ({"green": True}, "weight of green must be an integer 0..100, got True"),
    ({"green": 10.5}, "weight of green must be an integer 0..100, got 10.5"),
    ({"blue": "x"}, "weight of blue must be an integer 0..100, got 'x'"),
    ({"blue": 101}, "weight of blue must be an integer 0..100, got 101"),
    ({"blue": 50, "green": 40}, "weights must sum to 100, got 50 + 40"),
    ({"blue": 50, "green": None}, "weight of green must be an integer 0..100, got None"),
    ({"purple": 5}, "unknown slot(s) in weights: ['purple']; slots are blue, green"),
    ({}, "no weights given: set green (or blue) to a percent 0..100"),
])
def test_bad_weights_are_refused_with_reason(body, message):
    with pytest.raises(ConfigError) as refused:
        Weights.from_mapping(body)
    assert str(refused.value) == message


@pytest.mark.parametrize("body, expected", [
    ({"green": 25}, {"blue": 75, "green": 25}),
    ({"green": 0}, {"blue": 100, "green": 0}),
    ({"green": 100}, {"blue": 0, "green": 100}),
    ({"blue": 30}, {"blue": 30, "green": 70}),
    ({"blue": 100}, {"blue": 100, "green": 0}),
    ({"blue": 0, "green": 100}, {"blue": 0, "green": 100}),
    ({"blue": 60, "green": 40}, {"blue": 60, "green": 40}),
])
def test_one_slot_fills_the_other(body, expected):
    assert Weights.from_mapping(body).as_dict() == expected


def test_direct_construction_is_checked_too():
    assert Weights().as_dict() == {"blue": 100, "green": 0}
    assert Weights.with_green(7) == Weights(blue=93, green=7)
    with pytest.raises(ConfigError, match=r"weight of blue must be an integer 0\.\.100, got -5"):
        Weights(blue=-5, green=105)
    with pytest.raises(ConfigError, match=r"must sum to 100, got 10 \+ 10"):
        Weights(blue=10, green=10)
    with pytest.raises(ConfigError, match=r"weight of green must be an integer 0\.\.100"):
        Weights.with_green(101)


def test_store_keeps_weights_and_audit_across_instances(tmp_path):
    from turnout.store import SqliteStore as Store

    store = Store(tmp_path / "state.db")
    assert store.weights() == Weights(blue=100, green=0)
    store.set_weights(Weights.with_green(40), actor="tester", message="why not")
    again = Store(tmp_path / "state.db")
    assert again.weights() == Weights(blue=60, green=40)
    [entry] = again.history()
    assert (entry.actor, entry.kind, entry.weights) == ("tester", "weights",
                                                        {"blue": 60, "green": 40})


def test_a_bad_weight_of_either_slot_is_named():
    with pytest.raises(ConfigError, match=r"^weight of blue must be an integer 0\.\.100, got 150$"):
        Weights.from_mapping({"blue": 150, "green": -50})
    with pytest.raises(ConfigError, match=r"^weight of green must be an integer 0\.\.100, got "
                                          r"'x'$"):
        Weights.from_mapping({"blue": 50, "green": "x"})
