"""Short-lived dashboard sessions, so a browser can read the dashboard's data without a
token in a URL or in a log.

A session is made from a token (``POST /dashboard/session`` with ``Authorization: Bearer``)
or from a one-time sign-in code that a token holder asked for (``turnout dashboard``). The
browser gets only the session's id, as an HttpOnly cookie; the control plane keeps the id's
SHA-256, the token it came from and its role. Every use checks the token again: revoking it
(or lowering its role) ends or narrows its sessions at their next use. Sessions read; the
dashboard's actions still send an ``operate`` token as a header (no cookie-authorised writes,
so no cross-site request forgery).

Not thread-safe: used on the control plane's event loop only.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from turnout.tokens import ApiToken, Role, digest

SESSION_TTL_S = 8 * 3600.0
CODE_TTL_S = 60.0
MAX_SESSIONS = 1024
MAX_CODES = 64
COOKIE = "turnout_dashboard"


def _lesser(a: Role, b: Role) -> Role:
    return a if b.allows(a) else b


@dataclass(frozen=True)
class Session:
    """What a session may do and whose token it stands on."""

    token_name: str
    token_sha256: str
    role: Role
    expires_at: float


class SessionError(Exception):
    """A session or code the control plane does not accept; the message says why (401)."""


class Sessions:
    """Sessions and one-time codes, held in memory (a restart signs browsers out)."""

    def __init__(self, tokens: Callable[[], Iterable[ApiToken]], *,
                 clock: Callable[[], float] = time.time, ttl_s: float = SESSION_TTL_S,
                 code_ttl_s: float = CODE_TTL_S) -> None:
        self._tokens = tokens
        self._clock = clock
        self.ttl_s = ttl_s
        self.code_ttl_s = code_ttl_s
        self._sessions: dict[str, Session] = {}
        self._codes: dict[str, Session] = {}

    def _prune(self, table: dict[str, Session]) -> None:
        now = self._clock()
        for key in [k for k, s in table.items() if s.expires_at <= now]:
            del table[key]

    @staticmethod
    def _new(table: dict[str, Session], limit: int, session: Session) -> str:
        if len(table) >= limit:  # the oldest goes first (dicts keep insertion order)
            del table[next(iter(table))]
        secret = secrets.token_urlsafe(32)
        table[digest(secret)] = session
        return secret

    def open(self, token: ApiToken) -> tuple[str, Session]:
        """A new session for ``token`` (its role); returns the id for the cookie."""
        self._prune(self._sessions)
        session = Session(token.name, token.sha256, token.role, self._clock() + self.ttl_s)
        return self._new(self._sessions, MAX_SESSIONS, session), session

    def code(self, token: ApiToken) -> str:
        """A one-time sign-in code for a ``read`` session standing on ``token``."""
        self._prune(self._codes)
        session = Session(token.name, token.sha256, Role.READ,
                          self._clock() + self.code_ttl_s)
        return self._new(self._codes, MAX_CODES, session)

    def redeem(self, code: str) -> tuple[str, Session]:
        """Trade a code (once, before it expires) for a session."""
        self._prune(self._codes)
        found = self._codes.pop(digest(code), None)
        if found is None:
            raise SessionError("sign-in code unknown, used or expired: ask for a new one "
                               "(`turnout dashboard`)")
        current = self.current(found)
        session = Session(current.token_name, current.token_sha256, current.role,
                          self._clock() + self.ttl_s)
        return self._new(self._sessions, MAX_SESSIONS, session), session

    def current(self, session: Session) -> Session:
        """The session as its token stands now: gone with the token (SessionError), narrowed
        with it."""
        token = next((t for t in self._tokens() if t.sha256 == session.token_sha256), None)
        if token is None:
            raise SessionError(f"the token {session.token_name!r} behind this session was "
                               "revoked: sign in again")
        return Session(token.name, token.sha256, _lesser(session.role, token.role),
                       session.expires_at)

    def check(self, session_id: str) -> Session:
        """The live session with this id; :class:`SessionError` saying why not."""
        if not session_id:
            raise SessionError("no dashboard session: sign in with a token")
        key = digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            raise SessionError("dashboard session unknown or ended: sign in again")
        if session.expires_at <= self._clock():
            del self._sessions[key]
            raise SessionError("dashboard session expired: sign in again")
        try:
            return self.current(session)
        except SessionError:
            del self._sessions[key]
            raise

    def close(self, session_id: str) -> bool:
        """End a session (sign out); whether there was one."""
        return self._sessions.pop(digest(session_id), None) is not None

    def __len__(self) -> int:
        return len(self._sessions)
