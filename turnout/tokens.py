"""Named API tokens with roles. Only a token's SHA-256 is stored in the control plane's
config; the secret is shown once, to whoever minted it. The audit log's actor is the
token's name."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from turnout.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    READ = "read"          # status, rollout, history
    OPERATE = "operate"    # apply policies, pause/resume/promote/abort/rollback
    ADMIN = "admin"        # set traffic by hand

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    name: str
    role: Role
    sha256: str

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ConfigError(f"token name {self.name!r}: use letters, digits and _.@:- "
                              "(at most 64)")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ConfigError(f"token {self.name!r}: sha256 must be 64 lowercase hex digits")

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "role": str(self.role), "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ApiToken:
        try:
            role = Role(str(data.get("role", "admin")))
        except ValueError:
            raise ConfigError(f"token {data.get('name')!r}: role must be one of "
                              f"{', '.join(Role)}, got {data.get('role')!r}") from None
        return cls(str(data.get("name", "")), role, str(data.get("sha256", "")))


def mint(name: str, role: Role = Role.ADMIN) -> tuple[ApiToken, str]:
    """A new token and its secret (shown once; only the digest is kept)."""
    secret = "tt_" + secrets.token_urlsafe(24)
    return ApiToken(name, Role(role), digest(secret)), secret


def bearer_secret(authorization: str) -> str | None:
    """The secret of an ``Authorization: Bearer SECRET`` header value; None otherwise."""
    scheme, _, secret = authorization.partition(" ")
    return secret if scheme == "Bearer" and secret else None


def identify(tokens: Iterable[ApiToken], secret: str) -> ApiToken | None:
    """The token whose secret this is, comparing every digest in constant time."""
    given = digest(secret)
    found = None
    for token in tokens:
        if hmac.compare_digest(token.sha256, given):
            found = token
    return found
