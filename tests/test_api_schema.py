"""The control plane's API against its own OpenAPI document, on a live topology (real
Envoy and Triton, so valid weight changes really converge): schemathesis generates valid
and invalid requests for every operation; none may get a 5xx or an answer the document
does not describe. Then every bad input found by hand, with its status and message."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.live import Live
from turnout.api import OPENAPI
from turnout.controller.state import RolloutPhase
from turnout.stack import StackInfo

pytestmark = pytest.mark.integration

# (A bearer or cookie security scheme counts as an input.)
NO_INPUTS = {"GET /healthz", "GET /metrics", "GET /openapi.json", "DELETE /dashboard/session"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    directory = tmp_path_factory.mktemp("api")
    live = Live.start(directory)
    try:
        yield live, StackInfo.load(directory)
    finally:
        live.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_answer_matches_the_document(api, mode):
    """Every operation, valid then invalid requests (schemathesis, driven from here: its
    pytest plugin does not support this pytest)."""
    _, info = api
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))
    headers = {"Authorization": f"Bearer {info.token}"}
    tried = []
    before = _call(info, "GET", "/v1/slots")[1]
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case) -> None:
            case.call_and_validate(base_url=info.api_url, headers=headers, checks=CHECKS,
                                   timeout=30)

        try:
            check()
        except Unsatisfiable:
            # No invalid request exists for an operation without inputs.
            assert mode is GenerationMode.NEGATIVE and operation.label in NO_INPUTS, \
                operation.label
            continue
        tried.append(operation.label)
    # Valid requests added servers: take every one out again (the next tests expect the
    # stack as it was), then check the slots are as before.
    for name, slot in _call(info, "GET", "/v1/slots")[1].items():
        kept = {s["endpoint"] for s in before[name]["servers"]}
        for server in slot["servers"]:
            if server["endpoint"] not in kept:
                address = urllib.parse.quote(server["endpoint"], safe="")
                assert _call(info, "DELETE", f"/v1/slots/{name}/endpoints/{address}")[0] == 200
    after = _call(info, "GET", "/v1/slots")[1]
    assert {n: [s["endpoint"] for s in slot["servers"]] for n, slot in after.items()} == \
        {n: [s["endpoint"] for s in slot["servers"]] for n, slot in before.items()}
    assert len(tried) == (21 if mode is GenerationMode.POSITIVE else 21 - len(NO_INPUTS)), tried


def test_the_document_matches_the_code():
    doc = json.loads(OPENAPI.read_text())
    phases = doc["components"]["schemas"]["Rollout"]["properties"]["phase"]["enum"]
    assert phases == [str(p) for p in RolloutPhase]
    command = doc["paths"]["/v1/rollouts/current/{command}"]["post"]["parameters"][0]
    from turnout.api import COMMANDS
    assert command["schema"]["enum"] == list(COMMANDS)


def _call(info: StackInfo, method: str, path: str, body: bytes | None = None,
          token: str | None = "admin") -> tuple[int, dict]:
    request = urllib.request.Request(info.api_url + path, data=body, method=method)
    if token == "admin":
        request.add_header("Authorization", f"Bearer {info.token}")
    elif token:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


#: Every bad input tried: (method, path, body, status, words the message must contain).
BAD = [
    ("POST", "/v1/traffic", b'{"green": 50, "timeout": "x"}', 400, "field 'timeout'"),
    ("POST", "/v1/traffic", b'{"green": 50, "timeout": -1}', 400, "field 'timeout'"),
    ("POST", "/v1/traffic", b'{"green": 50, "timeout": 1e400}', 400, "field 'timeout'"),
    ("POST", "/v1/traffic", b'{"blue": "x"}', 400, "weight of blue must be an integer"),
    ("POST", "/v1/traffic", b'{"green": true}', 400, "weight of green must be an integer"),
    ("POST", "/v1/traffic", b'{"green": 101}', 400, "0..100, got 101"),
    ("POST", "/v1/traffic", b'{"blue": 60, "green": 60}', 400, "must sum to 100"),
    ("POST", "/v1/traffic", b"", 400, "no weights given"),
    ("POST", "/v1/traffic", b"{}", 400, "no weights given"),
    ("POST", "/v1/traffic", b'{"red": 10}', 400, "unknown field(s) ['red']"),
    ("POST", "/v1/traffic", b"\xff\xfe{", 400, "not UTF-8"),
    ("POST", "/v1/traffic", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/v1/traffic", b"{" * 100_000, 400, "not JSON"),
    ("POST", "/v1/traffic", b"x" * (2 << 20), 413, "Request Entity Too Large"),
    ("POST", "/v1/rollouts", b"{}", 400, "field 'policy'"),
    ("POST", "/v1/rollouts", b'{"policy": 5}', 400, "field 'policy'"),
    ("POST", "/v1/rollouts", b'{"policy": "a: [1"}', 400, "invalid policy"),
    ("POST", "/v1/rollouts", b'{"policy": "a: 1", "source": ""}', 400, "field 'source'"),
    ("POST", "/v1/rollouts", b'{"policy": "a: &x [*x]"}', 400, "invalid policy"),
    ("POST", "/v1/rollouts", b'{"policy": "a: ' + b"[" * 20_000 + b"]" * 20_000 + b'"}', 400,
     "nested deeper than 32 levels"),
    ("POST", "/v1/rollouts", b'{"policy": "a: 1", "force": "yes"}', 400,
     "field 'force' must be true or false, got 'yes'"),
    ("POST", "/v1/rollouts", b'{"policy": "a: 1", "force": 1}', 400,
     "field 'force' must be true or false, got 1"),
    ("POST", "/v1/rollouts", b'{"policy": "a: 1", "force": null}', 400,
     "field 'force' must be true or false, got None"),
    ("POST", "/v1/rollouts", b'{"policy": "a: 1", "force": true}', 400, "invalid policy"),
    ("POST", "/v1/rollouts/current/promote", b'{"full": "false"}', 400, "field 'full'"),
    ("POST", "/v1/rollouts/current/pause", b'{"full": true}', 400, "promote only"),
    ("POST", "/v1/rollouts/current/pause", b'{"fast": 1}', 400, "unknown field(s) ['fast']"),
    ("POST", "/v1/rollouts/current/explode", b"{}", 404, "unknown command 'explode'"),
    ("POST", "/v1/rollouts/current/pause", b"{}", 409, "no rollout to act on"),
    ("GET", "/v1/history?limit=99999999999999999999", None, 400, "'limit' must be"),
    ("GET", "/v1/history?limit=-1", None, 400, "'limit' must be"),
    ("GET", "/v1/history?limit=0", None, 400, "'limit' must be"),
    ("GET", "/v1/history?limit=%D9%A3", None, 400, "'limit' must be"),  # Arabic digit 3
    ("GET", "/v1/history?limt=5", None, 400, "unknown query parameter(s) ['limt']"),
    ("GET", "/v1/history?rollout=nope", None, 404, "no rollout with id or name 'nope'"),
    ("GET", "/v1/status", None, 401, "missing or unknown bearer token"),
    ("GET", "/dashboard/state", None, 401, "no dashboard session: sign in with a token"),
    ("GET", "/dashboard/events", None, 401, "no dashboard session: sign in with a token"),
    ("POST", "/dashboard/session", b'{"code": 5}', 401, "sign in with a bearer token"),
    ("POST", "/dashboard/session", b'{"code": "x"}', 401, "code unknown, used or expired"),
    ("POST", "/dashboard/session", b"\xff", 401, "sign in with a bearer token"),
    ("POST", "/dashboard/code", b"{}", 401, "missing bearer token"),
    ("POST", "/v1/slots/blue/endpoints", b"{}", 400,
     "field 'host' must be a DNS name or an IP address"),
    ("POST", "/v1/slots/blue/endpoints", b'{"host": "a b"}', 400, "field 'host'"),
    ("POST", "/v1/slots/blue/endpoints", b'{"host": "h", "grpc_port": 0}', 400,
     "field 'grpc_port' must be a port number 1..65535, got 0"),
    ("POST", "/v1/slots/blue/endpoints", b'{"host": "h", "http_port": true}', 400,
     "field 'http_port' must be a port number"),
    ("POST", "/v1/slots/blue/endpoints", b'{"host": "h", "grpc_port": 8000}', 400,
     "the server's ports must differ"),
    ("POST", "/v1/slots/blue/endpoints", b'{"host": "h", "weight": 1}', 400,
     "unknown field(s) ['weight']"),
    ("POST", "/v1/slots/red/endpoints", b'{"host": "h"}', 404,
     "no slot 'red' here; slots: blue, green"),
    ("DELETE", "/v1/slots/blue/endpoints/nowhere:1", None, 404,
     "nowhere:1 is not a server of slot blue (its servers: 127.0.0.1:"),
    ("GET", "/v1/models/nope/v1", None, 404, "no artifact nope:v1"),
    ("PUT", "/v1/models/nope/v1", b"", 400, "the request body must be the model directory "
                                            "as a gzip'd tar"),
    ("PUT", "/v1/models/nope/v1", b"not a tar", 400, "not a gzip'd tar of a model directory"),
    ("PUT", "/v1/models/nope/v1?label=x", b"x", 400, "query parameter 'label' must be KEY=VALUE"),
    ("PUT", "/v1/models/nope/v1?owner=x", b"x", 400, "unknown field(s) ['owner']"),
    # A 20 KB request line reaches the handler (JSON, the field named), not aiohttp's 8 KB
    # text/plain refusal.
    ("PUT", "/v1/models/nope/v1?source=" + "x" * 20_000, b"x", 400,
     "query parameter 'source' must be at most 500 characters"),
    ("PUT", "/v1/models/nope/v1?" + "&".join(["label=a=b"] * 33), b"x", 400,
     "at most 32 query parameters 'label', got 33"),
    ("POST", "/v1/models/nope/v1/deploy", b'{"slot": "red"}', 400,
     "field 'slot' must be blue or green, got 'red'"),
    ("POST", "/v1/models/nope/v1/deploy", b'{"timeout": 0}', 400, "field 'timeout'"),
    ("POST", "/v1/models/nope/v1/deploy", b'{"force": "yes"}', 400,
     "field 'force' must be true or false"),
    ("POST", "/v1/models/nope/v1/deploy", b'{"at": 1}', 400, "unknown field(s) ['at']"),
    ("POST", "/v1/models/nope/v1/validate", b"{}", 404, "no artifact nope:v1"),
    ("GET", "/v1/nowhere", None, 404, "Not Found"),
    ("DELETE", "/v1/status", None, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("method, path, body, status, words", BAD,
                         ids=[f"{m} {p[:40]} {(b or b'')[:30]!r}" for m, p, b, _, _ in BAD])
def test_bad_input_gets_a_4xx_naming_the_field_and_changes_nothing(api, method, path, body,
                                                                  status, words):
    live, info = api
    before = live.plane.weights
    history = len(live.plane.store.history(limit=10_000))
    token = None if status == 401 else "admin"
    got, answer = _call(info, method, path, body, token)
    assert (got, words in answer.get("error", "") + " ".join(answer.get("problems", []))) \
        == (status, True), answer
    assert live.plane.weights == before
    assert len(live.plane.store.history(limit=10_000)) == history


def test_a_public_dashboard_serves_its_data_without_a_token(api):
    """dashboard.public (loopback only, checked in test_sessions.py): the same request that
    answers 401 above answers 200 with the data."""
    import dataclasses

    live, info = api
    private = live.plane.config
    assert _call(info, "GET", "/dashboard/state", token=None)[0] == 401
    live.plane.config = dataclasses.replace(private, dashboard={"public": True})
    try:
        status, state = _call(info, "GET", "/dashboard/state", token=None)
        assert status == 200 and state["status"]["weights"] == live.plane.weights.as_dict()
    finally:
        live.plane.config = private
    assert _call(info, "GET", "/dashboard/state", token=None)[0] == 401
