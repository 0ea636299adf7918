"""How the suite reaches a slot: Envoy's ingress with the preview header (the same data
path real traffic takes, and no weighted traffic involved), and the model's signature."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient

SLOT_HEADER = "x-turnout-slot"


@dataclass(frozen=True)
class ModelSignature:
    name: str
    input_name: str
    input_dims: tuple[int, ...]  # without the batch dimension
    input_dtype: str  # Triton datatype string, e.g. "FP32"
    output_name: str
    max_batch_size: int

    def sample(self, rows: int, *, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = (rows, *(d if d > 0 else 1 for d in self.input_dims))
        return rng.random(shape, dtype=np.float64).astype(_numpy_dtype(self.input_dtype))


def _numpy_dtype(triton: str) -> np.dtype:
    from tritonclient.utils import triton_to_np_dtype

    return np.dtype(triton_to_np_dtype(triton))


@dataclass(frozen=True)
class SlotTarget:
    """A slot as seen through Envoy: requests carry ``x-turnout-slot: <slot>``."""

    slot: str
    address: str  # Envoy ingress host:port

    @property
    def headers(self) -> dict[str, str]:
        return {SLOT_HEADER: self.slot}

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.address)

    def signature(self, model: str) -> ModelSignature:
        client = self.client()
        try:
            config = client.get_model_config(model, headers=self.headers, as_json=True)["config"]
        finally:
            client.close()
        first_in, first_out = config["input"][0], config["output"][0]
        return ModelSignature(
            name=model,
            input_name=first_in["name"],
            input_dims=tuple(int(d) for d in first_in["dims"]),
            input_dtype=first_in["data_type"].removeprefix("TYPE_"),
            output_name=first_out["name"],
            max_batch_size=int(config.get("max_batch_size", 0)),
        )

    def infer(self, signature: ModelSignature, data: np.ndarray,
              client: grpcclient.InferenceServerClient | None = None) -> np.ndarray:
        own = client is None
        client = client or self.client()
        try:
            tensor = grpcclient.InferInput(signature.input_name, list(data.shape),
                                           signature.input_dtype)
            tensor.set_data_from_numpy(data)
            result = client.infer(signature.name, [tensor], headers=self.headers,
                                  client_timeout=30)
            return result.as_numpy(signature.output_name)
        finally:
            if own:
                client.close()
