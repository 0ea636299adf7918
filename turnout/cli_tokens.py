"""``turnout token``: named API tokens with roles, kept as digests in the stack's
``controlplane.json`` (0600). The running control plane sees changes without a restart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from turnout.cli_common import dir_option, friendly
from turnout.config import ControlPlaneConfig
from turnout.errors import ConfigError
from turnout.tokens import ApiToken, Role, mint


def _config_path(directory: Path) -> Path:
    return directory.resolve() / "controlplane.json"


def _save(config: ControlPlaneConfig, tokens: tuple[ApiToken, ...], directory: Path) -> None:
    # replace() builds a new config, so every check of it runs again before writing.
    replace(config, tokens=tokens).write(_config_path(directory))


def register(main: click.Group) -> None:
    @main.group()
    def token() -> None:
        """Named API tokens (roles: read < operate < admin)."""

    @token.command("create")
    @dir_option
    @click.argument("name")
    @click.option("--role", type=click.Choice([r.value for r in Role]), default="read",
                  show_default=True, help="read: status and history; operate: rollouts; "
                                          "admin: traffic by hand.")
    @friendly
    def create(directory: Path, name: str, role: str) -> None:
        """Create token NAME; its secret is printed once and never stored."""
        config = ControlPlaneConfig.load(_config_path(directory))
        if any(t.name == name for t in config.tokens):
            raise ConfigError(f"a token named {name!r} exists; revoke it first")
        new, secret = mint(name, Role(role))
        _save(config, (*config.tokens, new), directory)
        click.echo(f"token {name} ({role}) created; its secret, shown only now:")
        click.echo(secret)

    @token.command("list")
    @dir_option
    @friendly
    def list_tokens(directory: Path) -> None:
        """Names and roles of the tokens (never their secrets)."""
        for t in ControlPlaneConfig.load(_config_path(directory)).tokens:
            click.echo(f"{t.name:<24} {t.role}")

    @token.command("revoke")
    @dir_option
    @click.argument("name")
    @friendly
    def revoke(directory: Path, name: str) -> None:
        """Revoke token NAME (effective at the control plane's next request)."""
        config = ControlPlaneConfig.load(_config_path(directory))
        kept = tuple(t for t in config.tokens if t.name != name)
        if len(kept) == len(config.tokens):
            raise ConfigError(f"no token named {name!r}")
        if not kept:
            raise ConfigError("refusing to revoke the last token")
        _save(config, kept, directory)
        click.echo(f"token {name} revoked")
