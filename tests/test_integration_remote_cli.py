"""The CLI against a control plane it reaches only over the network: a stack whose API is
served over HTTPS (certificate from the stack's CA), a context added with a token file and
that CA, and a whole rollout driven through `turnout --context` commands from another
working directory (no stack.json anywhere near). Bad contexts are refused, naming why."""

from __future__ import annotations

import json
import ssl
import time

import pytest
from click.testing import CliRunner

from tests.rollout_helpers import EXAMPLES, FINISHED, policy
from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.cli import main as cli
from turnout.client import ApiClient
from turnout.contexts import Contexts
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    directory = tmp_path_factory.mktemp("remote-stack")
    info = stack.up(directory, api_tls=True, progress=print)
    load = None
    try:
        registry_for(directory).push(EXAMPLES / "v2", name="classifier", version="v2")
        load = LoadGenerator(info.ingress, model="classifier", concurrency=2, rate=60).start()
        yield info
    finally:
        if load is not None:
            assert load.stop().failed == 0
        stack.down(directory)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A user's shell in another directory with its own config home."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TURNOUT_CONTEXT", raising=False)
    monkeypatch.delenv("TURNOUT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_the_api_is_https_only_with_the_stacks_ca(remote):
    assert remote.api_url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=remote.api_ca)
    assert ApiClient(remote.api_url, remote.token, tls=trusting).status()["weights"]
    # Commands on the local directory reach it too (they ask it which slot is idle).
    code, output = _cli("deploy", "classifier:v2", "--dir", remote.directory)
    assert code == 0 and "classifier:v2 deployed to green" in output, output
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        ApiClient(remote.api_url, remote.token).status()  # the system CAs do not know it
    plain = remote.api_url.replace("https://", "http://")
    with pytest.raises(Exception, match="unreachable"):
        ApiClient(plain, remote.token, timeout=3).status()
    # Prometheus scrapes the control plane over HTTPS, trusting the stack's CA.
    import urllib.request
    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(remote.prometheus_url + "/api/v1/targets") as answer:
            targets = json.load(answer)["data"]["activeTargets"]
        health = [t["health"] for t in targets if t["labels"]["job"] == "turnout"]
        if health == ["up"]:
            break
        assert time.monotonic() < deadline, targets
        time.sleep(0.5)


def test_bad_contexts_are_refused_naming_why(remote, elsewhere):
    token = elsewhere / "token"
    token.write_text(remote.token + "\n")
    wrong = elsewhere / "wrong"
    wrong.write_text("tt_wrong\n")
    code, output = _cli("context", "add", "x", "--api", remote.api_url,
                        "--token-file", str(token))
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in output, output
    code, output = _cli("context", "add", "x", "--api", remote.api_url,
                        "--token-file", str(wrong), "--ca", remote.api_ca)
    assert code == 1 and "is a Turnout control plane but refused the token" in output, output
    code, output = _cli("context", "add", "x", "--api", remote.api_url,
                        "--token-file", str(elsewhere / "gone"), "--ca", remote.api_ca)
    assert code == 1 and "cannot read it" in output
    assert Contexts.load().contexts == {}


def test_a_rollout_driven_only_through_a_context(remote, elsewhere):
    token = elsewhere / "token"
    token.write_text(remote.token + "\n")
    code, output = _cli("context", "add", "lab", "--api", remote.api_url,
                        "--token-file", str(token), "--ca", remote.api_ca)
    assert code == 0 and "blue 100% green 0%" in output, output
    assert not (elsewhere / ".turnout").exists() and not (elsewhere / "stack.json").exists()
    # The registry, deploy and validate through the context: the control plane does them.
    code, output = _cli("models", "push", str(EXAMPLES / "v3"), "--name", "classifier",
                        "--version", "v3", "--label", "team=ml", "--context", "lab")
    assert code == 0 and output.startswith("pushed classifier:v3 digest "), output
    assert "stage candidate" in output
    code, output = _cli("models", "list")  # the current context
    assert code == 0 and "classifier:v3" in output and "classifier:v1" in output, output
    code, output = _cli("models", "show", "classifier:v3", "--json", "--context", "lab")
    shown = json.loads(output)
    assert (shown["labels"], shown["stage"], "path" in shown) == ({"team": "ml"}, "candidate",
                                                                  False), shown
    code, output = _cli("deploy", "classifier:v2", "--context", "lab")
    assert code == 0 and "classifier:v2 deployed to green on 1 server(s)" in output, output
    code, output = _cli("validate", "classifier:v2", "--context", "lab")
    assert code == 0 and "overall      PASS" in output, output
    code, output = _cli("deploy", "classifier:v3", "--slot", "blue", "--context", "lab")
    assert code == 1 and "slot blue carries 100% of traffic" in output, output
    code, output = _cli("models", "show", "classifier:v9", "--context", "lab")
    assert code == 1 and "no artifact classifier:v9" in output, output
    kinds = [(e["kind"], e["actor"]) for e in json.loads(
        _cli("history", "--json", "--context", "lab")[1])]
    assert ("deploy", "stack-admin") in kinds and ("validate", "stack-admin") in kinds, kinds
    file = elsewhere / "v2.yaml"
    file.write_text(policy("classifier:v2", name="remote", steps="""
      - {weight: 30, bake: 2s}
      - {weight: 100, bake: 1s}"""))
    code, output = _cli("apply", str(file), "--context", "lab")
    assert code == 0 and "rollout remote started: classifier:v2 -> green" in output, output
    deadline = time.monotonic() + 120
    while True:
        code, output = _cli("status", "--json")  # the current context: no --context needed
        assert code == 0, output
        rollout = json.loads(output)["rollout"]
        if rollout["phase"] in FINISHED:
            break
        assert time.monotonic() < deadline, rollout
        time.sleep(0.5)
    assert rollout["phase"] == "promoted", rollout["reason"]
    code, output = _cli("rollback", "--context", "lab")
    assert code == 0, output
    code, output = _cli("history", "--context", "lab", "--json")
    actors = {e["actor"] for e in json.loads(output)}
    assert "stack-admin" in actors
    # --rollout takes the rollout's name as well as its id.
    by_name = json.loads(_cli("history", "--rollout", "remote", "--json")[1])
    by_id = json.loads(_cli("history", "--rollout", rollout["id"], "--json")[1])
    shared = min(len(by_name), len(by_id))  # the rollback may still be writing entries
    assert shared > 3 and by_name[:shared] == by_id[:shared]
    assert {e["rollout"] for e in by_name} == {rollout["id"]}
    code, output = _cli("history", "--rollout", "nope")
    assert code == 1 and "no rollout with id or name 'nope'" in output, output
    # Synthetic traffic through the ingress, for a quiet service.
    code, output = _cli("load", "--duration", "3", "--rate", "20", "--context", "lab")
    lines = output.splitlines()
    assert code == 0, output
    assert lines[0].startswith("sending 20 req/s of classifier to 127.0.0.1:"), output
    sent = int(lines[-1].split()[0])
    assert 40 <= sent <= 70 and lines[-1].startswith(f"{sent} sent, {sent} ok, 0 failed"), \
        output
    code, output = _cli("load", "--model", "nope", "--duration", "1", "--context", "lab")
    assert code == 1 and "0 ok" in output, output
    code, output = _cli("dashboard", "--context", "lab")
    assert code == 0 and output.startswith(remote.api_url + "/#code="), output
