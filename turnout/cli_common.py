"""What every ``turnout`` command shares: the ``--dir`` option, the API client for that
stack, and one place that turns known errors into a one-line message (exit status 1)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from triton_slots.artifact import ArtifactError
from triton_slots.deploy import DeployError
from triton_slots.procs import ProcessError
from triton_slots.registry import RegistryError
from turnout import stack as local_stack
from turnout.client import ApiClient
from turnout.contexts import ENV_CONTEXT, Context, Contexts
from turnout.errors import StackError, TurnoutError

# ProcessError: a server of the local stack could not start (missing, or exited: the
# message names its log).
KNOWN_ERRORS = (TurnoutError, RegistryError, ArtifactError, DeployError, ProcessError)

_META_CONTEXT = "turnout.context"


def _remember_context(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[_META_CONTEXT] = value


_dir = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    default=local_stack.DEFAULT_DIR, envvar="TURNOUT_DIR", show_default=True,
    help="Directory of the local stack (state, logs). Env: TURNOUT_DIR.",
)
_context = click.option(
    "--context", "context_name", envvar=ENV_CONTEXT, expose_value=False, is_eager=True,
    callback=_remember_context,
    help="A control plane added with `turnout context add` (Env: TURNOUT_CONTEXT); "
         "commands that talk to the API use it instead of the local stack.")


def dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--dir`` (the local stack) and ``--context`` (a remote control plane)."""
    return _dir(_context(func))


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn Turnout's own errors into a one-line message and exit status 1."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc
    return wrapper


def context_named() -> str | None:
    """The context this command names (``--context`` or TURNOUT_CONTEXT), if any."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_META_CONTEXT) if ctx is not None else None


def client_for(directory: Path) -> ApiClient:
    """The API client for this command: the context named by ``--context`` (or
    TURNOUT_CONTEXT); else the local stack in ``directory``; else, when ``--dir`` was not
    given and there is no local stack, the current context."""
    ctx = click.get_current_context(silent=True)
    name = ctx.meta.get(_META_CONTEXT) if ctx is not None else None
    if name:
        return context_client(Contexts.load().get(name))
    try:
        info = local_stack.StackInfo.load(directory.resolve())
    except StackError:
        explicit = ctx is not None and ctx.get_parameter_source("directory") not in (
            None, click.core.ParameterSource.DEFAULT)
        contexts = Contexts.load()
        if explicit or not contexts.current:
            raise
        return context_client(contexts.get(contexts.current))
    return info.client()


def remote_client(directory: Path) -> ApiClient | None:
    """The API client when this command acts on a control plane elsewhere (``--context``,
    TURNOUT_CONTEXT, or no local stack in ``directory``, no explicit ``--dir`` and a current
    context); None when it acts on the local stack in ``directory``."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_META_CONTEXT):
        return context_client(Contexts.load().get(ctx.meta[_META_CONTEXT]))
    directory = directory.resolve()
    if (directory / "stack.json").is_file() or (directory / "controlplane.json").is_file() \
            or (directory / "registry").is_dir():
        return None
    explicit = ctx is not None and ctx.get_parameter_source("directory") not in (
        None, click.core.ParameterSource.DEFAULT)
    contexts = Contexts.load()
    if explicit or not contexts.current:
        return None
    return context_client(contexts.get(contexts.current))


def context_client(context: Context) -> ApiClient:
    return ApiClient(context.api, context.token, tls=context.ssl_context())
