"""Shadow traffic on a real Envoy in front of real Triton servers: Envoy copies live
requests to the candidate slot and records both answers with its tap filter; the observer
reads the taps through Envoy's admin, off the live path, and compares each pair.

blue serves ``scorer`` v1, green v2, which answers wrongly (finite, well-formed) for inputs
whose first value is above 0.8. With every request shadowed to green, clients still get
only blue's answers (each checked), while the observer counts about a fifth of the pairs
as disagreeing, names the outputs and keeps no payload."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gates.shadow.observer import ShadowObserver
from triton_slots.admin import TritonAdmin
from turnout.seed import slot_repository
from turnout.topology import Shadow

pytestmark = pytest.mark.integration
SCORER = Path(__file__).resolve().parent / "models" / "scorer"
STREAMER = Path(__file__).resolve().parent.parent / "examples" / "models" / "streamer" / "v1"


def wrong_scorer(directory: Path, parameter: str = "wrong_above") -> Path:
    """The scorer's "v2": wrong (or, with ``slow_above``, 3 s late) for inputs whose first
    value is above 0.8."""
    model = directory / "scorer"
    shutil.copytree(SCORER, model)
    with open(model / "config.pbtxt", "a") as config:
        config.write(f'parameters {{ key: "{parameter}" value: {{ string_value: "0.8" }} }}\n')
    return model


def wrong_streamer(directory: Path) -> Path:
    """The example streamer, wrong (words not reversed) for prompts containing "!"."""
    model = directory / "streamer"
    shutil.copytree(STREAMER, model)
    config = (model / "config.pbtxt").read_text().replace(
        "parameters {", 'parameters { key: "wrong_marker" value: { string_value: "!" } }\n'
        "parameters {", 1)
    (model / "config.pbtxt").write_text(config)
    return model


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from tests.live import Live

    directory = tmp_path_factory.mktemp("shadow")
    stack = Live.start(directory, models=[SCORER, STREAMER])
    try:
        for model in (wrong_scorer(tmp_path_factory.mktemp("v2")),
                      wrong_streamer(tmp_path_factory.mktemp("streamer"))):
            green = slot_repository(directory, "green") / model.name
            shutil.rmtree(green)
            shutil.copytree(model, green)
            TritonAdmin(stack.servers["green"][0].endpoint).load(model.name)
        yield stack
    finally:
        stack.stop()


def _infer_grpc(client: grpcclient.InferenceServerClient, x: np.ndarray) -> tuple:
    tensor = grpcclient.InferInput("X", [4], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("scorer", [tensor])
    return (float(result.as_numpy("SCORE")[0]), int(result.as_numpy("LABEL")[0]),
            result.get_response(as_json=True))


def _infer_http(base: str, x: np.ndarray) -> dict:
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [4],
                        "data": [float(v) for v in x]}]}
    request = urllib.request.Request(f"{base}/v2/models/scorer/infer",
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["x-turnout-served-by"] == "blue"
        return json.load(response)


def _observe(live, slot: str, requests: int, *, seed: int, **observer_options):
    """Shadow every request to ``slot``, send ``requests`` (gRPC, every fifth over HTTP),
    check every answer is v1's, return the observer's figures and the count of inputs in
    the wrong subset; ``latencies`` (if given) gets each gRPC call's seconds."""
    latencies = observer_options.pop("latencies", [])
    observer = ShadowObserver([live.envoy.admin_url], **{"timeout_s": 2.0, **observer_options})
    live.loop.run(observer.start())
    try:
        assert live.loop.run(observer.wait_connected())
        assert live.loop.run(live.plane.set_shadow(
            Shadow(slot, 100.0, live.plane.config.preview_key))).converged
        rng = np.random.default_rng(seed)
        client = grpcclient.InferenceServerClient(live.ingress)
        wrong_inputs = 0
        try:
            for i in range(requests):
                x = rng.random(4, dtype=np.float32)
                wrong_inputs += bool(x[0] > 0.8)
                expected = float(np.float32(x.sum()))
                if i % 5 == 4:
                    answer = _infer_http(f"http://{live.ingress}", x)
                    score = next(o for o in answer["outputs"] if o["name"] == "SCORE")
                    assert score["data"][0] == pytest.approx(expected, abs=1e-5)
                else:
                    started = time.monotonic()
                    score, label, _ = _infer_grpc(client, x)
                    latencies.append(time.monotonic() - started)
                    assert score == pytest.approx(expected, abs=1e-5)  # v1's answer, always
                    assert label == int(expected > 2.0)
        finally:
            client.close()
        deadline = time.monotonic() + 5
        while observer.stats.compared < requests and time.monotonic() < deadline:
            time.sleep(0.1)
        return observer.stats, wrong_inputs
    finally:
        live.loop.run(live.plane.set_shadow(None))
        live.loop.run(observer.stop())


def test_a_version_wrong_on_a_subset_disagrees_on_exactly_that_subset(live):
    stats, wrong_inputs = _observe(live, "green", 200, seed=1)
    figures = stats.as_dict()
    print(json.dumps(figures))
    assert stats.compared == 200, figures
    assert stats.disagreed == wrong_inputs > 20, figures  # the subset, no more, no less
    assert stats.timed_out == stats.truncated == stats.undecodable == 0, figures
    assert figures["worst_abs_diff"]["SCORE"] == pytest.approx(1.0, abs=1e-5)
    assert figures["differing"]["SCORE"] == wrong_inputs
    assert len(figures["examples"]) == 5
    assert all(set(e) == {"request", "model", "why"} and e["model"] == "scorer"
               and "SCORE: max abs diff 1 > 0.02" in e["why"] for e in figures["examples"])
    assert "X" not in json.dumps(figures["examples"])  # digests, never inputs
    assert 0.2 < figures["latency_ratio"] < 5


def _copies(live) -> int:
    """Requests Envoy has copied (sent to its own ingress) so far."""
    name = "cluster.turnout_ingress_self.upstream_rq_total"
    return live.envoy.stats(name).get(name, 0)


def test_a_pair_of_the_same_version_never_disagrees_and_shadowing_stops(live):
    stats, _ = _observe(live, "blue", 100, seed=2)  # A/A: the copy goes to blue too
    assert stats.compared == 100 and stats.disagreed == 0, stats.as_dict()
    copied = _copies(live)
    assert copied >= 100
    client = grpcclient.InferenceServerClient(live.ingress)
    try:
        for _ in range(20):
            _infer_grpc(client, np.zeros(4, dtype=np.float32))
    finally:
        client.close()
    assert _copies(live) == copied  # shadowing off: nothing copied any more


def _green_serves(live, model: Path) -> None:
    green = slot_repository(live.directory, "green") / "scorer"
    shutil.rmtree(green)
    shutil.copytree(model, green)
    TritonAdmin(live.servers["green"][0].endpoint).load("scorer")


def test_answers_too_large_for_the_tap_are_counted_never_compared(live):
    stats, _ = _observe(live, "blue", 30, seed=3, max_body_bytes=64)
    assert (stats.truncated, stats.compared, stats.disagreed) == (30, 0, 0), stats.as_dict()


@pytest.mark.xfail(strict=False, reason=(
    "open defect, found 2026-12-07: in 3 of 5 full `make test` runs (never alone or with its "
    "module) one stream whose answers should agree was counted as disagreeing (TOKEN "
    "values differ); a false disagreement on streams under load, to be found"))
def test_streams_are_compared_whole_over_grpc_and_server_sent_events(live):
    """Streams are copied too (gRPC ModelStreamInfer, HTTP generate_stream): each is
    compared as its whole sequence of responses. green's streamer leaves the words of
    prompts containing "!" unreversed: exactly those streams disagree, and every client
    still gets blue's (reversed) tokens."""
    from triton_slots.loadgen import fetch_signature
    from triton_slots.streaming import stream_infer

    observer = ShadowObserver([live.envoy.admin_url], timeout_s=3.0)
    live.loop.run(observer.start())
    client = grpcclient.InferenceServerClient(live.ingress)
    try:
        assert live.loop.run(observer.wait_connected())
        assert live.loop.run(live.plane.set_shadow(
            Shadow("green", 100.0, live.plane.config.preview_key))).converged
        sig = fetch_signature(client, "streamer")
        prompts = [f"word{i} other{'!' if i % 3 == 0 else ''}" for i in range(12)]
        for prompt in prompts:
            answer = stream_infer(client, sig, {"PROMPT": np.array([prompt.encode()],
                                                                    dtype=np.object_)})
            assert answer.responses[0]["TOKEN"][0] == prompt.split()[0][::-1].encode()
        for prompt in ("sse one!", "sse two"):
            body = json.dumps({"PROMPT": prompt, "MAX_TOKENS": 3}).encode()
            request = urllib.request.Request(
                f"http://{live.ingress}/v2/models/streamer/generate_stream", data=body,
                headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                events = [json.loads(line[5:]) for line in response.read().splitlines()
                          if line.startswith(b"data:")]
            assert [e["TOKEN"] for e in events] == [w[::-1] for w in
                                                   (prompt.split() * 2)[:3]]
        expected = sum("!" in p for p in prompts) + 1
        deadline = time.monotonic() + 5
        while observer.stats.compared < len(prompts) + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = observer.stats
        assert stats.compared == len(prompts) + 2, stats.as_dict()
        assert stats.disagreed == expected, (stats.as_dict(), stats.examples)
        assert stats.differing == {"TOKEN": expected}
        assert all(e["model"] == "streamer" for e in stats.examples)
    finally:
        client.close()
        live.loop.run(live.plane.set_shadow(None))
        live.loop.run(observer.stop())


def test_a_candidate_that_hangs_never_holds_a_live_request(live, tmp_path):
    """green answers inputs above 0.8 three seconds late (and, with one instance, every copy
    queued behind them; the queue drains about a minute later, so a test after this one
    that counts comparisons could count these late copies: the stream test runs before
    it): clients never wait for it (Envoy sends the copy and drops its
    answer), and the observer counts each copy unanswered within its timeout as a
    disagreement, the late copies as orphans."""
    _green_serves(live, wrong_scorer(tmp_path, "slow_above"))
    try:
        latencies: list[float] = []
        stats, slow_inputs = _observe(live, "green", 60, seed=4, timeout_s=1.0,
                                      latencies=latencies)
        assert slow_inputs > 5
        assert max(latencies) < 1.0, max(latencies)  # no live call waited 3 s
        # One model instance: a late answer delays the copies queued behind it too.
        assert stats.disagreed == stats.timed_out >= slow_inputs, stats.as_dict()
        assert all("no answer from the candidate within 1 s" in e["why"]
                   for e in stats.examples)
    finally:
        _green_serves(live, wrong_scorer(tmp_path / "back", "wrong_above"))


def test_only_envoys_copies_reach_the_candidate_through_the_shadow_header(live):
    """The copy route takes only the shadow key (docs/shadow.md: the stack's preview key,
    added by Envoy's mirror): a client sending another value is served by the split, and
    the header never reaches a server either way."""
    body = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [4],
                                   "data": [0.9, 0.1, 0.1, 0.1]}]}).encode()

    def served_by(value: str) -> tuple[str, str | None]:
        request = urllib.request.Request(
            f"http://{live.ingress}/v2/models/scorer/infer", data=body,
            headers={"content-type": "application/json", "x-turnout-shadow": value})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["x-turnout-served-by"], response.headers.get(
                "x-turnout-shadow")

    live.loop.run(live.plane.set_shadow(Shadow("green", 100.0, live.plane.config.preview_key)))
    try:
        for forged in ("copy", "live", "k" * 24, live.plane.config.preview_key[:-1]):
            assert served_by(forged) == ("blue", "live")  # the split (and a copy made)
        assert served_by(live.plane.config.preview_key) == ("green", "copy")
    finally:
        live.loop.run(live.plane.set_shadow(None))
