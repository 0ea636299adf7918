"""The control plane's own Prometheus metrics (``GET /metrics``), named by Prometheus'
conventions (``_total`` counters, ``_seconds`` durations, base units, bounded labels).

    turnout_weight_percent{slot}                  traffic percent per slot
    turnout_rollout_phase{phase}                  1 for the current phase, 0 for the others
    turnout_rollout_step                          current step, 1-based (0 before the first)
    turnout_rollout_info{rollout,model}           1, naming the current rollout
    turnout_rollout_deadline_timestamp_seconds    when the rollout's progress deadline ends
    turnout_rollbacks_total{reason}               rollbacks started (gate, unhealthy, manual)
    turnout_gate_rounds_total{phase}              gate rounds by verdict
    turnout_gate_measurements_total{metric,phase} measurements by metric and verdict
    turnout_gate_value{metric}                    last measured value per metric
    turnout_push_convergence_seconds              publish to last ACK
    turnout_pushes_total{outcome}                 pushes by outcome
    turnout_xds_nacks_total{type}                 NACKs received per resource type
    turnout_connected_proxies                     connected ADS streams
    turnout_proxies_in_sync                       of those, holding the current config
    turnout_slot_ready_endpoints{slot}            ready Triton servers per slot
    turnout_slot_endpoints{slot}                  configured Triton servers per slot
    turnout_xds_refused_total{reason}             ADS clients refused (TLS, node id)
    turnout_api_refused_total{reason}             API calls and connections refused (token,
                                                  connections, slow_request_head)
    turnout_access_log_refused_total{reason}      access-log entries refused (identity,
                                                  stale, future, rate, batch;
                                                  bytes: messages refused unread)
    turnout_webhook_deliveries_total{outcome}     notification deliveries by outcome
"""

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
        self.access_log_refused = Counter(
            "turnout_access_log_refused_total", "Access-log entries refused: identity (the "
            "stream's node holds no ADS stream or may not be claimed), stale or future "
            "(completed outside the accepted time), rate (over the node's budget), batch "
            "(a message over the entry limit)", ["reason"], registry=r)
        self.api_refused = Counter("turnout_api_refused_total",
                                   "API calls refused for their token", ["reason"], registry=r)
        self.connected = Gauge("turnout_connected_proxies", "Connected Envoy streams",
                               registry=r)
        self.in_sync = Gauge("turnout_proxies_in_sync",
                             "Connected proxies that ACKed the current config", registry=r)
        self.nacks = Counter("turnout_xds_nacks", "NACKs received per resource type",
                             ["type"], registry=r)
        self.measurements = Counter("turnout_gate_measurements",
                                    "Gate measurements by metric and verdict",
                                    ["metric", "phase"], registry=r)
        self.rollbacks = Counter("turnout_rollbacks", "Rollbacks started, by cause",
                                 ["reason"], registry=r)
        self.rollout_info = Gauge("turnout_rollout_info", "1, naming the current rollout",
                                  ["rollout", "model"], registry=r)
        self.deadline = Gauge("turnout_rollout_deadline_timestamp_seconds",
                              "When the current rollout's progress deadline ends (0: none)",
                              registry=r)
        self.ready_endpoints = Gauge("turnout_slot_ready_endpoints",
                                     "Ready Triton servers per slot", ["slot"], registry=r)
        self.endpoints = Gauge("turnout_slot_endpoints", "Configured Triton servers per slot",
                               ["slot"], registry=r)
        self.webhooks = Counter("turnout_webhook_deliveries",
                                "Notification deliveries by outcome", ["outcome"], registry=r)
        self._nacks_seen: dict[str, int] = {}
        self._rollout: tuple[str, str] | None = None

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
            self.measurements.labels(metric=m["metric"], phase=m["phase"]).inc()
            if m.get("value") is not None:
                self.gate_value.labels(metric=m["metric"]).set(m["value"])

    def set_rollout(self, rollout_id: str, model: str, deadline_at: float,
                    finished: bool) -> None:
        if self._rollout != (rollout_id, model):
            if self._rollout is not None:
                self.rollout_info.remove(*self._rollout)
            self._rollout = (rollout_id, model)
            self.rollout_info.labels(rollout=rollout_id, model=model).set(1)
        self.deadline.set(0 if finished else deadline_at)

    def set_nacks(self, totals: dict[str, int]) -> None:
        """Bring the NACK counters up to the cache's totals (keyed by short type name)."""
        for type_name, total in totals.items():
            grown = total - self._nacks_seen.get(type_name, 0)
            if grown > 0:
                self.nacks.labels(type=type_name).inc(grown)
            self._nacks_seen[type_name] = total

    def set_slot_health(self, slot: str, ready: int, total: int) -> None:
        self.ready_endpoints.labels(slot=slot).set(ready)
        self.endpoints.labels(slot=slot).set(total)

    def render(self) -> bytes:
        return generate_latest(self.registry)
