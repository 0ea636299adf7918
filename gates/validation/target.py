"""How the suite reaches a slot: Envoy's ingress with the preview header (the same data
path real traffic takes, and no weighted traffic involved), and the model's signature."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from triton_slots.loadgen import fetch_signature
from triton_slots.routing import PREVIEW_KEY_HEADER, SLOT_HEADER
from triton_slots.signature import ModelSignature
from triton_slots.streaming import StreamAnswer, stream_infer
from triton_slots.tensors import infer_inputs, outputs_of, requested_outputs


@dataclass(frozen=True)
class SlotTarget:
    """A slot as seen through Envoy: requests carry ``x-turnout-slot: <slot>`` and the
    operator's preview key."""

    slot: str
    address: str  # Envoy ingress host:port, as the control plane reaches it
    preview_key: str = ""

    @property
    def headers(self) -> dict[str, str]:
        headers = {SLOT_HEADER: self.slot}
        if self.preview_key:
            headers[PREVIEW_KEY_HEADER] = self.preview_key
        return headers

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.address)

    def wait_ready(self, model: str, timeout: float = 20.0) -> float:
        """Wait until ``model`` answers READY through Envoy on this slot (a freshly
        deployed slot may still be marked unhealthy by health checks for a moment).
        Returns the seconds waited; raises TimeoutError."""
        started = time.monotonic()
        last = ""
        client = self.client()
        try:
            while time.monotonic() - started < timeout:
                try:
                    if client.is_model_ready(model, headers=self.headers, client_timeout=5):
                        return time.monotonic() - started
                    last = "not ready"
                except InferenceServerException as exc:
                    last = str(exc)
                time.sleep(0.1)
        finally:
            client.close()
        raise TimeoutError(f"{model} not ready on slot {self.slot} through {self.address} "
                           f"after {timeout:.0f}s: {last}")

    def signature(self, model: str) -> ModelSignature:
        client = self.client()
        try:
            return fetch_signature(client, model, self.headers)
        finally:
            client.close()

    def infer(self, sig: ModelSignature, arrays: Mapping[str, np.ndarray],
              client: grpcclient.InferenceServerClient | None = None
              ) -> dict[str, np.ndarray]:
        """Every output of ``sig`` for one request made of ``arrays`` (for a decoupled
        model, its whole stream of responses joined: see :class:`StreamAnswer`)."""
        own = client is None
        client = client or self.client()
        try:
            if sig.decoupled:
                return self.stream(sig, arrays, client).joined(sig)
            result = client.infer(sig.name, infer_inputs(grpcclient, sig, arrays),
                                  outputs=requested_outputs(grpcclient, sig),
                                  headers=self.headers, client_timeout=30)
            return outputs_of(sig, result)
        finally:
            if own:
                client.close()

    def stream(self, sig: ModelSignature, arrays: Mapping[str, np.ndarray],
               client: grpcclient.InferenceServerClient | None = None,
               timeout: float = 30.0) -> StreamAnswer:
        """One request to a decoupled model: its responses and their timing."""
        own = client is None
        client = client or self.client()
        try:
            return stream_infer(client, sig, arrays, headers=self.headers, timeout=timeout)
        finally:
            if own:
                client.close()
