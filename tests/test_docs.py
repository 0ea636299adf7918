"""The documentation says what the code does: generated references are current, every
`turnout` command shown parses against the real CLI, every policy shown loads, every link
resolves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from turnout.cli import main
from turnout.policy import load_text
from turnout.reference import DOCS, GENERATED

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md", ROOT / "examples/compose/README.md"]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang == kind:
                found.append((page.name, body))
    return found


def commands() -> list[tuple[str, list[str]]]:
    found = []
    for page, body in blocks("sh"):
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in ("turnout", "$T"):
                found.append((page, words[1:]))
    return found


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_references_are_current(name):
    assert (DOCS / name).read_text() == GENERATED[name](), \
        f"docs/{name} is stale: run `python -m turnout.reference`"


def _rest(ctx: click.Context) -> list[str]:
    return [*getattr(ctx, "_protected_args", []), *ctx.args]


def _parse(args: list[str]) -> None:
    """Resolve the command path and parse its options and arguments, invoking nothing.
    Paths in the docs are examples: a missing one is not a wrong command."""
    try:
        ctx = main.make_context("turnout", list(args), resilient_parsing=False)
        command: click.Command = main
        rest = _rest(ctx)
        while isinstance(command, click.Group) and rest:
            name, command, rest = command.resolve_command(ctx, rest)
            ctx = command.make_context(name, list(rest), parent=ctx)
            rest = _rest(ctx) if isinstance(command, click.Group) else []
    except click.BadParameter as exc:
        if "does not exist" not in exc.format_message():
            raise


def test_every_command_in_the_docs_is_a_real_command():
    found = commands()
    assert len(found) >= 30, found
    problems = []
    for page, args in found:
        if "--help" in args or "--version" in args:
            continue
        try:
            _parse(args)
        except click.ClickException as exc:
            problems.append(f"{page}: turnout {' '.join(args)}: {exc.format_message()}")
    assert not problems, "\n".join(problems)


def test_a_wrong_command_would_be_caught():
    with pytest.raises(click.ClickException):
        _parse(["traffic", "set", "--grean", "10"])
    with pytest.raises(click.ClickException):
        _parse(["rollbak"])


def test_every_policy_in_the_docs_loads():
    policies = [(page, body) for page, body in blocks("yaml") if "apiVersion:" in body]
    assert len(policies) >= 4
    for page, body in policies:
        load_text(body, page)  # raises PolicyError naming file, line and field


def test_every_relative_link_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"
