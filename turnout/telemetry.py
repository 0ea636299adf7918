"""The control plane's own Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from turnout.controller.state import RolloutPhase

__all__ = ["CONTENT_TYPE_LATEST", "Telemetry"]


class Telemetry:
    """One registry per control plane (so in-process tests do not share globals)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.weight = Gauge("turnout_weight_percent", "Traffic percent per slot", ["slot"],
                            registry=r)
        self.push_seconds = Histogram(
            "turnout_push_convergence_seconds", "Publish to last ACK", registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.pushes = Counter("turnout_pushes_total", "Snapshot pushes by outcome",
                              ["outcome"], registry=r)
        self.phase = Gauge("turnout_rollout_phase", "1 for the current rollout phase",
                           ["phase"], registry=r)
        self.step = Gauge("turnout_rollout_step", "Current step (1-based, 0 before)",
                          registry=r)
        self.gate_rounds = Counter("turnout_gate_rounds_total", "Gate rounds by phase",
                                   ["phase"], registry=r)
        self.gate_value = Gauge("turnout_gate_value", "Last measured value per metric",
                                ["metric"], registry=r)
        self.xds_refused = Counter(
            "turnout_xds_refused_total", "ADS clients refused: no_certificate, "
            "untrusted_certificate (at the TLS handshake) or node_id (claimed an id its "
            "certificate does not name)", ["reason"], registry=r)
        self.api_refused = Counter("turnout_api_refused_total",
                                   "API calls refused for their token", ["reason"], registry=r)
        self.connected = Gauge("turnout_connected_proxies", "Connected Envoy streams",
                               registry=r)

    def set_weights(self, weights: dict[str, int]) -> None:
        for slot, value in weights.items():
            self.weight.labels(slot=slot).set(value)

    def set_phase(self, phase: RolloutPhase, step: int) -> None:
        for candidate in RolloutPhase:
            self.phase.labels(phase=str(candidate)).set(1 if candidate is phase else 0)
        self.step.set(step + 1)

    def record_round(self, gate_round: dict) -> None:
        self.gate_rounds.labels(phase=gate_round["phase"]).inc()
        for m in gate_round["measurements"]:
            if m.get("value") is not None:
                self.gate_value.labels(metric=m["metric"]).set(m["value"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
