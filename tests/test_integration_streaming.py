"""Decoupled (streaming) models on a real stack: Triton's Python backend streaming tokens
through a real Envoy. Validation talks to them over ModelStreamInfer: adversarial cases
each end (an error on the stream, or the final response), parity compares whole response
sequences, latency measures time to first response (TTFT) and between responses (ITL)
against the active slot. A version whose first token comes 250 ms late fails on TTFT."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gates.validation import ValidationSettings
from turnout import stack, workflow
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration
STREAMER = Path(__file__).resolve().parent.parent / "examples" / "models" / "streamer"
STREAM_MAX_AGE_S = 6.0  # short, so that the long-lived-stream test below takes seconds


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    directory = tmp_path_factory.mktemp("streaming")
    info = stack.up(directory, models=[STREAMER / "v1"], progress=print,
                    stream_max_age_s=STREAM_MAX_AGE_S)
    try:
        registry = registry_for(directory)
        for version in ("v2", "v3"):
            registry.push(STREAMER / version, name="streamer", version=version)
        yield info, directory
    finally:
        stack.down(directory)


def _settings() -> ValidationSettings:
    from gates.validation.settings import LatencySettings
    return ValidationSettings(latency=LatencySettings(requests=60, rounds=3,
                                                      p99_budget_ms=150))


def test_a_streaming_version_validates_over_model_stream_infer(streaming):
    _info, directory = streaming
    lines: list[str] = []
    workflow.deploy_to_idle(directory, "streamer", "v2", progress=lines.append)
    report = workflow.validate(directory, "streamer", "v2", settings=_settings(),
                               progress=lines.append)
    assert report.passed, report.table()
    checks = {c.name: c for c in report.checks}
    assert "decoupled" in next(line for line in lines if "signature" in line)
    cases = checks["adversarial"].evidence["cases"]
    assert cases["wrong_dtype"]["status"] == "INVALID_ARGUMENT", cases
    assert all(c["refused_ok"] for c in cases.values()), cases
    assert checks["parity"].summary.startswith("TOKEN exact over 32 requests"), \
        checks["parity"].summary
    latency = checks["latency"].evidence
    assert latency["candidate"]["streams"] == 60 and latency["candidate"]["failed"] == 0
    assert latency["candidate"]["ttft_p99_ms"] < 150 and latency["ttft_p99_ratio"] < 3
    print("streaming validation:", checks["latency"].summary,
          {k: latency[k] for k in ("ttft_p99_ratio", "itl_p99_ratio", "responses_ratio")})


def test_a_version_whose_first_token_is_late_fails_on_ttft(streaming):
    _info, directory = streaming
    workflow.deploy_to_idle(directory, "streamer", "v3", progress=lambda _: None)
    report = workflow.validate(directory, "streamer", "v3", settings=_settings(),
                               progress=lambda _: None)
    assert not report.passed
    latency = next(c for c in report.checks if c.name == "latency")
    assert "TTFT p99" in latency.summary and latency.evidence["ttft_p99_ratio"] > 3, \
        latency.summary
    parity = next(c for c in report.checks if c.name == "parity")
    assert parity.passed, parity.summary  # same tokens, only later


def test_streams_and_unary_calls_through_the_ingress(streaming):
    info, _ = streaming
    client = grpcclient.InferenceServerClient(info.ingress)
    prompt = grpcclient.InferInput("PROMPT", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"to be or not"], dtype=np.object_))
    try:
        # A unary call to a decoupled model: Triton's own error, passed through Envoy.
        with pytest.raises(InferenceServerException, match="doesn't support models with "
                                                           "decoupled transaction policy"):
            client.infer("streamer", [prompt])
        from triton_slots.signature import ModelSignature
        from triton_slots.streaming import stream_infer
        config = client.get_model_config("streamer", as_json=True)["config"]
        sig = ModelSignature.from_config(config, name="streamer")
        answer = stream_infer(client, sig, {"PROMPT": np.array([b"to be or not"],
                                                               dtype=np.object_)})
        assert [r["TOKEN"][0] for r in answer.responses] == \
            [b"ot", b"eb", b"ro", b"ton"] * 2
        assert answer.first_s is not None and len(answer.gaps_s) == 7
    finally:
        client.close()


def test_a_client_that_cancels_mid_stream_leaves_nothing_hanging(streaming):
    """Cancel after the first token of a 64-token stream through Envoy, ten times: each
    cancel returns at once, and the next stream on a fresh call is served in full."""
    import queue

    from triton_slots.signature import ModelSignature
    from triton_slots.streaming import stream_infer
    from triton_slots.tensors import infer_inputs

    info, _ = streaming
    client = grpcclient.InferenceServerClient(info.ingress)
    try:
        config = client.get_model_config("streamer", as_json=True)["config"]
        sig = ModelSignature.from_config(config, name="streamer")
        arrays = {"PROMPT": np.array([b"a long answer"], dtype=np.object_),
                  "MAX_TOKENS": np.array([64], dtype=np.int32)}
        for _ in range(10):
            answers: queue.Queue = queue.Queue()
            client.start_stream(lambda result, error, into=answers: into.put((result, error)))
            client.async_stream_infer("streamer", infer_inputs(grpcclient, sig, arrays))
            result, error = answers.get(timeout=10)
            assert error is None and result.as_numpy("TOKEN") is not None
            started = time.monotonic()
            client.stop_stream(cancel_requests=True)
            assert time.monotonic() - started < 1.0, "the cancel hung"
        answer = stream_infer(client, sig, arrays)
        assert len(answer.responses) == 64
    finally:
        client.close()


def test_synthetic_streams_through_the_ingress(streaming):
    from click.testing import CliRunner

    from turnout.cli import main as cli
    _info, directory = streaming
    result = CliRunner().invoke(cli, ["load", "--duration", "2", "--rate", "10",
                                      "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("sending 10 req/s of streamer to ")  # the active model
    assert ", 0 failed; latency p50 " in result.output.splitlines()[-1], result.output


# The median first token: a late version delays every stream, while one stream slowed by
# two busy cores is a p99 over the few streams of a 4 s window (a full `make test` once
# rolled the good version back on a single 200 ms first token). `make demo-stream` and
# `bench.streams` gate on the p99.
TOKEN_GATES = """
      - {name: ttft, builtin: ttft_p50_ms, max: 200, maxRatio: 3, minDelta: 100, source: envoy}
      - {name: itl, builtin: itl_p99_ms, maxRatio: 3, minDelta: 50, source: envoy}
      - {name: stream-errors, builtin: stream_error_rate, max: 0.01, source: envoy}"""


def test_token_level_gates_roll_back_a_late_first_token_and_promote_a_good_version(
        streaming):
    """Streams through the ingress, the gates reading Envoy's access-log stream: the
    version whose first token is 250 ms late is rolled back on TTFT at its first step; the
    good one is promoted. No stream fails."""
    from tests.rollout_helpers import FINISHED, policy, wait_for
    from triton_slots.loadgen import LoadGenerator

    info, directory = streaming
    client = info.client(actor="pytest")
    load = LoadGenerator(info.ingress, model="streamer", concurrency=3, rate=30).start()
    figures = {}
    try:
        time.sleep(1.0)
        steps = """
      - {weight: 30, bake: 6s}
      - {weight: 100, bake: 2s}"""
        client.apply(policy("streamer:v3", name="late", checks="[]", steps=steps,
                            metrics=TOKEN_GATES), "late.yaml")
        done = wait_for(client, lambda r: r["phase"] in FINISHED, timeout=120,
                        what="the late version's end")
        assert done["phase"] == "rolled_back", (done["reason"], [
            (e["message"], e["evidence"]) for e in client.history(rollout=done["id"])
            if e["kind"] == "gates"][-3:])
        decision = next(e for e in client.history(rollout=done["id"])
                        if e["kind"] == "transition" and e["phase_to"] == "rolling_back")
        assert "ttft" in decision["message"], decision["message"]
        failing = {m["metric"]: m for m in decision["evidence"]["measurements"]}
        assert failing["ttft"]["phase"] == "Failed" and failing["ttft"]["value"] > 200
        figures["late: TTFT p50 ms"] = round(failing["ttft"]["value"], 1)
        figures["late: why"] = failing["ttft"]["message"]
        figures["late: first failure -> 0% ACKed s"] = round(
            done["rollback_acked_at"] - done["first_failure_at"], 2)
        stage = registry_for(directory).get("streamer", "v3")
        assert stage.stage == "rolled_back" and "by a gate" in stage.stage_reason
        client.apply(policy("streamer:v2", name="good", checks="[]", steps=steps,
                            metrics=TOKEN_GATES), "good.yaml")
        done = wait_for(client, lambda r: r["phase"] in FINISHED, timeout=120,
                        what="the good version's end")
        assert done["phase"] == "promoted", [
            (e["message"], e["evidence"]) for e in client.history(rollout=done["id"])
            if e["kind"] == "transition" and e["phase_to"] == "rolling_back"]
        measured = {m["metric"]: m for m in done["latest_round"]["measurements"]}
        assert measured["stream-errors"]["value"] == 0.0, measured
        # The dashboard's per-slot series carry the streams' figures (the same registry).
        request = urllib.request.Request(info.api_url + "/dashboard/state",
                                         headers={"Authorization": f"Bearer {info.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            last = json.load(response)["series"][-1]
        active = done["candidate_slot"]
        assert last[active]["ttft_p50_ms"] > 0 and last[active]["itl_p99_ms"] >= 0, last
        assert last[active]["tokens_per_s"] > 0, last
    finally:
        stats = load.stop()
    print("token-level gates:", figures, f"streams {stats.ok} ok, {stats.failed} failed")
    assert stats.failed == 0, dict(stats.errors)
    assert stats.ok > 100


def test_long_lived_streams_follow_a_promotion_and_a_rollback(streaming):
    """Clients holding one ModelStreamInfer stream each, sending request after request on
    it: after all traffic moves to green (a promotion's last step) and back (a rollback),
    the old slot serves none of them within the stack's stream_max_age_s. Clients that
    renew their stream at a request boundary after half of it lose no request; a plain
    client's stream is ended by Envoy (moved, but a response in flight may be cut)."""
    from bench.stream_move import measure

    info, _ = streaming
    arrays = {"PROMPT": np.array([b"a question"], dtype=np.object_),
              "MAX_TOKENS": np.array([8], dtype=np.int32)}
    result = measure(info, "streamer", arrays, max_age_s=STREAM_MAX_AGE_S, renewing=3,
                     plain=1)
    print(json.dumps(result))
    for move in ("promotion", "rollback"):
        assert result[move]["streams_before"] == 4, result
        assert result[move]["seconds"] is not None, f"a stream stayed on the old slot: {result}"
        assert result[move]["seconds"] <= STREAM_MAX_AGE_S + 1.0, result
    renewing, plain = result["renewing"], result["plain"]
    assert renewing["cut"] == 0 and not renewing["errors"], renewing
    assert renewing["renewed"] >= 3 * 2, renewing  # each client renewed for each move
    assert plain["opened"] >= 3, plain  # the ingress ended its stream at each move
