"""Dashboard sessions: made from a token or a one-time code, they stand on that token:
revoked with it, narrowed with it, expired at their edge, codes used once."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from turnout.sessions import CODE_TTL_S, MAX_CODES, MAX_SESSIONS, SESSION_TTL_S, Sessions
from turnout.sessions import SessionError as Refused
from turnout.tokens import ApiToken, Role


def _token(name: str, role: Role) -> ApiToken:
    return ApiToken(name, role, hashlib.sha256(name.encode()).hexdigest())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    tokens = [_token("alice", Role.OPERATE), _token("viewer", Role.READ)]
    clock = Clock()
    return tokens, clock, Sessions(lambda: tokens, clock=clock)


def test_documented_lifetimes():
    # docs/observability.md: sessions last 8 hours, sign-in codes 60 seconds.
    assert (SESSION_TTL_S, CODE_TTL_S) == (8 * 3600, 60)


def test_a_session_carries_its_tokens_name_and_role(world):
    tokens, _clock, sessions = world
    session_id, session = sessions.open(tokens[0])
    assert (session.token_name, session.role) == ("alice", Role.OPERATE)
    assert sessions.check(session_id) == session
    assert session_id not in repr(sessions.__dict__), "only the id's digest is kept"


def test_unknown_empty_and_near_miss_ids_are_refused(world):
    tokens, _clock, sessions = world
    session_id, _ = sessions.open(tokens[0])
    for wrong, words in (("", "no dashboard session"), ("x" * 43, "unknown or ended"),
                         (session_id[:-1], "unknown or ended"),
                         (session_id + "A", "unknown or ended")):
        with pytest.raises(Refused, match=words):
            sessions.check(wrong)
    assert sessions.check(session_id).token_name == "alice"


def test_revoking_the_token_ends_its_sessions_and_codes(world):
    tokens, _clock, sessions = world
    session_id, _ = sessions.open(tokens[0])
    other_id, _ = sessions.open(tokens[1])
    code = sessions.code(tokens[0])
    del tokens[0]
    with pytest.raises(Refused, match="'alice' behind this session was revoked"):
        sessions.check(session_id)
    with pytest.raises(Refused, match="unknown or ended"):  # and it is gone for good
        sessions.check(session_id)
    with pytest.raises(Refused, match="revoked"):
        sessions.redeem(code)
    assert sessions.check(other_id).token_name == "viewer"


def test_a_token_reissued_under_the_same_name_does_not_revive_old_sessions(world):
    tokens, _clock, sessions = world
    session_id, _ = sessions.open(tokens[0])
    tokens[0] = replace(tokens[0], sha256="f" * 64)
    with pytest.raises(Refused, match="revoked"):
        sessions.check(session_id)


def test_a_lowered_role_narrows_the_session(world):
    tokens, _clock, sessions = world
    session_id, _ = sessions.open(tokens[0])
    tokens[0] = replace(tokens[0], role=Role.READ)
    assert sessions.check(session_id).role is Role.READ
    tokens[0] = replace(tokens[0], role=Role.ADMIN)  # raised: never above what it was made
    assert sessions.check(session_id).role is Role.OPERATE


def test_sessions_expire_at_their_edge(world):
    tokens, clock, sessions = world
    session_id, session = sessions.open(tokens[0])
    assert session.expires_at == 1000 + SESSION_TTL_S
    clock.now = 1000 + SESSION_TTL_S - 0.001
    sessions.check(session_id)
    clock.now = 1000 + SESSION_TTL_S
    with pytest.raises(Refused, match="expired"):
        sessions.check(session_id)


def test_a_code_is_a_read_session_once_before_it_expires(world):
    tokens, clock, sessions = world
    code = sessions.code(tokens[0])  # an operate token asks; the session only reads
    clock.now += CODE_TTL_S - 0.001
    session_id, session = sessions.redeem(code)
    assert (session.token_name, session.role) == ("alice", Role.READ)
    assert session.expires_at == clock.now + SESSION_TTL_S
    assert sessions.check(session_id).role is Role.READ
    with pytest.raises(Refused, match="unknown, used or expired"):
        sessions.redeem(code)
    late = sessions.code(tokens[0])
    clock.now += CODE_TTL_S
    with pytest.raises(Refused, match="unknown, used or expired"):
        sessions.redeem(late)
    with pytest.raises(Refused, match="unknown, used or expired"):
        sessions.redeem(session_id)  # a session id is not a code


def test_sign_out_ends_only_that_session(world):
    tokens, _clock, sessions = world
    first, _ = sessions.open(tokens[0])
    second, _ = sessions.open(tokens[0])
    assert sessions.close(first) is True
    assert sessions.close(first) is False
    with pytest.raises(Refused):
        sessions.check(first)
    sessions.check(second)


def test_tables_are_bounded_and_drop_the_oldest(world):
    tokens, _clock, sessions = world
    oldest, _ = sessions.open(tokens[1])
    for _ in range(MAX_SESSIONS):
        newest, _ = sessions.open(tokens[1])
    assert len(sessions) == MAX_SESSIONS
    with pytest.raises(Refused):
        sessions.check(oldest)
    sessions.check(newest)
    first_code = sessions.code(tokens[1])
    for _ in range(MAX_CODES):
        sessions.code(tokens[1])
    with pytest.raises(Refused):
        sessions.redeem(first_code)


def test_expired_entries_are_pruned_when_new_ones_are_made(world):
    tokens, clock, sessions = world
    sessions.open(tokens[0])
    clock.now += SESSION_TTL_S
    sessions.open(tokens[0])
    assert len(sessions) == 1


# ---- dashboard.public in the control plane's config ------------------------------------
def _config(tmp_path, **fields):
    from turnout.config import ControlPlaneConfig
    return ControlPlaneConfig(state_dir=tmp_path, tokens=(_token("a", Role.ADMIN),),
                              ingress_port=1, **fields)


def test_the_dashboard_is_private_by_default(tmp_path):
    assert _config(tmp_path).dashboard_public is False


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "localhost"])
def test_public_is_allowed_on_loopback(tmp_path, host):
    assert _config(tmp_path, bind_host=host, dashboard={"public": True}).dashboard_public


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "control", "128.0.0.1"])
def test_public_is_refused_beyond_loopback(tmp_path, host):
    from turnout.errors import ConfigError
    with pytest.raises(ConfigError, match=f"only with the API on a loopback address, but "
                                          f"bind_host is '{host}'"):
        _config(tmp_path, bind_host=host, dashboard={"public": True})
    assert not _config(tmp_path, bind_host=host, dashboard={"public": False}).dashboard_public


@pytest.mark.parametrize("dashboard, words", [
    ({"public": "yes"}, "dashboard.public must be true or false, got 'yes'"),
    ({"public": 1}, "dashboard.public must be true or false, got 1"),
    ({"publik": True}, r"unknown field\(s\) \['publik'\]; allowed: public"),
    ([True], "dashboard must be an object"),
])
def test_bad_dashboard_settings_are_named(tmp_path, dashboard, words):
    from turnout.errors import ConfigError
    with pytest.raises(ConfigError, match=words):
        _config(tmp_path, dashboard=dashboard)


def test_the_setting_survives_the_file(tmp_path):
    from turnout.config import ControlPlaneConfig
    config = _config(tmp_path, dashboard={"public": True})
    config.write(tmp_path / "c.json")
    assert ControlPlaneConfig.load(tmp_path / "c.json").dashboard_public is True


@pytest.mark.parametrize("header, secret", [
    ("Bearer tt_abc", "tt_abc"),   # RFC 6750: "Bearer" SP token
    ("Bearer ", None), ("Bearer", None), ("", None),
    ("bearer tt_abc", None), ("Basic tt_abc", None), ("Token tt_abc", None),
])
def test_only_a_bearer_header_carries_a_secret(header, secret):
    from turnout.tokens import bearer_secret

    assert bearer_secret(header) == secret
