"""`turnout context`: contexts kept owner-only under $XDG_CONFIG_HOME, bad input named
(URL, token file, CA file, an API that is not Turnout), and which control plane a command
talks to (--context, TURNOUT_CONTEXT, the local stack, the current context)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
from click.testing import CliRunner

from tests.http_fakes import serving
from turnout.cli import main as cli
from turnout.contexts import Context, Contexts, config_path, read_token_file
from turnout.errors import ConfigError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TURNOUT_CONTEXT", raising=False)
    monkeypatch.delenv("TURNOUT_DIR", raising=False)
    return tmp_path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_contexts_live_under_xdg_config_home_owner_only(home):
    assert config_path() == home / "xdg" / "turnout" / "contexts.json"
    contexts = Contexts(current="prod", contexts={
        "prod": Context("prod", "https://cp.example:8443", "tt_secret", "/ca.pem")})
    path = contexts.save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert Contexts.load() == contexts


@pytest.mark.parametrize("fields, words", [
    ({"name": "bad name"}, "context name 'bad name'"),
    ({"api": "cp.example:8443"}, "give the control plane's URL"),
    ({"api": "ftp://cp.example"}, "give the control plane's URL"),
    ({"api": "https://"}, "give the control plane's URL"),
    ({"token": "  "}, "the token is empty"),
])
def test_bad_contexts_are_named(fields, words):
    base = {"name": "prod", "api": "https://cp.example", "token": "t"}
    with pytest.raises(ConfigError, match=words):
        Context(**{**base, **fields})


def test_token_files_are_read_or_refused_naming_the_file(tmp_path):
    good = tmp_path / "token"
    good.write_text("\n  tt_abc  \nignored\n")
    assert read_token_file(good) == "tt_abc"
    empty = tmp_path / "empty"
    empty.write_text("\n \n")
    with pytest.raises(ConfigError, match=f"--token-file {empty}: it holds no token"):
        read_token_file(empty)
    with pytest.raises(ConfigError, match=f"--token-file {tmp_path / 'none'}: cannot read"):
        read_token_file(tmp_path / "none")


def test_a_broken_contexts_file_is_named(home):
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable contexts file"):
        Contexts.load()
    path.write_text(json.dumps({"contexts": {"a": {"nope": 1}}}))
    with pytest.raises(ConfigError, match="not a contexts file"):
        Contexts.load()


class _NotTurnout(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"info": {"title": "Some other API"}}).encode() \
            if self.path == "/openapi.json" else b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stranger():
    with serving(_NotTurnout) as url:
        yield url


def test_add_refuses_what_it_cannot_use_and_saves_nothing(home, stranger, tmp_path):
    token = tmp_path / "token"
    token.write_text("tt_x\n")
    cases = [
        (["--api", stranger, "--token-file", str(token)],
         f"{stranger} is not a Turnout control plane (its /openapi.json names "
         "'Some other API')"),
        (["--api", "http://127.0.0.1:1", "--token-file", str(token)],
         "control plane at http://127.0.0.1:1 unreachable"),
        (["--api", stranger, "--token-file", str(tmp_path / "missing")],
         f"--token-file {tmp_path / 'missing'}: cannot read it"),
        (["--api", "https://127.0.0.1:1", "--token-file", str(token), "--ca",
          str(tmp_path / "missing.pem")], f"--ca {tmp_path / 'missing.pem'}: no such file"),
        (["--api", "https://127.0.0.1:1", "--token-file", str(token), "--ca", str(token)],
         "CA file"),
    ]
    for args, words in cases:
        code, output = _run("context", "add", "prod", *args)
        assert code == 1 and words in output, (args, output)
    assert not config_path().exists()


def test_use_list_remove(home, tmp_path):
    token = tmp_path / "token"
    token.write_text("tt_x\n")
    for name in ("a", "b"):
        assert _run("context", "add", name, "--api", f"http://{name}.example:1",
                    "--token-file", str(token), "--no-check")[0] == 0
    code, output = _run("context", "list")
    assert output.splitlines() == ["  a                http://a.example:1",
                                   "* b                http://b.example:1"]
    assert "tt_x" not in output
    assert _run("context", "use", "a") == (0, "current context: a\n")
    code, output = _run("context", "use", "c")
    assert code == 1 and "no context 'c' (contexts: a, b)" in output
    assert _run("context", "remove", "a") == (0, "context a removed\n")
    assert Contexts.load().current == ""
    code, output = _run("status", "--context", "a")
    assert code == 1 and "no context 'a' (contexts: b)" in output


def test_which_control_plane_a_command_talks_to(home, tmp_path, monkeypatch):
    """--context and TURNOUT_CONTEXT pick a context; without them the local stack; with
    no local stack and no --dir, the current context; an explicit --dir never falls back."""
    token = tmp_path / "token"
    token.write_text("tt_x\n")
    _run("context", "add", "away", "--api", "http://127.0.0.1:1", "--token-file", str(token),
         "--no-check")
    nowhere = tmp_path / "no-stack"
    code, output = _run("status", "--dir", str(nowhere))
    assert code == 1 and f"no stack in {nowhere}" in output
    code, output = _run("status", "--dir", str(nowhere), "--context", "away")
    assert code == 1 and "control plane at http://127.0.0.1:1 unreachable" in output
    monkeypatch.setenv("TURNOUT_CONTEXT", "away")
    code, output = _run("status", "--dir", str(nowhere))
    assert code == 1 and "http://127.0.0.1:1 unreachable" in output
    monkeypatch.delenv("TURNOUT_CONTEXT")
    monkeypatch.chdir(tmp_path)  # the default --dir (./.turnout) holds no stack here
    code, output = _run("status")
    assert code == 1 and "http://127.0.0.1:1 unreachable" in output, output
