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


def test_failed_accepts_are_logged_once_per_interval_with_a_count(caplog):
    """Out of file descriptors, asyncio reports every failed accept(): one line per 10 s
    stays, saying how many it stands for; any other loop error still reaches the loop's
    own handler."""
    import asyncio
    import logging

    from turnout.connlimit import quiet_accept_errors

    loop = asyncio.new_event_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
    try:
        quiet_accept_errors(loop)
        with caplog.at_level(logging.WARNING, logger="turnout.api"):
            for _ in range(500):
                loop.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files")})
            loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "turnout.api"]
    assert lines == ["accepting connections failed: [Errno 24] Too many open files"]
    assert seen == ["something else"]


def test_a_quiet_reason_says_how_many_lines_it_stood_for(caplog, monkeypatch):
    import logging

    from turnout import connlimit

    clock = iter([0.0, 1.0, 2.0, 10.5, 11.0])
    monkeypatch.setattr(connlimit.time, "monotonic", lambda: next(clock))
    say = connlimit._Quiet()
    with caplog.at_level(logging.WARNING, logger="turnout.api"):
        for _ in range(5):
            say("client_connections", "refused one")
    assert [r.getMessage() for r in caplog.records] == [
        "refused one", "refused one (2 more since the last such line)"]


async def test_a_dashboard_stream_that_does_not_read_is_given_up(monkeypatch):
    import asyncio

    from turnout import dashboard

    class Stuck:
        async def write(self, data: bytes) -> None:
            await asyncio.sleep(3600)  # the reader never takes anything

    monkeypatch.setattr(dashboard, "WRITE_TIMEOUT_S", 0.05)
    with pytest.raises(TimeoutError):
        await dashboard._write(Stuck(), "event: state\n\n")  # type: ignore[arg-type]
