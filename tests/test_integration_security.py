"""Security end to end on a real stack started with ``--tls``: Envoy over mutual TLS,
clients refused at the handshake or for the node id they claim (seen in the control
plane's log and metrics), named tokens with roles, secrets never world-readable."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tests.rollout_helpers import envoy_weights
from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.client import ApiClient
from turnout.config import ControlPlaneConfig
from turnout.errors import ApiError
from turnout.tokens import Role, mint
from xds_server import type_urls as t
from xds_server.pki import LocalCA

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls-stack")
    # Pushes wait for the stack's own Envoys: a silent stranger holds none up.
    info = stack.up(directory, tls=True, progress=print, expected_proxies=("envoy-*",))
    try:
        yield info, ApiClient(info.api_url, info.token)
    finally:
        stack.down(directory)


def _refused_metric(info: stack.StackInfo) -> dict[str, float]:
    with urllib.request.urlopen(info.api_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {m[1]: float(m[2]) for m in
            re.finditer(r'turnout_xds_refused_total\{reason="(\w+)"\} ([0-9.e+]+)', text)}


def _secure_channel(port: int, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    """A TLS channel to the control plane's xDS port (its certificate names localhost)."""
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                   options=[("grpc.ssl_target_name_override", "localhost")])


async def _ads_attempt(port: int, node_id: str, credentials: grpc.ChannelCredentials
                       ) -> grpc.StatusCode | str:
    """Open an ADS stream claiming ``node_id``; the status it ends with, or "served" if a
    response came back."""
    async with _secure_channel(port, credentials) as channel:
        call = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )(timeout=5)
        try:
            await call.write(discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id=node_id, cluster="turnout"), type_url=t.CLUSTER))
            response = await call.read()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        if response is grpc.aio.EOF:
            return await call.code()
        call.cancel()
        return "served"


def _credentials(ca: Path, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        ca.read_bytes(), key.read_bytes() if key else None, cert.read_bytes() if cert else None)


def test_envoy_over_mtls_switches_weights_under_load_without_failures(env):
    info, client = env
    status = client.status()
    assert status["xds_transport"]["transport"] == "mtls"
    assert [p["in_sync"] for p in status["xds"]["proxies"]] == [True]
    load = LoadGenerator(info.ingress, model="classifier", concurrency=4).start()
    try:
        time.sleep(0.5)
        for green in (10, 50, 100, 50, 0):
            reply = client.set_traffic(green=green)
            assert reply["push"]["converged"], reply
            assert envoy_weights(info) == {"blue": 100 - green, "green": green}
            time.sleep(0.3)
    finally:
        stats = load.stop()
    print(f"mTLS: 5 weight changes under load: {stats.ok} ok, {stats.failed} failed")
    assert stats.failed == 0, stats.errors
    assert stats.ok > 200


def test_clients_without_a_valid_certificate_or_claiming_another_node_are_refused(
        env, tmp_path):
    info, _ = env
    pki = Path(info.directory) / "pki"
    ca = pki / "ca.pem"
    stranger = LocalCA.create(tmp_path / "other-ca").issue_client("x", ("envoy-0",))
    other_node = LocalCA(pki).issue_client("client-intruder", ("envoy-9",))
    good = (pki / "client-envoy-0.pem", pki / "client-envoy-0.key")
    before = _refused_metric(info)

    async def attempts() -> dict[str, object]:
        return {
            "no certificate": await _ads_attempt(info.xds_port, "envoy-0",
                                                 _credentials(ca, None, None)),
            "untrusted certificate": await _ads_attempt(
                info.xds_port, "envoy-0", _credentials(ca, stranger.cert, stranger.key)),
            "certificate for another node": await _ads_attempt(
                info.xds_port, "envoy-0", _credentials(ca, other_node.cert, other_node.key)),
            "its own node": await _ads_attempt(
                info.xds_port, "envoy-9", _credentials(ca, other_node.cert, other_node.key)),
            "the real client certificate": await _ads_attempt(
                info.xds_port, "envoy-0", _credentials(ca, *good)),
        }

    outcome = asyncio.run(attempts())
    assert outcome == {
        "no certificate": grpc.StatusCode.UNAVAILABLE,
        "untrusted certificate": grpc.StatusCode.UNAVAILABLE,
        "certificate for another node": grpc.StatusCode.PERMISSION_DENIED,
        "its own node": "served",
        "the real client certificate": "served",
    }, outcome
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = _refused_metric(info)
        grew = {k: after.get(k, 0) - before.get(k, 0) for k in
                ("no_certificate", "untrusted_certificate", "node_id")}
        if all(v >= 1 for v in grew.values()):
            break
        time.sleep(0.2)
    assert all(v >= 1 for v in grew.values()), grew
    log = Path(info.logs["controlplane"]).read_text()
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log
    assert "refused node envoy-0" in log and "not in the client certificate" in log
    # The real Envoy kept its stream through all of it.
    assert [p["in_sync"] for p in ApiClient(info.api_url, info.token).status()["xds"][
        "proxies"] if p["node"] == "envoy-0"] == [True]


def test_named_tokens_roles_and_the_actor_in_the_audit_log(env):
    info, admin = env
    directory = Path(info.directory)
    config_path = directory / "controlplane.json"
    config = ControlPlaneConfig.load(config_path)
    reader, read_secret = mint("dashboard", Role.READ)
    operator, operate_secret = mint("alice", Role.OPERATE)
    from dataclasses import replace
    replace(config, tokens=(*config.tokens, reader, operator)).write(config_path)
    assert config_path.stat().st_mode & 0o777 == 0o600
    assert read_secret not in config_path.read_text()

    anonymous = ApiClient(info.api_url, None)
    with pytest.raises(ApiError) as refused:
        anonymous.status()
    assert refused.value.status == 401
    with pytest.raises(ApiError) as refused:
        ApiClient(info.api_url, "tt_not-a-token").status()
    assert refused.value.status == 401
    ApiClient(info.api_url, read_secret).status()  # read may read
    with pytest.raises(ApiError) as refused:
        ApiClient(info.api_url, read_secret).command("pause")
    assert refused.value.status == 403 and "role read" in str(refused.value)
    with pytest.raises(ApiError) as refused:
        ApiClient(info.api_url, operate_secret).set_traffic(green=20)
    assert refused.value.status == 403 and "needs admin" in str(refused.value)
    # operate passes the role check and gets the real answer: nothing to pause.
    with pytest.raises(ApiError) as conflict:
        ApiClient(info.api_url, operate_secret, actor="spoofed-header").command("pause")
    assert conflict.value.status in (404, 409)
    admin.set_traffic(green=0)
    entry = admin.history(limit=1)[0]
    assert entry["kind"] == "weights" and entry["actor"] == "stack-admin"


# ---- issue 28: gates that cannot be lied to -------------------------------------------
def _fake_entries(n: int, *, cluster: str = "slot_green", status: str = "13",
                  at: float | None = None):  # type: ignore[no-untyped-def]
    from envoy.service.accesslog.v3 import als_pb2

    message = als_pb2.StreamAccessLogsMessage()
    when = time.time() if at is None else at
    for _ in range(n):
        e = message.http_logs.log_entry.add()
        e.common_properties.upstream_cluster = cluster
        e.common_properties.start_time.FromNanoseconds(int(when * 1e9))
        e.common_properties.duration.FromMilliseconds(1)
        e.request.path = "/inference.GRPCInferenceService/ModelInfer"
        e.response.response_code.value = 200
        e.response.response_trailers["grpc-status"] = status
    return message


async def _als_attempt(port: int, node_id: str, credentials: grpc.ChannelCredentials,
                       batches: int = 3) -> grpc.StatusCode | str:
    """Stream fabricated access-log entries claiming ``node_id``; how the stream ended."""
    from envoy.service.accesslog.v3 import als_pb2

    def messages():  # type: ignore[no-untyped-def]
        for i in range(batches):
            message = _fake_entries(800)
            if i == 0:
                message.identifier.node.id = node_id
            yield message

    async with _secure_channel(port, credentials) as channel:
        call = channel.stream_unary(
            "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
            request_serializer=als_pb2.StreamAccessLogsMessage.SerializeToString,
            response_deserializer=als_pb2.StreamAccessLogsResponse.FromString)
        try:
            await call(messages(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return "accepted"


def _traffic(info: stack.StackInfo) -> dict:
    request = urllib.request.Request(info.api_url + "/dashboard/state",
                                     headers={"Authorization": f"Bearer {info.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        import json
        return json.load(response)["traffic"]


def test_fake_access_log_entries_change_no_gate_value(env, tmp_path):
    """2,400 fabricated `grpc-status 13` entries for the candidate's cluster, sent with no
    certificate, with another node's certificate claiming envoy-0, and with a valid
    certificate for a node that holds no ADS stream: each stream is refused, and the
    candidate slot's error rate stays what real traffic made it (0, or no data)."""
    info, client = env
    client.set_traffic(green=0)
    pki = Path(info.directory) / "pki"
    ca = pki / "ca.pem"
    intruder = LocalCA(pki).issue_client("als-intruder", ("sidecar-7",))
    before = client.status()["access_log"]

    async def attempts() -> dict[str, object]:
        return {
            "no certificate": await _als_attempt(info.xds_port, "envoy-0",
                                                 _credentials(ca, None, None)),
            "another node's certificate": await _als_attempt(
                info.xds_port, "envoy-0", _credentials(ca, intruder.cert, intruder.key)),
            "own certificate, no ADS stream": await _als_attempt(
                info.xds_port, "sidecar-7", _credentials(ca, intruder.cert, intruder.key)),
        }

    outcome = asyncio.run(attempts())
    assert outcome == {
        "no certificate": grpc.StatusCode.UNAVAILABLE,
        "another node's certificate": grpc.StatusCode.PERMISSION_DENIED,
        "own certificate, no ADS stream": grpc.StatusCode.PERMISSION_DENIED,
    }, outcome
    time.sleep(0.3)
    green = _traffic(info)["green"]
    assert green.get("error_rate") in (None, 0.0), green
    after = client.status()["access_log"]
    assert after["accepted_from"] == "proxies holding an ADS stream, by client certificate"
    # The first message of each refused stream (the no-certificate one never got through).
    assert after["refused"].get("identity", 0) - before["refused"].get("identity", 0) >= 1600
    log = Path(info.logs["controlplane"]).read_text()
    assert "refused access-log stream" in log and "holds no ADS stream" in log


def test_metadata_and_client_error_floods_change_no_error_rate(env):
    """Public clients' cheap calls through the ingress (metadata of a model that does not
    exist, inference of it: NOT_FOUND) neither count as the slot's failures nor pull its
    latency down; client errors are reported apart."""
    import numpy as np
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    info, client = env
    client.set_traffic(green=0)
    time.sleep(0.3)
    received = client.status()["access_log"]["received"]
    load = LoadGenerator(info.ingress, model="classifier", concurrency=2, rate=40).start()
    flood = triton_grpc.InferenceServerClient(info.ingress)
    failures = 0
    try:
        time.sleep(1.0)
        for _ in range(300):
            try:
                flood.get_model_metadata("no-such-model")
            except InferenceServerException:
                failures += 1
        tensor = triton_grpc.InferInput("x", [1], "FP32")
        tensor.set_data_from_numpy(np.zeros(1, np.float32))
        for _ in range(100):
            try:
                flood.infer("no-such-model", [tensor])
            except InferenceServerException:
                failures += 1
        time.sleep(0.5)
        blue = _traffic(info)["blue"]
    finally:
        flood.close()
        stats = load.stop()
    assert failures == 400 and stats.failed == 0, stats.errors
    print(f"400 client-caused failures beside {stats.ok} good requests: blue {blue}")
    assert blue["error_rate"] == 0.0, blue
    assert blue["client_errors_rps"] * 10 >= 100, blue  # all 100 infers in the 10 s window
    time.sleep(0.5)  # Envoy flushes its access log every 100 ms
    counted = client.status()["access_log"]["received"] - received
    assert counted == stats.ok + 100, (counted, stats.ok, "metadata calls counted")


def _idle_sockets(api_url: str, n: int, source: str) -> list:
    import socket
    host, port = api_url.removeprefix("http://").rsplit(":", 1)
    opened = []
    for _ in range(n):
        sock = socket.socket()
        sock.bind((source, 0))  # another address on loopback: another client
        sock.connect((host, int(port)))
        sock.settimeout(0.05)
        opened.append(sock)
    return opened


def _closed(sock) -> bool:
    """Whether the server closed ``sock`` (EOF or reset); False while it stays open."""
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (OSError, ConnectionResetError):
        return True


def _api_refused(info: stack.StackInfo) -> dict[str, float]:
    with urllib.request.urlopen(info.api_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {m[1]: float(m[2]) for m in
            re.finditer(r'turnout_api_refused_total\{reason="(\w+)"\} ([0-9.e+]+)', text)}


def test_connection_floods_leave_the_api_and_pushes_working(env):
    """Idle connections from one stranger (beyond 128 closed at once; the rest closed when
    no request head arrives in 10 s), a trickled request head, and never-read dashboard
    streams (at most 8 from one address): /healthz answers and a push stays fast."""
    info, client = env
    before = _api_refused(info)
    flood = _idle_sockets(info.api_url, 300, "127.0.0.2")
    trickle = _idle_sockets(info.api_url, 1, "127.0.0.3")[0]
    trickle.sendall(b"GET /healthz HTTP/1.1\r\n")
    try:
        time.sleep(0.5)
        refused = sum(_closed(s) for s in flood)
        assert refused == 300 - 128, refused
        started = time.monotonic()
        with urllib.request.urlopen(info.api_url + "/healthz", timeout=5) as response:
            assert response.status == 200
        healthz_ms = (time.monotonic() - started) * 1e3
        push_ms = []
        for green in (10, 0, 10, 0):
            started = time.monotonic()
            client.set_traffic(green=green)  # returns once every Envoy ACKed
            push_ms.append((time.monotonic() - started) * 1e3)
        print(f"300 idle connections from one address: {refused} refused at once; /healthz "
              f"{healthz_ms:.1f} ms, pushes {[round(p, 1) for p in push_ms]} ms")
        assert max(push_ms) < 50, push_ms
        # Dashboard event streams nobody reads: 8 from one address, then 429.
        streams, statuses = [], []
        for _ in range(9):
            request = urllib.request.Request(info.api_url + "/dashboard/events",
                                             headers={"Authorization": f"Bearer {info.token}"})
            try:
                streams.append(urllib.request.urlopen(request, timeout=5))
                statuses.append(200)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        assert statuses == [200] * 8 + [429], statuses
        for stream in streams:
            stream.close()
        # A body is read only after the token is checked: 50 MB announced, none sent, 401.
        big = _idle_sockets(info.api_url, 1, "127.0.0.4")[0]
        big.settimeout(2.0)
        big.sendall(b"POST /v1/rollouts HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    b"application/json\r\nContent-Length: 50000000\r\n\r\n")
        answer = big.recv(200)
        big.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer
        # After the head timeout every idle or trickling connection is gone.
        time.sleep(10.5)
        trickle.sendall(b"Host: x\r\n")
        assert sum(_closed(s) for s in flood) == 300
        assert _closed(trickle)
    finally:
        for sock in [*flood, trickle]:
            sock.close()
    after = _api_refused(info)
    assert after.get("client_connections", 0) - before.get("client_connections", 0) == 172
    assert after.get("slow_request_head", 0) - before.get("slow_request_head", 0) == 129
    log = (Path(info.directory) / "logs" / "controlplane.log").read_text()
    lines = [line for line in log.splitlines() if "connections from 127.0.0.2" in line]
    assert 1 <= len(lines) <= 2, lines  # one line per 10 s, with the count it stood for


def test_a_silent_proxy_that_is_not_expected_holds_no_push_up(env):
    """A certificate holder outside ``expected_proxies`` (envoy-*) subscribes to every type
    and never ACKs: it is served, listed as not awaited, and every push converges on the
    real Envoy's ACK alone."""
    info, client = env
    pki = Path(info.directory) / "pki"
    silent = LocalCA(pki).issue_client("client-sidecar-7", ("sidecar-7",))
    credentials = _credentials(pki / "ca.pem", silent.cert, silent.key)

    async def scenario() -> tuple[list[float], list[bool], dict]:
        async with _secure_channel(info.xds_port, credentials) as channel:
            call = channel.stream_stream(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                "StreamAggregatedResources",
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
            for type_url in (t.CLUSTER, t.ENDPOINT, t.LISTENER, t.ROUTE):
                await call.write(discovery_pb2.DiscoveryRequest(
                    node=base_pb2.Node(id="sidecar-7", cluster="turnout"), type_url=type_url))
            first = await call.read()  # served, never answered
            assert first.type_url, first
            seconds, converged = [], []
            for green in (10, 0, 10, 0):
                started = time.monotonic()
                result = await asyncio.to_thread(client.set_traffic, green=green)
                seconds.append((time.monotonic() - started) * 1e3)
                converged.append(result["push"]["converged"])
            proxies = {p["node"]: p for p in
                       (await asyncio.to_thread(client.status))["xds"]["proxies"]}
            call.cancel()
            return seconds, converged, proxies

    seconds, converged, proxies = asyncio.run(scenario())
    print(f"a silent unexpected proxy connected: pushes ACKed in "
          f"{[round(s, 1) for s in seconds]} ms")
    assert converged == [True] * 4
    assert max(seconds) < 50, seconds
    assert (proxies["sidecar-7"]["awaited"], proxies["sidecar-7"]["in_sync"]) == (False, False)
    assert (proxies["envoy-0"]["awaited"], proxies["envoy-0"]["in_sync"]) == (True, True)


def test_node_id_and_access_log_batch_floods_leave_pushes_fast(env):
    """100 ADS streams claiming 1 MB node ids are each refused at once; while a proxy
    holding an ADS stream (so its access log is admitted) sends batches as fast as it can
    on two streams, every push is ACKed in under 50 ms, /healthz answers, and at most the
    node's budget is recorded."""
    info, client = env
    client.set_traffic(green=0)
    pki = Path(info.directory) / "pki"
    holder = LocalCA(pki).issue_client("client-sidecar-9", ("sidecar-9",))
    credentials = _credentials(pki / "ca.pem", holder.cert, holder.key)
    # One stream sends the most a message may carry, the other one and a half times that
    # (within gRPC's 512 KiB, so the receiver's own limit refuses it).
    sizes = (_fake_entries(2_000, cluster="slot_blue", status="0"),
             _fake_entries(3_000, cluster="slot_blue", status="0"))
    ads_method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/" \
                 "StreamAggregatedResources"

    async def scenario() -> tuple[list[float], list[object], int, float]:
        from envoy.service.accesslog.v3 import als_pb2
        stop = asyncio.Event()
        sent = 0

        async with _secure_channel(info.xds_port, credentials) as channel:
            ads = channel.stream_stream(
                ads_method, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
            await ads.write(discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id="sidecar-9", cluster="turnout"), type_url=t.CLUSTER))
            await ads.read()  # holds an ADS stream now

            async def batches(batch):  # type: ignore[no-untyped-def]
                nonlocal sent
                first = True
                while not stop.is_set():
                    message = als_pb2.StreamAccessLogsMessage()
                    message.CopyFrom(batch)
                    if first:
                        message.identifier.node.id = "sidecar-9"
                        first = False
                    sent += 1
                    yield message
                    await asyncio.sleep(0)

            async def log_stream(batch) -> object:  # type: ignore[no-untyped-def]
                call = channel.stream_unary(
                    "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
                    request_serializer=als_pb2.StreamAccessLogsMessage.SerializeToString,
                    response_deserializer=als_pb2.StreamAccessLogsResponse.FromString)
                try:
                    await call(batches(batch), timeout=30)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return "ended"

            async def long_node_id() -> object:
                async with _secure_channel(info.xds_port, credentials) as other:
                    call = other.stream_stream(
                        ads_method,
                        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                        response_deserializer=discovery_pb2.DiscoveryResponse.FromString)(
                        timeout=20)
                    try:
                        await call.write(discovery_pb2.DiscoveryRequest(
                            node=base_pb2.Node(id="n" * 1_000_000, cluster="turnout"),
                            type_url=t.CLUSTER))
                        await call.read()
                    except grpc.aio.AioRpcError as exc:
                        return exc.code()
                    return await call.code()

            logs = [asyncio.create_task(log_stream(batch)) for batch in sizes]
            # The node-id flood as found (200 streams at once, each kept): here 100, each
            # refused at once; the pushes are measured under the batch flood that goes on.
            refused = await asyncio.gather(*(long_node_id() for _ in range(100)))
            await asyncio.sleep(1.0)
            seconds = []
            for green in (10, 0, 10, 0, 10, 0):
                started = time.monotonic()
                reply = await asyncio.to_thread(client.set_traffic, green=green)
                seconds.append((time.monotonic() - started) * 1e3)
                assert reply["push"]["converged"], reply
            started = time.monotonic()
            await asyncio.to_thread(urllib.request.urlopen, info.api_url + "/healthz", None, 5)
            healthz = (time.monotonic() - started) * 1e3
            stop.set()
            await asyncio.gather(*logs)
            ads.cancel()
            return seconds, refused, sent, healthz

    status = client.status()["access_log"]
    before, received = status["refused"], status["received"]
    started = time.monotonic()
    seconds, refused, sent, healthz = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    status = client.status()["access_log"]
    after, recorded = status["refused"], status["received"] - received
    print(f"100 x 1 MB node ids refused, then {sent} batches of 2,000 and 3,000 entries ("
          f"{sizes[0].ByteSize() / 1e6:.1f} and {sizes[1].ByteSize() / 1e6:.1f} MB) from one "
          f"proxy on two streams: pushes {[round(s, 1) for s in seconds]} ms, /healthz "
          f"{healthz:.1f} ms; access-log refusals {after}")
    # Over 512 KiB: refused by gRPC before Python reads it (a long id that fits: the
    # 256-character rule, INVALID_ARGUMENT, tests/test_xds_streams.py).
    assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 100, set(map(str, refused))
    assert max(seconds) < 50, seconds
    assert sent > 10, sent  # the flood ran
    for reason in ("batch", "bytes"):  # each limit held its part of the flood
        assert after.get(reason, 0) > before.get(reason, 0), (reason, before, after)
    assert recorded <= 40_000 + 20_000 * elapsed, (recorded, elapsed)  # the entry budget
