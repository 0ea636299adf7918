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


def test_models_show_reads_as_text_or_json_and_the_registry_version_has_its_own_name(
        tmp_path):
    import json

    stack = tmp_path / "stack"
    registry_for(stack, create=True)
    model = write_model(tmp_path / "pair", "pair")
    code, output = _run("models", "push", str(model), "--name", "pair", "--model-version",
                        "v2", "--label", "team=ml", "--dir", str(stack))
    assert code == 0, output
    code, output = _run("models", "push", str(model), "--name", "pair", "--version", "v2",
                        "--dir", str(stack))  # the old spelling still works: same content
    assert code == 0, output
    code, output = _run("models", "show", "pair:v2", "--dir", str(stack))
    lines = output.splitlines()
    assert code == 0 and lines[0] == "pair:v2  stage candidate", output
    assert "  labels   team=ml" in lines and "  validation: none yet" in lines, output
    code, output = _run("models", "show", "pair:v2", "--json", "--dir", str(stack))
    shown = json.loads(output)
    assert (shown["labels"], shown["validation"]) == ({"team": "ml"}, None)


def test_help_says_what_each_command_and_option_means():
    def helped(*args: str) -> str:
        code, output = _run(*args, "--help")
        assert code == 0, output
        return " ".join(output.split())  # as read, not as wrapped
    abort, rollback = helped("abort"), helped("rollback")
    assert "ends `aborted` (an operator's stop, not a verdict on the model)" in abort
    assert "ends `rolled_back`. Also after promotion" in rollback
    assert "Seconds to wait for every server" in helped("deploy")
    history = helped("history")
    assert "its id, or its name" in history and "Print the entries as JSON." in history
    assert "Print the records as JSON." in helped("models", "list")


def test_an_empty_history_says_so(monkeypatch, tmp_path):
    from turnout import cli_rollout
    from turnout.client import ApiClient

    monkeypatch.setattr(cli_rollout, "client_for",
                        lambda directory: ApiClient("http://127.0.0.1:1"))
    monkeypatch.setattr(ApiClient, "history", lambda self, **kw: [])
    assert _run("history")[1] == "no audit entries yet\n"
    assert _run("history", "--rollout", "bert-v7")[1] == \
        "no audit entries yet for rollout bert-v7\n"
