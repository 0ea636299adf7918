"""Decoupled (streaming) models on a real stack: Triton's Python backend streaming tokens
through a real Envoy. Validation talks to them over ModelStreamInfer: adversarial cases
each end (an error on the stream, or the final response), parity compares whole response
sequences, latency measures time to first response (TTFT) and between responses (ITL)
against the active slot. A version whose first token comes 250 ms late fails on TTFT."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    directory = tmp_path_factory.mktemp("streaming")
    info = stack.up(directory, models=[STREAMER / "v1"], progress=print)
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


def test_synthetic_streams_through_the_ingress(streaming):
    from click.testing import CliRunner

    from turnout.cli import main as cli
    _info, directory = streaming
    result = CliRunner().invoke(cli, ["load", "--duration", "2", "--rate", "10",
                                      "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("sending 10 req/s of streamer to ")  # the active model
    assert ", 0 failed; latency p50 " in result.output.splitlines()[-1], result.output
