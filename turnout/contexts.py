"""Named control planes the CLI can reach (``turnout context``): an API URL, a token and,
for an API served over TLS, the CA that signed its certificate. Kept in
``$XDG_CONFIG_HOME/turnout/contexts.json`` (default ``~/.config``), readable by its owner
only: it holds tokens."""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from turnout.errors import ConfigError
from turnout.tokens import NAME
from xds_server.pki import write_private

ENV_CONTEXT = "TURNOUT_CONTEXT"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "turnout" / "contexts.json"


@dataclass(frozen=True)
class Context:
    name: str
    api: str
    token: str
    ca: str = ""  # PEM file of the CA that signed the API's certificate ("" : system CAs)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ConfigError(f"context name {self.name!r}: use letters, digits and _.@:- "
                              "(at most 64)")
        url = urllib.parse.urlsplit(self.api)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"--api {self.api!r}: give the control plane's URL, like "
                              "https://turnout.example:8443")
        if not self.token.strip():
            raise ConfigError(f"context {self.name!r}: the token is empty")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings for this context's API (None for http)."""
        if not self.api.startswith("https:"):
            return None
        try:
            return ssl.create_default_context(cafile=self.ca or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"context {self.name!r}: CA file {self.ca}: {exc}") from exc


@dataclass
class Contexts:
    current: str = ""
    contexts: dict[str, Context] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> Contexts:
        path = path or config_path()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable contexts file: {exc}") from exc
        try:
            return cls(data.get("current", ""),
                       {n: Context(**c) for n, c in data.get("contexts", {}).items()})
        except (TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a contexts file: {exc}") from exc

    def save(self, path: Path | None = None) -> Path:
        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"current": self.current,
                "contexts": {n: asdict(c) for n, c in sorted(self.contexts.items())}}
        write_private(path, json.dumps(body, indent=2).encode())
        return path

    def get(self, name: str) -> Context:
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(sorted(self.contexts)) or "none yet: `turnout context add`"
            raise ConfigError(f"no context {name!r} (contexts: {known})") from None


def read_token_file(path: Path) -> str:
    """The token in ``path`` (its first non-empty line), or a ConfigError naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot read it: {exc.strerror or exc}") from exc
    token = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not token:
        raise ConfigError(f"--token-file {path}: it holds no token")
    return token
