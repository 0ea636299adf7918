"""Weights: validation and durable storage."""

from __future__ import annotations

import pytest

from turnout.errors import ConfigError
from turnout.weights import Weights, WeightsFile


@pytest.mark.parametrize("body", [{"green": 101}, {"green": -1}, {"green": "10"},
                                  {"green": True}, {"blue": 50, "green": 40}, {"purple": 5}])
def test_bad_weights_are_refused_with_reason(body):
    with pytest.raises(ConfigError):
        Weights.from_mapping(body)


def test_green_only_fills_blue():
    assert Weights.from_mapping({"green": 25}).as_dict() == {"blue": 75, "green": 25}


def test_weights_file_round_trip_and_default(tmp_path):
    store = WeightsFile(tmp_path / "w.json")
    assert store.load() == Weights(blue=100, green=0)
    store.save(Weights.with_green(40))
    assert WeightsFile(tmp_path / "w.json").load() == Weights(blue=60, green=40)
    assert not list(tmp_path.glob("*.partial"))


def test_corrupt_weights_file_names_the_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=str(path)):
        WeightsFile(path).load()
