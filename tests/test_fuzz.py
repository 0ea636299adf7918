"""Property-based tests (hypothesis): the policy loader, the weights parser and the ADS
server take any input without crashing, growing without bound, or disturbing others.
Bounded in time: a few hundred examples each, no deadline per example."""

from __future__ import annotations

import asyncio
import string

import grpc
import yaml
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.xds_fakes import GROUP, AdsHarness, snapshot
from turnout.errors import ConfigError
from turnout.policy import Policy, PolicyError, load_text
from turnout.weights import Weights
from xds_server import type_urls as t
from xds_server.snapshot import MAX_MEMOS

FAST = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)

# ---- the policy loader -----------------------------------------------------------------

KEYS = ["apiVersion", "kind", "metadata", "name", "spec", "model", "strategy", "steps",
        "weight", "bake", "gates", "metrics", "builtin", "max", "maxRatio", "minDelta",
        "rollback", "automatic", "validation", "checks", "convergence", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["turnout/v1", "Rollout", "10s", "m:v1", "error_rate"]))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)),
    max_leaves=40)


def _only_policy_errors(text: str) -> None:
    try:
        policy = load_text(text, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.problems, "a PolicyError must say what is wrong"
        for problem in exc.problems:
            assert str(problem).startswith("fuzz.yaml:"), problem
            assert problem.line >= 1
    else:
        assert isinstance(policy, Policy)


@settings(FAST, max_examples=300)
@given(documents)
def test_any_yaml_document_is_a_policy_or_positioned_problems(doc):
    _only_policy_errors(yaml.safe_dump({"apiVersion": "turnout/v1", "kind": "Rollout",
                                        "metadata": {"name": "f"}, "spec": doc}))
    _only_policy_errors(yaml.safe_dump(doc))


@settings(FAST, max_examples=300)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_any_text_is_a_policy_or_positioned_problems(text):
    _only_policy_errors(text)


@settings(FAST, max_examples=100)
@given(st.text(alphabet=string.printable, max_size=200), st.integers(1, 8))
def test_anchors_and_aliases_never_expand(text, depth):
    bomb = 'a: &a ["x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(depth)) + text
    _only_policy_errors(bomb)


# ---- the weights parser ----------------------------------------------------------------

values = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000),
                   st.floats(allow_nan=True), st.text(max_size=5),
                   st.lists(st.integers(), max_size=2))


@settings(FAST, max_examples=500)
@given(st.dictionaries(st.sampled_from(["blue", "green", "red", "", "Blue"]), values,
                       max_size=3))
def test_weights_are_valid_or_refused_with_a_message(mapping):
    try:
        weights = Weights.from_mapping(mapping)
    except ConfigError as exc:
        assert str(exc)
        return
    assert weights.blue + weights.green == 100
    assert all(type(v) is int and 0 <= v <= 100 for v in (weights.blue, weights.green))
    for slot, value in mapping.items():
        assert getattr(weights, slot) == value


# ---- the ADS server --------------------------------------------------------------------

TYPES = [t.CLUSTER, t.ENDPOINT, t.LISTENER, t.ROUTE, "type.googleapis.com/nope", ""]
NAMES = ["ingress", "ingress_routes", "slot_blue", "slot_green", "ghost", ""]
requests = st.builds(
    dict,
    type_url=st.sampled_from(TYPES),
    names=st.lists(st.sampled_from(NAMES), max_size=3),
    version=st.sampled_from(["", "stale", "LATEST"]),
    nonce=st.sampled_from(["", "0", "bogus", "LAST"]),
    error=st.one_of(st.none(), st.text(max_size=10)),
    node=st.booleans(),
    raw=st.one_of(st.none(), st.binary(max_size=40)),
)
streams = st.lists(st.tuples(st.sampled_from(["node-f", "", "envoy-0"]),
                            st.sampled_from([GROUP, "", "no-such-group"]),
                            st.lists(requests, min_size=1, max_size=12)),
                   min_size=1, max_size=3)


async def _fuzz_stream(port: int, node: str, cluster: str, script: list[dict]) -> None:
    """Send ``script`` on one stream, echoing the last nonce/version where asked."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)()
        last = discovery_pb2.DiscoveryResponse()

        async def reader() -> None:
            nonlocal last
            async for raw in call:
                last = discovery_pb2.DiscoveryResponse.FromString(raw)
                assert last.nonce and last.type_url in t.ALL_TYPES

        task = asyncio.ensure_future(reader())
        try:
            for i, step in enumerate(script):
                if step["raw"] is not None:
                    payload = step["raw"]  # malformed bytes, most of the time
                else:
                    request = discovery_pb2.DiscoveryRequest(
                        type_url=step["type_url"], resource_names=step["names"],
                        version_info=last.version_info if step["version"] == "LATEST"
                        else step["version"],
                        response_nonce=last.nonce if step["nonce"] == "LAST" else step["nonce"])
                    if step["node"] or i == 0:
                        request.node.id = node
                        request.node.cluster = cluster
                    if step["error"] is not None:
                        request.error_detail.message = step["error"]
                        request.error_detail.code = 3
                    payload = request.SerializeToString()
                await call.write(payload)
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the server may end a stream it finds malformed; that is its right
        finally:
            call.cancel()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _scenario(plan) -> None:
    harness = await AdsHarness.start()
    try:
        harness.cache.set_snapshot(GROUP, snapshot(0))
        watcher = harness.client("watcher")
        await watcher.request(t.ROUTE, names=("ingress_routes",))
        first = await watcher.response()
        await watcher.ack(first, names=("ingress_routes",))
        await asyncio.gather(*(_fuzz_stream(harness.port, node, cluster, script)
                               for node, cluster, script in plan))
        # The well-behaved stream is unaffected: the next push reaches it.
        harness.cache.set_snapshot(GROUP, snapshot(30))
        pushed = await watcher.response(timeout=5)
        assert pushed.version_info != first.version_info
        await watcher.ack(pushed, names=("ingress_routes",))
        # Nothing left behind by the fuzzing streams.
        for _ in range(100):
            proxies = harness.cache.status(GROUP)["proxies"]
            if [p["node"] for p in proxies] == ["watcher"]:
                break
            await asyncio.sleep(0.02)
        assert [p["node"] for p in harness.cache.status(GROUP)["proxies"]] == ["watcher"]
        # Claimed unknown groups were served the default group and left nothing behind.
        assert harness.cache.groups() == [GROUP]
        for group in harness.cache.groups():
            state = harness.cache.snapshot(group)
            assert state is not None and len(state._encoded) <= MAX_MEMOS
            assert len(harness.cache._group(group).streams) == 1
        await watcher.close()
    finally:
        await harness.stop()


@settings(FAST, max_examples=40)
@given(streams)
def test_ads_server_survives_any_request_sequence_and_others_are_unaffected(plan):
    asyncio.run(_scenario(plan))
