"""``turnout context``: named control planes the CLI reaches over the network, so no one
hand-writes a ``stack.json``. ``--context NAME`` (or TURNOUT_CONTEXT) on any command, or
``context use NAME``, picks one."""

from __future__ import annotations

from pathlib import Path

import click

from turnout.cli_common import context_client, friendly
from turnout.contexts import Context, Contexts, read_token_file
from turnout.errors import ApiError, ConfigError


def _check(context: Context) -> str:
    """Reach the API, make sure it is Turnout and the token is taken; what it says."""
    client = context_client(context)
    client.identify()
    try:
        status = client.status()
    except ApiError as exc:
        if exc.status == 401:
            raise ConfigError(f"{context.api} is a Turnout control plane but refused the "
                              f"token: {exc}") from exc
        raise
    weights = status["weights"]
    return f"blue {weights['blue']}% green {weights['green']}%"


def register(main: click.Group) -> None:
    @main.group()
    def context() -> None:
        """Control planes reached over the network (kept 0600 under $XDG_CONFIG_HOME)."""

    @context.command("add")
    @click.argument("name")
    @click.option("--api", required=True, help="The control plane's API URL "
                  "(http://HOST:PORT, or https:// when it is served over TLS).")
    @click.option("--token-file", required=True, type=click.Path(path_type=Path),
                  help="A file holding the API token (its first line).")
    @click.option("--ca", type=click.Path(path_type=Path), default=None,
                  help="PEM file of the CA that signed the API's certificate (https).")
    @click.option("--no-check", is_flag=True,
                  help="Save without reaching the API (it is checked by default).")
    @friendly
    def add(name: str, api: str, token_file: Path, ca: Path | None, no_check: bool) -> None:
        """Add (or replace) context NAME and make it the current one."""
        if ca is not None and not ca.is_file():
            raise ConfigError(f"--ca {ca}: no such file")
        new = Context(name, api.rstrip("/"), read_token_file(token_file),
                      str(ca.resolve()) if ca else "")
        new.ssl_context()  # a CA file that is not a CA fails here, naming it
        said = "not checked" if no_check else _check(new)
        contexts = Contexts.load()
        contexts.contexts[name] = new
        contexts.current = name
        path = contexts.save()
        click.echo(f"context {name}: {new.api} ({said}); current now; saved in {path}")

    @context.command("use")
    @click.argument("name")
    @friendly
    def use(name: str) -> None:
        """Make NAME the current context."""
        contexts = Contexts.load()
        contexts.get(name)
        contexts.current = name
        contexts.save()
        click.echo(f"current context: {name}")

    @context.command("list")
    @friendly
    def list_contexts() -> None:
        """The contexts (the current one starred); never their tokens."""
        contexts = Contexts.load()
        if not contexts.contexts:
            click.echo("no contexts: `turnout context add NAME --api URL --token-file F`")
        for name, c in sorted(contexts.contexts.items()):
            mark = "*" if name == contexts.current else " "
            click.echo(f"{mark} {name:<16} {c.api}" + (f"  (CA {c.ca})" if c.ca else ""))

    @context.command("remove")
    @click.argument("name")
    @friendly
    def remove(name: str) -> None:
        """Forget context NAME (and its token)."""
        contexts = Contexts.load()
        contexts.get(name)
        del contexts.contexts[name]
        if contexts.current == name:
            contexts.current = ""
        contexts.save()
        click.echo(f"context {name} removed")
