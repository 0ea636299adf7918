"""The API's connection limits (docs/servers.md, "Limits"): the documented defaults, the
config that changes them and its errors, and the guard's counting (the behaviour under a
real flood is in tests/test_integration_security.py)."""

from __future__ import annotations

import pytest

from turnout.config import ControlPlaneConfig
from turnout.connlimit import ConnectionGuard, ConnectionLimits
from turnout.errors import ConfigError
from turnout.tokens import Role, mint


def _config(tmp_path, **fields):
    admin, _ = mint("a", Role.ADMIN)
    return ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1, **fields)


def test_documented_defaults(tmp_path):
    assert _config(tmp_path).connection_limits == ConnectionLimits(
        total=1024, per_client=128, head_timeout_s=10.0)


def test_the_config_changes_each_limit(tmp_path):
    limits = _config(tmp_path, api_limits={"connections": 10, "per_client": 1,
                                           "head_timeout_s": 0.5 + 1}).connection_limits
    assert limits == ConnectionLimits(total=10, per_client=1, head_timeout_s=1.5)
    assert _config(tmp_path, api_limits={"per_client": 1_000_000}).connection_limits \
        .per_client == 1_000_000


@pytest.mark.parametrize("limits, message", [
    ({"connection": 5}, "api_limits.connection: unknown (known: connections, per_client, "
                        "head_timeout_s)"),
    ({"connections": 0}, "api_limits.connections must be a number in 1..1000000 (whole), "
                         "got 0"),
    ({"per_client": 2.5}, "api_limits.per_client must be a number in 1..1000000 (whole), "
                          "got 2.5"),
    ({"per_client": 1_000_001}, "api_limits.per_client must be a number in 1..1000000"),
    ({"per_client": True}, "api_limits.per_client must be a number in 1..1000000"),
    ({"head_timeout_s": 0.5}, "api_limits.head_timeout_s must be a number in 1..3600, "
                              "got 0.5"),
    ({"head_timeout_s": 3601}, "api_limits.head_timeout_s must be a number in 1..3600"),
    ({"head_timeout_s": "10"}, "api_limits.head_timeout_s must be a number in 1..3600"),
    ([1], "api_limits must be an object, got [1]"),
])
def test_bad_limits_are_refused_when_the_config_is_read(tmp_path, limits, message):
    with pytest.raises(ConfigError) as refused:
        _config(tmp_path, api_limits=limits)
    assert str(refused.value).startswith(message), refused.value


def test_the_guard_counts_per_client_and_in_all():
    refused: list[str] = []
    guard = ConnectionGuard(ConnectionLimits(total=3, per_client=2), refused.append)
    assert [guard.admit("a"), guard.admit("a"), guard.admit("a")] == \
        [None, None, "client_connections"]
    assert guard.admit("b") is None
    assert guard.admit("c") == "connections"  # 3 in all, though c has none
    guard.release("a")
    assert guard.admit("c") is None
    assert (guard.total, dict(guard.live)) == (3, {"a": 1, "b": 1, "c": 1})
    for client in ("a", "b", "c"):
        guard.release(client)
    assert (guard.total, dict(guard.live)) == (0, {})
    guard.refuse("connections", "d")
    assert refused == ["connections"]


def test_expected_proxies_are_shell_patterns_checked_when_read(tmp_path):
    config = _config(tmp_path, expected_proxies=["envoy-*", "grpc-load"])
    assert config.expected_proxies == ("envoy-*", "grpc-load")
    assert [config.expects(n) for n in ("envoy-0", "grpc-load", "grpc-load-2", "Envoy-0")] \
        == [True, True, False, False]
    assert _config(tmp_path).expects("anything") is True  # no rule: everyone
    for bad in ("envoy-*", [""], ["x" * 257], [1], ["a"] * 65, 5):
        with pytest.raises(ConfigError, match=r"^expected_proxies must be a list of at most "
                                              r"64 node ids or patterns"):
            _config(tmp_path, expected_proxies=bad)
