"""The Prometheus provider against a real HTTP server speaking Prometheus' query API (the
answers are canned: what is tested is how each kind of answer becomes a value, NoData or
MetricsError)."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import pytest

from gates.metrics.prometheus import PrometheusProvider
from gates.metrics.provider import MetricsError, NoData
from tests.http_fakes import serving
from triton_slots.procs import free_port

ANSWERS: dict[str, tuple[int, object]] = {
    "one": (200, [{"metric": {}, "value": [0, "0.25"]}]),
    "none": (200, []),
    "two": (200, [{"metric": {"a": "1"}, "value": [0, "1"]},
                  {"metric": {"a": "2"}, "value": [0, "2"]}]),
    "nan": (200, [{"metric": {}, "value": [0, "NaN"]}]),
    "inf": (200, [{"metric": {}, "value": [0, "+Inf"]}]),
    "garbled": (200, [{"metric": {}}]),
    "bad": (400, None),
    "broken": (500, None),
}


HITS: dict[str, int] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        HITS[query] = HITS.get(query, 0) + 1
        if query.startswith("slow"):
            time.sleep(2.0)
        if query.startswith("drop"):  # hang up without an answer
            self.close_connection = True
            return
        status, result = ANSWERS.get(query, (200, []))
        body = {"status": "success", "data": {"resultType": "vector", "result": result}} \
            if status == 200 else {"status": "error", "errorType": "bad_data",
                                   "error": f"parse error in {query}"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    with serving(Handler) as url:
        yield url


@pytest.fixture(scope="module")
def prometheus(server):
    return PrometheusProvider(server)


def test_one_series_is_a_value(prometheus):
    assert prometheus.query_value("one") == 0.25


@pytest.mark.parametrize("query, message", [
    ("none", "no series"), ("two", "2 series; the query must aggregate to one"),
    ("nan", "value is nan"), ("inf", "value is inf"), ("garbled", "unreadable sample"),
])
def test_unusable_answers_are_no_data(prometheus, query, message):
    with pytest.raises(NoData) as empty:
        prometheus.query_value(query)
    assert str(empty.value).startswith(message)


@pytest.mark.parametrize("query", ["bad", "broken"])
def test_refused_queries_are_errors_naming_the_server(server, prometheus, query):
    with pytest.raises(MetricsError) as refused:
        prometheus.query_value(query)
    assert str(refused.value).startswith(f"{server}: ")


def test_a_prometheus_that_does_not_answer_is_an_error_after_the_timeout(server):
    assert PrometheusProvider(server).timeout == 3.0  # the documented default
    slow = PrometheusProvider(server, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(MetricsError, match="timed out"):
        slow.query_value("slow")
    assert time.monotonic() - started < 1.5


def test_an_unreachable_prometheus_is_an_error_at_once():
    provider = PrometheusProvider(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(MetricsError, match=r"127\.0\.0\.1"):
        provider.query_value("up")
    assert time.monotonic() - started < 1.0  # no retries with back-off inside a round


@pytest.mark.parametrize("query", ["drop-1", "slow-1", "broken"])
def test_one_attempt_per_query_whatever_fails(server, query):
    """The gate's rounds and limits decide what failures mean: the client never retries
    (a retry with back-off turned a Prometheus outage into ~7 s per round)."""
    provider = PrometheusProvider(server, timeout=0.3)
    assert provider.url == server
    HITS.pop(query, None)
    with pytest.raises(MetricsError) as failed:
        provider.query_value(query)
    assert str(failed.value).startswith(f"{server}: ")
    time.sleep(0.1)
    assert HITS[query] == 1


def test_an_https_prometheus_with_an_unknown_certificate_is_not_trusted(tmp_path):
    """Gate numbers from an impostor are worse than none: TLS is verified."""
    import ssl

    from xds_server.pki import LocalCA

    issued = LocalCA.create(tmp_path).issue_server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    with serving(Handler, tls=context) as url:
        provider = PrometheusProvider(url)
        with pytest.raises(MetricsError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            provider.query_value("one")


def test_the_local_prometheus_has_no_lifecycle_api(tmp_path, monkeypatch):
    """Anyone who reaches its port could otherwise stop or reload it (/-/quit)."""
    from turnout import prometheus

    seen: list[list[str]] = []
    monkeypatch.setattr(prometheus, "prometheus_binary", lambda: "prometheus")
    monkeypatch.setattr(prometheus.ManagedProcess, "spawn",
                        staticmethod(lambda name, argv, **kw: seen.append(argv)))
    prometheus.PrometheusServer.start(directory=tmp_path, config_text="",
                                      log_path=tmp_path / "p.log", port=9)
    (argv,) = seen
    assert "--web.listen-address=127.0.0.1:9" in argv
    assert not any("lifecycle" in arg or "admin-api" in arg for arg in argv), argv
