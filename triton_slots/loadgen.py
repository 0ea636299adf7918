"""gRPC inference load (KServe v2 via ``tritonclient``) against Envoy or a Triton server,
for any model: requests are built from the model's signature (fetched from the target,
through the same headers) unless the caller gives the inputs. A decoupled (streaming)
model gets one stream per request, read to its final response.

Threads, each with its own client, send until stopped or a count is reached. Every
request is accounted for: ``ok`` or ``failed`` by gRPC status.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from triton_slots.signature import ModelSignature
from triton_slots.streaming import StreamError, stream_infer
from triton_slots.tensors import Hints, infer_inputs, random_inputs


@dataclass
class LoadStats:
    """Counts (and latencies in ms) of one load run; merged across threads."""

    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.ok + self.failed

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


class LoadError(RuntimeError):
    """A load thread crashed (not a failed request: a bug or a broken environment)."""


#: A gRPC retry policy for UNAVAILABLE (see LoadGenerator's ``retry_unavailable``).
RETRY_UNAVAILABLE = json.dumps({"methodConfig": [{
    "name": [{}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def channel_args(*, retry_unavailable: bool, own_connection: bool) -> list[tuple] | None:
    """gRPC channel options for a load thread (None: tritonclient's defaults)."""
    if not (retry_unavailable or own_connection):
        return None
    args: list[tuple] = [("grpc.max_send_message_length", 2**31 - 1),
                         ("grpc.max_receive_message_length", 2**31 - 1)]
    if own_connection:  # channels of one process share connections unless told not to
        args.append(("grpc.use_local_subchannel_pool", 1))
    if retry_unavailable:
        args += [("grpc.enable_retries", 1), ("grpc.service_config", RETRY_UNAVAILABLE)]
    return args


def fetch_signature(client: grpcclient.InferenceServerClient, model: str,
                    headers: dict[str, str] | None = None) -> ModelSignature:
    """The model's signature as the target (Triton, or Envoy in front of it) reports it."""
    config = client.get_model_config(model, headers=headers, as_json=True)["config"]
    return ModelSignature.from_config(config, name=model)


def make_inputs(sig: ModelSignature, batch: int = 1, *, seed: int = 0,
                hints: Hints | None = None) -> list[grpcclient.InferInput]:
    """Random inputs for one request of ``batch`` rows (one request's worth for a model
    that does not batch)."""
    return infer_inputs(grpcclient, sig, random_inputs(sig, batch, seed=seed, hints=hints))


@dataclass(frozen=True)
class _Request:
    sig: ModelSignature
    arrays: dict[str, np.ndarray]
    inputs: list[grpcclient.InferInput] | None  # None: a decoupled model's (streamed)


class LoadGenerator:
    """``concurrency`` threads sending inferences to ``address`` until :meth:`stop`.

    :meth:`counts` may be called from any thread while running; it returns a copy.
    """

    def __init__(
        self,
        address: str,
        *,
        model: str,
        concurrency: int = 4,
        batch: int = 1,
        headers: dict[str, str] | None = None,
        limit: int | None = None,
        keep_latencies: bool = False,
        warmup: int = 0,
        rate: float | None = None,
        signature: ModelSignature | None = None,
        hints: Hints | None = None,
        requests: list[dict[str, np.ndarray]] | None = None,
        retry_unavailable: bool = False,
        own_connections: bool = False,
    ) -> None:
        """``retry_unavailable``: the clients' gRPC retry policy retries a request that
        failed UNAVAILABLE (its connection broke: a proxy went away) up to twice, as a
        client of several proxies should. ``own_connections``: each thread opens its own
        connection (by default gRPC shares one among a process's channels)."""
        self.address = address
        self.channel_args = channel_args(retry_unavailable=retry_unavailable,
                                         own_connection=own_connections)
        self.model = model
        self.concurrency = concurrency
        self.batch = batch
        self.headers = headers
        self.limit = limit
        self.keep_latencies = keep_latencies
        self.warmup = warmup  # per thread, sent before counting (connection set-up)
        self.rate = rate  # total requests per second across threads; None: as fast as possible
        self.signature = signature
        self.hints = hints
        self.requests = requests  # real request data to cycle through (per thread)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats = LoadStats()
        self._issued = 0
        self._threads: list[threading.Thread] = []
        self._crashed: list[BaseException] = []

    def _take_ticket(self) -> bool:
        with self._lock:
            if self.limit is not None and self._issued >= self.limit:
                return False
            self._issued += 1
            return True

    def _worker(self, seed: int) -> None:
        try:
            self._work(seed)
        except BaseException as exc:  # a crashed thread must fail the run, not freeze it
            with self._lock:
                self._crashed.append(exc)
            raise

    def _work(self, seed: int) -> None:
        client = grpcclient.InferenceServerClient(self.address, channel_args=self.channel_args)
        local = LoadStats()
        try:
            try:
                requests = self._requests(client, seed)
            except InferenceServerException as exc:  # cannot even describe the model
                with self._lock:
                    self._stats.failed += 1
                    self._stats.errors[f"signature: {exc.status() or exc}"] += 1
                return
            turn = 0
            for _ in range(self.warmup):
                if self._stop.is_set():
                    break
                with contextlib.suppress(InferenceServerException, StreamError):
                    self._send(client, requests[0])
            period = self.concurrency / self.rate if self.rate else 0.0
            next_at = time.perf_counter()
            while not self._stop.is_set() and self._take_ticket():
                if period:
                    next_at += period
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                inputs = requests[turn % len(requests)]
                turn += 1
                started = time.perf_counter()
                try:
                    self._send(client, inputs)
                    ok, error = True, ""
                except InferenceServerException as exc:
                    ok, error = False, str(exc.status() or "error")
                except StreamError as exc:
                    ok, error = False, f"stream: {str(exc)[:80]}"
                elapsed = (time.perf_counter() - started) * 1e3
                with self._lock:
                    if ok:
                        self._stats.ok += 1
                    else:
                        self._stats.failed += 1
                        self._stats.errors[error] += 1
                    if self.keep_latencies:
                        local.latencies_ms.append(elapsed)
        finally:
            client.close()
            with self._lock:
                self._stats.latencies_ms.extend(local.latencies_ms)

    def _requests(self, client: grpcclient.InferenceServerClient, seed: int
                  ) -> list[_Request]:
        sig = self.signature or fetch_signature(client, self.model, self.headers)
        arrays = self.requests or [random_inputs(sig, self.batch, seed=seed, hints=self.hints)]
        # Unary inputs are built once (their cost is not the server's); a stream's per call.
        return [_Request(sig, a, None if sig.decoupled else infer_inputs(grpcclient, sig, a))
                for a in arrays]

    def _send(self, client: grpcclient.InferenceServerClient, request: _Request) -> None:
        """One inference: unary, or for a decoupled model one stream read to its end."""
        if request.inputs is None:
            stream_infer(client, request.sig, request.arrays, headers=self.headers,
                         timeout=30)
        else:
            client.infer(self.model, request.inputs, headers=self.headers, client_timeout=30)

    def start(self) -> LoadGenerator:
        self._threads = [
            threading.Thread(target=self._worker, args=(i,), daemon=True, name=f"load-{i}")
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def counts(self) -> tuple[int, int]:
        """(ok, failed) so far."""
        with self._lock:
            return self._stats.ok, self._stats.failed

    def wait(self) -> LoadStats:
        """Join the threads; raises :class:`LoadError` if one of them crashed (its counts
        would otherwise look like a quiet, successful run)."""
        for thread in self._threads:
            thread.join()
        if self._crashed:
            raise LoadError(f"{len(self._crashed)} load thread(s) crashed: "
                            f"{self._crashed[0]!r}") from self._crashed[0]
        return self._stats

    def stop(self) -> LoadStats:
        self._stop.set()
        return self.wait()


def send(address: str, count: int, **options: object) -> LoadStats:
    """Send exactly ``count`` inferences and return their stats."""
    return LoadGenerator(address, limit=count, **options).start().wait()  # type: ignore[arg-type]
