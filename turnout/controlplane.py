"""The control plane process: the ADS server, slot health feeding EDS, weights, the API.

Run with ``python -m turnout.controlplane --config FILE``; ``turnout stack up`` does that.
Everything runs on one asyncio loop; pushes are serialised by a lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
from pathlib import Path

import aiohttp
import grpc

from gates.metrics import PrometheusProvider
from gates.metrics.access_log import AccessLogReceiver
from gates.metrics.sources import EnvoyStreamSource
from gates.metrics.windows import SlotWindows
from gates.shadow.compare import ShadowStats
from gates.shadow.observer import ShadowObserver
from triton_slots.deploy import bring_up, slot_set
from triton_slots.discovery import Resolver
from triton_slots.health import probe_all
from triton_slots.members import Members
from triton_slots.registry import open_registry
from triton_slots.slot import Endpoint, Slot
from turnout.config import ControlPlaneConfig
from turnout.controller.driver import RolloutController
from turnout.controller.machine import policy_of
from turnout.controller.state import RolloutPhase, RolloutState, rollback_cause
from turnout.errors import ConfigError
from turnout.logs import LogFormat, set_rollout
from turnout.logs import configure as configure_logs
from turnout.notify import Notifier, WebhookTarget, outgoing, transition_notices
from turnout.prometheus import TARGETS_FILE
from turnout.replicas import Replication
from turnout.slots import SlotServers
from turnout.store import Outgoing, open_store
from turnout.telemetry import Telemetry
from turnout.tokens import ApiToken
from turnout.topology import Shadow, build_snapshot, eds_health
from turnout.weights import Weights
from xds_server import (
    AdsServer,
    Convergence,
    Snapshot,
    SnapshotCache,
    type_urls,
)
from xds_server.cache import Publication, shortfall
from xds_server.delta import DeltaAdsServer
from xds_server.handshakes import HandshakeWatch
from xds_server.server import SERVER_OPTIONS, raise_open_files_limit, tune_gc
from xds_server.transport import choose as choose_transport

log = logging.getLogger("turnout.controlplane")


class ControlPlane:
    """Owns the snapshot cache and publishes Turnout's desired state to every Envoy.

    Not thread-safe: call its coroutines on the loop that ran :meth:`start`.
    """

    def __init__(self, config: ControlPlaneConfig, *, resolve: Resolver | None = None) -> None:
        """``resolve`` (name -> addresses) replaces the system resolver for slots found by
        DNS (tests)."""
        self.config = config
        self.cache = SnapshotCache()
        if config.expected_proxies:
            self.cache.expects = config.expects
        self.windows = SlotWindows()
        self.telemetry = Telemetry()
        self.transport = choose_transport(config.tls)
        self.access_log = AccessLogReceiver(
            self.windows, admit=self._telemetry_refusal, holds=self.cache.holds,
            on_refused=lambda reason, n: self.telemetry.access_log_refused.labels(
                reason=reason).inc(n))
        self.ads = AdsServer(self.cache, default_group=config.group,
                             refusal=self.transport.refusal, on_refused=self._refused)
        self.delta = DeltaAdsServer(self.cache, default_group=config.group,
                                    refusal=self.transport.refusal, on_refused=self._refused)
        self._handshakes = HandshakeWatch(self._refused) if config.tls else None
        self.webhooks = tuple(WebhookTarget.from_dict(w, f"webhooks[{i}]")
                              for i, w in enumerate(config.webhooks))
        self._told: tuple[str, RolloutPhase, int] | None = None
        self.store = open_store(config.store or config.state_path)
        self.notifier = Notifier(
            self.store,
            on_outcome=lambda outcome: self.telemetry.webhooks.labels(outcome=outcome).inc())
        self.weights = self.store.weights()
        self.shadow: Shadow | None = None
        self._observer: ShadowObserver | None = None
        self._observed: Shadow | None = None  # the shadow the observer compares
        self._observer_lock = asyncio.Lock()
        self._last_round: tuple[str, int, int] | None = None
        self._tokens: tuple[int, tuple[ApiToken, ...]] | None = None
        self._addresses: dict[str, str] = {}
        self.telemetry.set_weights(self.weights.as_dict())
        registry_root = Path(config.registry_root or config.state_dir / "registry")
        self.controller = RolloutController(
            self, self.store,
            registry=open_registry(config.store, registry_root,
                                   cache=config.state_dir / "registry-cache"),
            provider=PrometheusProvider(config.prometheus_url) if config.prometheus_url
            else None,
            tick_s=config.tick_s,
            stream=EnvoyStreamSource(self.windows),
            on_change=self._rollout_changed,
            outbox=self._outbox,
        )
        self.replication = Replication(
            self, self.store, replica=config.replica or f"{socket.gethostname()}-{os.getpid()}")
        if self.replication.shared:
            self.cache.on_streams_changed = self.replication.report_soon
        self.health: dict[Endpoint, bool] = {}
        self.slot_servers = SlotServers(self.store)
        self.members = Members(config.slots, bring_up=self._bring_up_server,
                               set_of=self._slot_set_refs, on_change=self._members_changed,
                               resolve=resolve, stored=self.slot_servers.stored)
        self._members_task: asyncio.Task | None = None
        self.last_push: Convergence | None = None
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self._grpc: grpc.aio.Server | None = None
        self._http: aiohttp.ClientSession | None = None
        self._health_task: asyncio.Task | None = None
        self._api_runner: object | None = None
        self.xds_port = config.xds_port
        self.api_port = config.api_port

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for slot in self.members.slots.values() for e in slot.endpoints]

    # ---- what the rollout driver uses (turnout.controller.ports.TrafficPlane) ------------
    @property
    def ingress_address(self) -> str:
        return self.config.ingress_address

    @property
    def preview_key(self) -> str:
        return self.config.preview_key

    def slot(self, name: str) -> Slot:
        self.config.slot(name)  # ConfigError naming the slots there are
        return self.members.slot(name)

    def deploying(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Held while a deploy writes slot ``name``: discovery admits no server meanwhile."""
        return self.members.deploying(name)

    # ---- slot membership (triton_slots.members) -------------------------------------
    def _bring_up_server(self, slot: str, endpoint: Endpoint) -> list[str]:
        return bring_up(self.controller.registry, slot, endpoint,
                        repository=self.members.slot(slot).repository,
                        peers=tuple(self.endpoints),
                        progress=lambda line: log.info("bring-up: %s", line))

    def _slot_set_refs(self, slot: str) -> list[str]:
        return [f"{r.ref}@{r.digest}" for r in slot_set(self.controller.registry, slot)]

    def _members_changed(self) -> None:
        """A server admitted or gone: Prometheus's targets, then a probe and an EDS push."""
        self._write_targets()
        task = asyncio.create_task(self._probe_and_publish(always=True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _write_targets(self) -> None:
        path = self.config.state_dir / TARGETS_FILE
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self.members.prometheus_targets(), indent=1))
        os.replace(partial, path)

    def tokens(self) -> tuple[ApiToken, ...]:
        """The API tokens: from ``controlplane.json`` beside the state when it exists (read
        again when it changes, so `turnout token create` needs no restart), else the
        config's."""
        path = self.config.state_dir / "controlplane.json"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return self.config.tokens
        if self._tokens is None or self._tokens[0] != mtime:
            try:
                tokens = ControlPlaneConfig.load(path).tokens
            except ConfigError as exc:
                log.error("keeping the previous API tokens: %s", exc)
                tokens = self._tokens[1] if self._tokens else self.config.tokens
            self._tokens = (mtime, tokens)
        return self._tokens[1]

    def _telemetry_refusal(self, node_id: str, context: grpc.aio.ServicerContext
                           ) -> str | None:
        """Why a stream may not report requests for ``node_id``: gates decide from real
        traffic, so only a proxy that holds an ADS stream, under the same identity rule as
        ADS (mTLS: its certificate names the node; plaintext: loopback peers only)."""
        if not self.cache.holds(node_id):
            return "the node holds no ADS stream"
        return self.transport.reporter_refusal(node_id, context.auth_context(), context.peer())

    def _refused(self, reason: str) -> None:
        """A proxy refused on the ADS port: by its certificate or the node id it claimed."""
        self.telemetry.xds_refused.labels(reason=reason).inc()

    def desired_snapshot(self) -> Snapshot:
        return build_snapshot(
            ingress_host=self.config.ingress_host,
            ingress_port=self.config.ingress_port,
            slots=self.members.slots,
            health=eds_health(self.members.slots, self.health),
            weights=self.weights,
            resolve=self._resolve,
            preview_key=self.config.preview_key,
            access_log_cluster=self.config.access_log_cluster or None,
            grpc_target=self.config.grpc_target or None,
            idle_timeout_s=self.config.stream_idle_timeout_s,
            stream_max_age_s=self._stream_max_age_s(),
            shadow=self.shadow, tap=self.config.shadow_tap,
        )

    def _stream_max_age_s(self) -> float | None:
        """The bound on a long-lived stream's age: the running rollout's policy's
        ``streamMaxAge``, else the stack's ``stream_max_age_s`` (0: none)."""
        state = self.controller.current() if self.controller.busy else None
        if state is not None:
            age = policy_of(state).stream_max_age_s
            if age is not None:
                return age
        return self.config.stream_max_age_s or None

    def _resolve(self, host: str) -> str:
        """An IPv4 address for ``host`` (EDS needs addresses), cached; on failure the name
        is kept and logged, and Envoy's NACK will say why."""
        cached = self._addresses.get(host)
        if cached is None:
            try:
                cached = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
            except OSError as exc:
                log.error("cannot resolve slot endpoint host %s: %s", host, exc)
                return host
            self._addresses[host] = cached
        return cached

    async def start(self) -> None:
        """Probe slot health, publish the stored weights (no traffic moves on start-up),
        then serve ADS and the API."""
        from turnout.api import start_api

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        self._write_targets()
        self.health = await probe_all(self._http, self.endpoints)
        self.cache.set_snapshot(self.config.group, self.desired_snapshot())
        log.info("serving stored weights %s", self.weights.as_dict())
        self._grpc = grpc.aio.server(
            options=[
                *SERVER_OPTIONS,
                # A proxy cut off (a partition: no FIN, no RST) is found dead within about
                # 5 s, inside a push's default 10 s timeout: the push stops waiting for it
                # and it stops counting as connected. Envoys ping every 2 s (bootstrap),
                # jittered: their pings are welcome from 1 s apart.
                ("grpc.keepalive_time_ms", 2_000),
                ("grpc.keepalive_timeout_ms", 3_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            ]
        )
        self._grpc.add_generic_rpc_handlers((self.ads.handler(), self.delta.handler(),
                                             self.access_log.handler()))
        if self._handshakes is not None:
            self._handshakes.start()
        self.xds_port = self.transport.bind(
            self._grpc, f"{self.config.bind_host}:{self.config.xds_port}")
        await self._grpc.start()
        self._api_runner, self.api_port = await start_api(self)
        self._health_task = asyncio.create_task(self._watch_health())
        self._members_task = asyncio.create_task(self.members.run())
        self._report_health()
        self.replication.api_url = \
            f"{self.config.api_scheme}://{self.config.bind_host}:{self.api_port}"
        await self.replication.start()
        log.info("xDS (%s) on %s:%d, API on %s:%d", self.transport.name,
                 self.config.bind_host, self.xds_port, self.config.bind_host, self.api_port)
        if self.transport.name == "plaintext":
            log.warning("xDS is plaintext: any process that reaches %s:%d can read all "
                        "config and claim any node id (start the stack with --tls)",
                        self.config.bind_host, self.xds_port)

    async def stop(self) -> None:
        if self.replication.leading:  # what can go in 2 s goes; the rest waits in the store
            with contextlib.suppress(Exception):
                await self.notifier.drain(timeout=2.0)
        await self.replication.stop()
        await self.controller.stop()
        if self._observer is not None:
            await self._observer.stop()
        if self._members_task is not None:
            self._members_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._members_task
            await self.members.stop()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self._api_runner is not None:
            await self._api_runner.cleanup()  # type: ignore[attr-defined]
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._handshakes is not None:
            self._handshakes.stop()
        await self.notifier.close()  # what is undelivered stays in the store
        if self._http is not None:
            await self._http.close()
        self.store.close()

    # ---- what replication uses (turnout.replicas.Plane) ----------------------------------
    async def start_leading(self) -> None:
        """This replica leads: resume the rollout in progress, if any, and deliver the
        notices the store holds."""
        await self.controller.start()
        self.notifier.start()

    async def stop_leading(self) -> None:
        await self.controller.stop()
        await self.notifier.stop()

    def sync_counts(self) -> tuple[str, int, int]:
        """The route version served here, the proxies connected, and how many hold it."""
        return self.cache.sync_counts(self.config.group, type_urls.ROUTE)

    async def set_weights(self, weights: Weights, *, actor: str = "api",
                          timeout: float | None = None) -> Convergence:
        """Record ``weights`` durably (with an audit entry), then push them."""
        self.store.set_weights(weights, actor=actor, message="weights set")
        return await self.apply_weights(weights, timeout=timeout)

    async def set_shadow(self, shadow: Shadow | None, *, timeout: float | None = None
                         ) -> Convergence:
        """Copy a share of live requests to a slot (or stop, with None) at today's weights
        (see :meth:`apply_weights`). Held by this replica only."""
        return await self.apply_weights(self.weights, shadow=shadow, timeout=timeout)

    def _check_shadow(self, shadow: Shadow | None) -> None:
        if shadow is None:
            return
        if not self.config.shadow_tap:
            raise ConfigError("shadow traffic needs shadow_tap (the tap filter on the "
                              "ingress) in the control-plane configuration")
        if not self.config.shadow_admins:
            raise ConfigError("shadow traffic needs shadow_admins (the admin URLs of the "
                              "proxies whose taps record both answers) in the control-plane "
                              "configuration")

    def shadow_figures(self) -> ShadowStats | None:
        """The running shadow comparison's figures (None when no shadow step runs)."""
        observer = self._observer
        return observer.stats if observer is not None and self.shadow is not None else None

    async def _follow_shadow(self) -> None:
        """Compare while copies flow: bring the observer in line with the shadow published
        last (a fresh comparison for each new shadow, none without). Serialised, and always
        toward the latest shadow, so pushes that overtake each other (a rollback during a
        shadow push) end with the state of the last. Copies made before its tap sessions
        open are not compared (neither side is recorded)."""
        async with self._observer_lock:
            wanted = self.shadow
            if wanted == self._observed:
                return
            if self._observer is not None:
                await self._observer.stop()
                self._observer = None
            self._observed = wanted
            if wanted is not None:
                self._observer = ShadowObserver(self.config.shadow_admins)
                await self._observer.start()
                if not await self._observer.wait_connected():
                    log.warning("shadow: not every proxy's tap answered: %s",
                                self._observer.session_errors)

    async def apply_weights(self, weights: Weights, *, timeout: float | None = None,
                            quorum: float = 1.0, early: bool = False,
                            shadow: Shadow | None = None) -> Convergence:
        """Push ``weights`` and ``shadow`` (copies of live requests to a slot; None stops
        them), already recorded durably by the caller (an RDS-only change), and wait for
        the connected Envoys' answers (see ``SnapshotCache.publish``). The lock covers
        building and publishing only, never the wait for ACKs: a proxy that does not
        answer cannot hold up the next push (a rollback, say)."""
        fleet = self.replication.shared  # min_proxies then counts every replica's
        self._check_shadow(shadow)
        async with self._lock:
            self.shadow = shadow
            self.weights = weights
            self.telemetry.set_weights(weights.as_dict())
            publication = self.cache.publish(
                self.config.group, self.desired_snapshot(),
                min_proxies=0 if fleet else self.config.min_proxies, quorum=quorum,
                early=early)
        await self._follow_shadow()
        result = await self._settle(publication, timeout)
        if fleet and self.replication.leading:
            result = await self._with_replicas(result, timeout, quorum)
        log.info("weights %s: %s in %.1f ms%s", weights.as_dict(),
                 "converged" if result.converged else "NOT converged", result.seconds * 1e3,
                 f"; stragglers {[o.node_id for o in result.stragglers]}"
                 if result.stragglers else "")
        return result

    async def _with_replicas(self, local: Convergence, timeout: float | None,
                             quorum: float) -> Convergence:
        """The leader's push result, counting the proxies of every other replica (their
        reports in the shared store), and at least ``min_proxies`` across the fleet."""
        remote = await self.replication.fleet(local.versions["rds"],
                                              timeout or self.config.push_timeout_s)
        outcomes = [*local.outcomes, *remote]
        answered = sum(1 for o in outcomes if o.outcome in ("acked", "nacked"))
        outcomes += shortfall(self.config.min_proxies, answered)
        seconds = max([local.seconds, *(o.seconds for o in remote if o.seconds is not None)])
        result = dataclasses.replace(local, outcomes=tuple(outcomes), seconds=seconds,
                                     quorum=quorum)
        self.last_push = result
        return result

    async def publish(self, snapshot: Snapshot, *, verify: bool = True) -> Convergence:
        """Publish an arbitrary snapshot (tests and tools); normal pushes use set_weights."""
        async with self._lock:
            publication = self.cache.publish(self.config.group, snapshot, verify=verify)
        return await self._settle(publication, None)

    async def _settle(self, publication: Publication, timeout: float | None) -> Convergence:
        """Every push's result goes through here."""
        result = await self.cache.wait(publication, timeout or self.config.push_timeout_s)
        self.last_push = result
        self.telemetry.pushes.labels(
            outcome="converged" if result.converged else "not_converged").inc()
        self.telemetry.push_seconds.observe(result.seconds)
        return result

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            await self._probe_and_publish()

    async def _probe_and_publish(self, *, always: bool = False) -> None:
        """Probe every admitted server; publish EDS when health (or, with ``always``, the
        membership) changed."""
        assert self._http is not None
        health = await probe_all(self._http, self.endpoints)
        if health == self.health and not always:
            return
        changed = {f"{e.grpc_address}": ok for e, ok in health.items()
                   if self.health.get(e) != ok}
        if changed:
            log.info("endpoint health changed: %s", changed)
        async with self._lock:
            self.health = health
            publication = self.cache.publish(self.config.group, self.desired_snapshot())
        self._report_health()
        settle = asyncio.create_task(self._settle(publication, None))
        self._background.add(settle)
        settle.add_done_callback(self._background.discard)

    def _report_health(self) -> None:
        for name, slot in self.members.slots.items():
            healthy = sum(1 for e in slot.endpoints if self.health.get(e, False))
            self.telemetry.set_slot_health(name, healthy, len(slot.endpoints))
            self.controller.slot_health(name, healthy, len(slot.endpoints))

    def _rollout_changed(self, state: RolloutState) -> None:
        told = self._told  # the last transition seen (updated by _notify)
        if state.phase is RolloutPhase.ROLLING_BACK and \
                (told is None or told[:2] != (state.id, state.phase)):
            self.telemetry.rollbacks.labels(reason=rollback_cause(state)).inc()
        set_rollout(None if state.finished else state.id,
                    None if state.finished else state.step + 1)
        self._told = (state.id, state.phase, state.step)
        self.notifier.wake()  # its notices were stored with it
        self.telemetry.set_phase(state.phase, state.step)
        self.telemetry.set_rollout(state.id, state.model, state.deadline_at, state.finished)
        key = (state.id, state.step, len(state.rounds))
        if state.rounds and key != self._last_round:
            self.telemetry.record_round(state.rounds[-1])
        self._last_round = key

    def _outbox(self, old: RolloutState | None, new: RolloutState) -> list[Outgoing]:
        """The deliveries telling of ``old`` -> ``new``, stored with it (the driver's
        ``outbox``); never raises: a notification problem must not touch the rollout."""
        try:
            policy = policy_of(new)
            previous = (old.id, old.phase, old.step) if old is not None else None
            notices = transition_notices(previous, new, len(policy.steps))
            if not notices:
                return []
            names = [*(f"webhooks[{i}]" for i in range(len(self.config.webhooks))),
                     *(f"spec.notifications[{i}]" for i in range(len(policy.notifications)))]
            return outgoing(notices, [*self.config.webhooks, *policy.notifications], names)
        except Exception:
            log.exception("notifications for rollout %s failed", new.id)
            return []

    def metrics(self) -> bytes:
        proxies = self.cache.status(self.config.group)["proxies"]
        self.telemetry.connected.set(len(proxies))  # type: ignore[arg-type]
        self.telemetry.in_sync.set(sum(1 for p in proxies if p["in_sync"]))  # type: ignore[union-attr,index]
        self.telemetry.set_nacks({type_urls.SHORT_NAMES.get(t, t): n
                                  for t, n in self.cache.nacks.items()})
        return self.telemetry.render()

    def status(self) -> dict[str, object]:
        """What this replica knows; one cut from its store still answers (the rollout is
        then unknown here and ``store_error`` says why)."""
        try:
            rollout, store_error = self.controller.describe(), ""
            notices: dict[str, int] | None = self.store.delivery_counts()
        except self.store.ERRORS as exc:
            rollout, notices = None, None
            store_error = f"state store {self.store.where} unreachable: {exc}"
        return {
            "ingress": self.config.ingress_address,
            "weights": self.weights.as_dict(),
            "slots": {
                name: [
                    {"endpoint": e.grpc_address, "http": e.http_url,
                     "ready": self.health.get(e, False)}
                    for e in slot.endpoints
                ]
                for name, slot in self.members.slots.items()
            },
            "discovery": self.members.describe(),
            "xds": self.cache.status(self.config.group),
            "xds_transport": self.transport.describe(),
            "access_log": {
                "accepted_from": self.transport.reporters,
                "received": self.access_log.received,
                "refused": dict(self.access_log.refused),
                "ignored": dict(self.access_log.ignored),
            },
            "last_push": self.last_push.as_dict() if self.last_push else None,
            "rollout": rollout,
            "store_error": store_error,
            "notifications": notices,  # the outbox: pending, delivered, failed
            "replica": self.replication.describe(),
            "replicas": [r.as_dict() for r in self.replication.peers],
        }


async def _run(config: ControlPlaneConfig) -> None:
    limit = raise_open_files_limit()
    log.info("up to %d open files (one per connected proxy)", limit)
    plane = ControlPlane(config)
    await plane.start()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Announce the bound ports for whoever started us.
    ports = config.state_dir / "controlplane.ports"
    partial = ports.with_suffix(".partial")
    partial.write_text(json.dumps({"xds_port": plane.xds_port, "api_port": plane.api_port}))
    os.replace(partial, ports)
    await stop.wait()
    log.info("stopping")
    await plane.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Turnout control plane (ADS + API)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--store", default=None,
                        help="postgresql://... to run as one of several replicas sharing "
                             "that database (default: the config's, else SQLite in the "
                             "state directory)")
    parser.add_argument("--replica", default=None,
                        help="this replica's name (default: host-pid)")
    parser.add_argument("--log-format", choices=[f.value for f in LogFormat],
                        default=os.environ.get("TURNOUT_LOG_FORMAT", "text"),
                        help="text (default) or json: one object per line with the rollout "
                             "id and step. Env: TURNOUT_LOG_FORMAT.")
    args = parser.parse_args(argv)
    configure_logs(LogFormat(args.log_format))
    config = ControlPlaneConfig.load(args.config)
    overrides = {k: v for k, v in (("store", args.store), ("replica", args.replica)) if v}
    asyncio.run(_run(dataclasses.replace(config, **overrides) if overrides else config))


if __name__ == "__main__":
    main()
