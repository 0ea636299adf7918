"""Signatures, request data and samples for any model shape (no Triton needed)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import deserialize_bytes_tensor

from gates.validation.adversarial import generate_cases, raw_bytes
from gates.validation.settings import AdversarialSettings
from tests.zoo import write_model
from triton_slots.artifact import artifact_signature
from triton_slots.samples import SamplesError, check_samples, load_samples
from triton_slots.signature import DTYPES, ModelSignature, SignatureError, TensorSpec
from triton_slots.tensors import InputHint, random_inputs

ALL_TYPES = [f"TYPE_{t}" if t != "BYTES" else "TYPE_STRING" for t in DTYPES]


def _sig(tmp_path, kind: str) -> ModelSignature:
    return artifact_signature(write_model(tmp_path / kind, kind))


def test_signature_from_artifact_config(tmp_path):
    pair = _sig(tmp_path, "pair")
    assert [t.name for t in pair.inputs] == ["A", "B"]
    assert [(t.name, t.datatype) for t in pair.outputs] == [("SUM", "FP32"), ("ARGMAX", "INT32")]
    assert not pair.batched and pair.accepted_batch_sizes((1, 8)) == (1,)
    bert = _sig(tmp_path, "bert")
    assert bert.batched and bert.input("input_ids").dynamic
    assert bert.accepted_batch_sizes((1, 4, 64)) == (1, 4, 8)
    text = _sig(tmp_path, "text")
    assert text.input("TEXT").is_bytes and text.input("REPEAT").optional
    assert [t.name for t in text.required_inputs] == ["TEXT"]
    assert text.output("UPPER").is_exact


def test_signature_from_triton_json_matches_pbtxt(tmp_path):
    config = {"name": "m", "max_batch_size": 4,
              "input": [{"name": "x", "data_type": "TYPE_FP16", "dims": ["3", "-1"]}],
              "output": [{"name": "y", "data_type": "TYPE_STRING", "dims": ["1"]}]}
    sig = ModelSignature.from_config(config)
    assert sig.inputs == (TensorSpec("x", "FP16", (3, -1)),)
    assert sig.outputs[0].datatype == "BYTES" and sig.max_batch_size == 4


def test_bad_configs_are_refused_clearly():
    with pytest.raises(SignatureError, match="unsupported tensor datatype 'TYPE_COMPLEX'"):
        ModelSignature.from_config({"name": "m", "input": [
            {"name": "x", "data_type": "TYPE_COMPLEX", "dims": [1]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})
    with pytest.raises(SignatureError, match="declares no inputs"):
        ModelSignature.from_config({"name": "m", "output": [
            {"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})


@pytest.mark.parametrize("config_type", ALL_TYPES)
@pytest.mark.parametrize("batch", [0, 8])
def test_random_inputs_cover_every_triton_type(config_type, batch):
    sig = ModelSignature.from_config({
        "name": "m", "max_batch_size": batch,
        "input": [{"name": "x", "data_type": config_type, "dims": [2, -1]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})
    arrays = random_inputs(sig, 3, seed=1, hints={"x": InputHint(shape=(2, 5))})
    x = arrays["x"]
    assert x.shape == ((3, 2, 5) if batch else (2, 5))
    assert x.dtype == sig.input("x").dtype
    assert np.array_equal(x, random_inputs(sig, 3, seed=1,
                                           hints={"x": InputHint(shape=(2, 5))})["x"])
    if sig.input("x").datatype == "BYTES":
        assert all(isinstance(v, bytes) and v for v in x.reshape(-1))


def test_hint_ranges_and_defaults():
    sig = ModelSignature.from_config({
        "name": "m", "max_batch_size": 2,
        "input": [{"name": "ids", "data_type": "TYPE_INT64", "dims": [-1]},
                  {"name": "opt", "data_type": "TYPE_INT32", "dims": [1], "optional": True}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})
    arrays = random_inputs(sig, 2, hints={"ids": InputHint(low=10, high=12)})
    assert set(arrays) == {"ids"}  # optional inputs only on request
    assert arrays["ids"].shape == (2, 8) and set(np.unique(arrays["ids"])) <= {10, 11}
    assert set(random_inputs(sig, 1, optional=True)) == {"ids", "opt"}


def _decode(payload: bytes) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest()
    request.ParseFromString(payload)
    return request


def test_adversarial_cases_follow_the_signature(tmp_path):
    s = AdversarialSettings()
    names = {k: [c.name for c in generate_cases(_sig(tmp_path, k), None, s)]
             for k in ("pair", "bert", "text")}
    assert "empty_batch" not in names["pair"] and "batch_above_max" not in names["pair"]
    assert "nan_values" in names["pair"] and "nan_values" not in names["bert"]
    assert {"empty_batch", "batch_above_max"} <= set(names["bert"])
    assert {"malformed_bytes", "invalid_utf8"} <= set(names["text"])
    assert all(n[-1] == "garbage_bytes" for n in names.values())
    cases = {c.name: c for c in generate_cases(_sig(tmp_path / "p", "pair"), None, s)}
    missing = _decode(cases["missing_input"].payload)
    assert [t.name for t in missing.inputs] == ["B"]
    wrong = _decode(cases["wrong_shape"].payload)
    assert list(wrong.inputs[0].shape) == [4, 2]
    assert len(wrong.raw_input_contents[0]) == 4 * 2 * 4  # bytes match the claimed shape
    dtype = _decode(cases["wrong_dtype"].payload)
    assert dtype.inputs[0].datatype == "FP64" and len(dtype.raw_input_contents[0]) == 32
    big = _decode(cases["oversized_payload"].payload)
    assert len(big.raw_input_contents[0]) == 16 * s.oversize_factor


def test_bytes_are_encoded_as_kserve_raw_strings():
    array = np.array([[b"ab"], [b""], [b"xyz"]], dtype=np.object_)
    raw = raw_bytes(array, "BYTES")
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + \
        struct.pack("<I", 3) + b"xyz"
    assert list(deserialize_bytes_tensor(raw)) == [b"ab", b"", b"xyz"]
    assert raw_bytes(np.array([1, 2], np.int32), "INT32") == struct.pack("<ii", 1, 2)


def _jsonl(path, *rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_samples_with_expected_outputs(tmp_path):
    sig = _sig(tmp_path, "pair")
    good = {"id": "a", "inputs": [
        {"name": "A", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "B", "shape": [4], "datatype": "FP32", "data": [0, 0, 0, 0]}],
        "expected": [{"name": "ARGMAX", "shape": [1], "datatype": "INT32", "data": [0]}]}
    samples = load_samples(_jsonl(tmp_path / "s.jsonl", good, good), sig)
    assert [s.label for s in samples] == ["s.jsonl:1 (id a)", "s.jsonl:2 (id a)"]
    assert samples[0].inputs["A"].dtype == np.float32
    assert samples[0].expected["ARGMAX"].tolist() == [0]
    assert check_samples(sig, samples) == []


def test_samples_that_do_not_fit_name_the_input_and_the_mismatch(tmp_path):
    sig = _sig(tmp_path, "pair")
    bad = {"inputs": [
        {"name": "A", "shape": [4], "datatype": "FP64", "data": [1, 2, 3, 4]},
        {"name": "C", "shape": [1], "datatype": "FP32", "data": [1]}],
        "expected": [{"name": "NOPE", "shape": [1], "datatype": "FP32", "data": [1]}]}
    problems = check_samples(sig, load_samples(_jsonl(tmp_path / "b.jsonl", bad), sig))
    assert "b.jsonl:1: input 'A' is FP64; pair expects FP32" in problems
    assert any("input 'C' is not an input of pair (inputs: A, B)" in p for p in problems)
    assert "b.jsonl:1: required input 'B' is missing" in problems
    assert any("expected output 'NOPE' is not an output" in p for p in problems)
    bert = _sig(tmp_path, "bert")
    rows = {"inputs": [
        {"name": "input_ids", "shape": [9, 3], "datatype": "INT64", "data": [1] * 27},
        {"name": "attention_mask", "shape": [3], "datatype": "INT64", "data": [1] * 3}]}
    problems = check_samples(bert, load_samples(_jsonl(tmp_path / "c.jsonl", rows), bert))
    assert any("input 'input_ids': batch of 9 rows; the model takes 1 to 8" in p
               for p in problems)
    assert any("input 'attention_mask': shape [3] has rank 1" in p for p in problems)


def test_npz_samples_rows_become_requests(tmp_path):
    bert = _sig(tmp_path, "bert")
    path = tmp_path / "s.npz"
    np.savez(path, input_ids=np.ones((5, 7), np.int64), attention_mask=np.ones((5, 7), np.int64),
             **{"expected.TOKENS": np.full((5, 1), 7, np.int64)})
    samples = load_samples(path, bert)
    assert len(samples) == 5 and samples[2].inputs["input_ids"].shape == (1, 7)
    assert samples[0].expected["TOKENS"].shape == (1, 1)
    assert check_samples(bert, samples) == []
    np.savez(path, input_ids=np.ones((5, 7), np.int32), attention_mask=np.ones((4, 7)))
    with pytest.raises(SamplesError, match=r"same first \(sample\) axis"):
        load_samples(path, bert)


@pytest.mark.parametrize("text, message", [
    ("{not json", "s.jsonl:1: not JSON"),
    ('{"inputs": [{"name": "A", "shape": [2], "datatype": "FP32", "data": [1]}]}',
     "tensor 'A': 1 values for shape [2]"),
    ('{"inputs": [{"name": "A", "shape": [1], "datatype": "FP99", "data": [1]}]}',
     "unknown datatype 'FP99'"),
    ('{"inputs": [{"name": "A", "shape": [1], "datatype": "INT8", "data": ["x"]}]}',
     "data is not INT8"),
    ('{"outputs": []}', "expected a KServe v2 request with an 'inputs' list"),
])
def test_unreadable_samples_say_where(tmp_path, text, message):
    path = tmp_path / "s.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(SamplesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_samples(path)


def test_a_decoupled_model_is_known_from_its_config_json_and_pbtxt(tmp_path):
    from pathlib import Path

    config = {"name": "m", "input": [{"name": "x", "data_type": "TYPE_INT32", "dims": [1]}],
              "output": [{"name": "y", "data_type": "TYPE_STRING", "dims": [1]}]}
    assert not ModelSignature.from_config(config).decoupled
    assert ModelSignature.from_config(
        {**config, "model_transaction_policy": {"decoupled": True}}).decoupled
    assert ModelSignature.from_config(
        {**config, "modelTransactionPolicy": {"decoupled": True}}).decoupled
    assert not ModelSignature.from_config(
        {**config, "model_transaction_policy": {"decoupled": False}}).decoupled
    streamer = Path(__file__).resolve().parent.parent / "examples" / "models" / "streamer"
    sig = artifact_signature(streamer / "v1")
    assert sig.decoupled and sig.describe().endswith(
        "; no batching; decoupled (a stream of responses per request)")
    assert not _sig(tmp_path, "pair").decoupled


def test_a_stream_joins_its_responses_per_output():
    from triton_slots.streaming import StreamAnswer

    sig = ModelSignature("m", (TensorSpec("x", "INT32", (1,)),),
                         (TensorSpec("TOKEN", "BYTES", (1,)), TensorSpec("P", "FP32", (2,))))
    answer = StreamAnswer([{"TOKEN": np.array([b"ab"], dtype=np.object_),
                            "P": np.array([0.5, 0.25], dtype=np.float32)},
                           {"TOKEN": np.array([b"c"], dtype=np.object_)}])
    joined = answer.joined(sig)
    assert list(joined["TOKEN"]) == [b"ab", b"c"]  # not b"abc": the split stays visible
    assert joined["P"].tolist() == [0.5, 0.25]
    empty = StreamAnswer().joined(sig)
    assert empty["TOKEN"].shape == (0,) and empty["P"].dtype == np.float32
