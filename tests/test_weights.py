"""Weights: validation and durable storage."""

from __future__ import annotations

import pytest

from turnout.errors import ConfigError
from turnout.weights import Weights


@pytest.mark.parametrize("body", [{"green": 101}, {"green": -1}, {"green": "10"},
                                  {"green": True}, {"blue": 50, "green": 40}, {"purple": 5}])
def test_bad_weights_are_refused_with_reason(body):
    with pytest.raises(ConfigError):
        Weights.from_mapping(body)


def test_green_only_fills_blue():
    assert Weights.from_mapping({"green": 25}).as_dict() == {"blue": 75, "green": 25}


def test_store_keeps_weights_and_audit_across_instances(tmp_path):
    from turnout.store import Store

    store = Store(tmp_path / "state.db")
    assert store.weights() == Weights(blue=100, green=0)
    store.set_weights(Weights.with_green(40), actor="tester", message="why not")
    again = Store(tmp_path / "state.db")
    assert again.weights() == Weights(blue=60, green=40)
    [entry] = again.history()
    assert (entry.actor, entry.kind, entry.weights) == ("tester", "weights",
                                                        {"blue": 60, "green": 40})
