"""A mistyped ``--dir`` is refused, saying what was looked for, and creates nothing: writes
never make a registry no stack uses, reads never make a directory."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.zoo import write_model
from turnout.cli import main as cli
from turnout.workflow import registry_for


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_mistyped_dir_is_refused_by_every_registry_command_and_nothing_is_made(tmp_path):
    model = write_model(tmp_path / "pair", "pair")
    wrong = tmp_path / "stak"  # a typo of "stack"
    for args in (("models", "push", str(model), "--name", "pair", "--version", "v2"),
                 ("models", "list"), ("models", "show", "pair:v2")):
        code, output = _run(*args, "--dir", str(wrong))
        assert code == 1, (args, output)
        assert f"no model registry in {wrong}: the directory does not exist. Check --dir (or " \
               f"TURNOUT_DIR); `turnout stack up --dir {wrong}` would start a new stack " \
               "there" in output, (args, output)
        assert not wrong.exists(), f"{args} created {wrong}"
    wrong.mkdir()  # a directory that is not a stack's
    code, output = _run("models", "push", str(model), "--name", "pair", "--version", "v2",
                        "--dir", str(wrong))
    assert code == 1 and f"no model registry in {wrong}: it has no registry/registry.db." \
        in output, output
    assert list(wrong.iterdir()) == []
    code, output = _run("status", "--dir", str(wrong))
    assert code == 1 and f"no stack in {wrong}: it has no stack.json. Check --dir" in output
    (tmp_path / "file").write_text("")
    code, output = _run("models", "list", "--dir", str(tmp_path / "file"))
    assert code == 2 and "Invalid value for '--dir'" in output and "is a file" in output


def test_the_right_dir_still_works(tmp_path):
    stack = tmp_path / "stack"
    registry_for(stack, create=True)  # what `turnout stack up` makes
    code, output = _run("models", "push", str(write_model(tmp_path / "pair", "pair")),
                        "--name", "pair", "--version", "v2", "--dir", str(stack))
    assert code == 0 and output.startswith("pushed pair:v2 digest "), output
    code, output = _run("models", "list", "--dir", str(stack))
    assert code == 0 and "pair:v2" in output, output
    assert Path(stack / "registry" / "registry.db").is_file()
