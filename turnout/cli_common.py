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
from triton_slots.registry import RegistryError
from turnout import stack as local_stack
from turnout.client import ApiClient
from turnout.errors import TurnoutError

KNOWN_ERRORS = (TurnoutError, RegistryError, ArtifactError, DeployError)

dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    default=local_stack.DEFAULT_DIR, envvar="TURNOUT_DIR", show_default=True,
    help="Directory of the local stack (state, logs). Env: TURNOUT_DIR.",
)


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn Turnout's own errors into a one-line message and exit status 1."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc
    return wrapper


def client_for(directory: Path) -> ApiClient:
    info = local_stack.StackInfo.load(directory.resolve())
    return ApiClient(info.api_url, info.token)
