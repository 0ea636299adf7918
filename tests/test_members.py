"""Slot membership without servers: sources (static, DNS through a resolver table), the
slot's model set, and the admission rules (after bring-up only; never with a set a deploy
replaced meanwhile; gone at once; a failing source keeps the last servers)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from tests.zoo import write_model
from triton_slots.deploy import slot_set
from triton_slots.discovery import DiscoveryError, choose
from triton_slots.discovery.dns import DnsServers
from triton_slots.members import RETRY_S, Members, MembershipError, UnknownServer
from triton_slots.registry import LocalRegistry, Stage
from triton_slots.slot import DnsName, Endpoint, Slot
from turnout.config import ControlPlaneConfig
from turnout.errors import ConfigError
from turnout.tokens import Role, mint

DNS = DnsName("pool.test", 8001, 8000, 8002, interval_s=0.5)


def test_dns_gives_one_server_per_address_sorted_and_deduplicated():
    source = DnsServers(DNS, resolve=lambda name: ["10.0.0.2", "10.0.0.1", "10.0.0.2",
                                                   "fd00::1"])
    assert [e.grpc_address for e in source.servers()] == [
        "10.0.0.1:8001", "10.0.0.2:8001", "[fd00::1]:8001"]
    assert source.servers()[2].http_url == "http://[fd00::1]:8000"
    assert source.servers()[0].metrics_target == "10.0.0.1:8002"
    assert source.describe() == "dns pool.test every 0.5s" and source.interval_s == 0.5


def test_a_name_that_does_not_resolve_is_a_discovery_error_naming_it():
    def fail(name: str) -> list[str]:
        raise OSError("[Errno -2] Name or service not known")

    with pytest.raises(DiscoveryError, match=r"^DNS name 'pool\.test' does not resolve: "
                                             r"\[Errno -2\] Name or service not known$"):
        DnsServers(DNS, resolve=fail).servers()


def test_the_system_resolver_reads_the_hosts_file():
    source = DnsServers(DnsName("localhost", 1, 2, 3))
    assert "127.0.0.1:1" in [e.grpc_address for e in source.servers()]


def test_choose_picks_dns_only_when_the_slot_names_it():
    static = Slot("blue", (Endpoint("h", 1, 2, 3),))
    assert choose(static).servers() == static.endpoints
    assert isinstance(choose(Slot("green", dns=DNS)), DnsServers)


@pytest.mark.parametrize("fields, words", [
    ({"name": ""}, "dns.name must be a host name"),
    ({"grpc_port": 0}, "dns.grpc_port must be a port 1..65535, got 0"),
    ({"http_port": 65536}, "dns.http_port must be a port 1..65535, got 65536"),
    ({"metrics_port": True}, "dns.metrics_port must be a port 1..65535, got True"),
    ({"interval_s": 0.05}, "dns.interval_s must be 0.1..3600 seconds, got 0.05"),
])
def test_bad_dns_settings_are_named(fields, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        DnsName(**{**DNS.as_dict(), **fields})


def _config(tmp_path: Path, slots: dict) -> ControlPlaneConfig:
    admin, _ = mint("a", Role.ADMIN)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"state_dir": str(tmp_path), "ingress_port": 1,
                                "tokens": [admin.as_dict()], "slots": slots}))
    return ControlPlaneConfig.load(path)


def _ep(host: str) -> dict:
    return {"host": host, "http_port": 1, "grpc_port": 2, "metrics_port": 3}


def test_duplicate_endpoints_and_an_endpoint_in_both_slots_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="slot blue: endpoint h:2 is listed twice"):
        _config(tmp_path, {"blue": {"endpoints": [_ep("h"), _ep("h")]}})
    with pytest.raises(ConfigError, match=r"endpoint h:2 is in both slots \(blue and green\)"):
        _config(tmp_path, {"blue": {"endpoints": [_ep("h")]},
                           "green": {"endpoints": [_ep("h")]}})
    with pytest.raises(ConfigError, match=r"dns\.grpc_port must be a port"):
        _config(tmp_path, {"green": {"dns": {**DNS.as_dict(), "grpc_port": "x"}}})
    config = _config(tmp_path, {"blue": {"endpoints": [_ep("h")]},
                                "green": {"dns": DNS.as_dict()}})
    assert config.slots["green"].dns == DNS
    assert ControlPlaneConfig.from_dict(json.loads(config.to_json())).slots == config.slots


def test_a_slots_set_is_what_it_holds_else_what_is_active(tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    for kind, version in (("pair", "v1"), ("pair", "v2"), ("text", "v1"), ("text", "v2")):
        registry.push(write_model(tmp_path / kind / version, kind), name=kind,
                      version=version)
    registry.set_stage("pair", "v1", Stage.ACTIVE, slot="blue")
    registry.set_stage("text", "v1", Stage.ACTIVE, slot="blue")
    registry.set_stage("pair", "v2", Stage.CANDIDATE, slot="green")
    registry.set_stage("text", "v2", Stage.FAILED, slot="green")
    assert [r.ref for r in slot_set(registry, "green")] == ["pair:v2", "text:v1"]
    assert [r.ref for r in slot_set(registry, "blue")] == ["pair:v1", "text:v1"]


class World:
    """Members over a resolver table and a bring-up that records and can block or fail."""

    def __init__(self) -> None:
        self.answer: list[str] | Exception = []
        self.fail: dict[str, str] = {}
        self.brought: list[str] = []
        self.set_version = 1
        self.bump_during_bring_up = False
        self.changes = 0
        self.release = threading.Event()
        self.release.set()
        self.now = 1e9

    def resolve(self, name: str) -> list[str]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return list(self.answer)

    def bring_up(self, slot: str, endpoint: Endpoint) -> list[str]:
        self.release.wait(5)
        self.brought.append(endpoint.host)
        if endpoint.host in self.fail:
            raise RuntimeError(self.fail[endpoint.host])
        if self.bump_during_bring_up:
            self.set_version += 1
        return ["m:v1"]

    def members(self) -> Members:
        def changed() -> None:
            self.changes += 1
        return Members({"blue": Slot("blue", (Endpoint("b", 1, 2, 3),)),
                        "green": Slot("green", dns=DNS)},
                       bring_up=self.bring_up, set_of=lambda slot: [str(self.set_version)],
                       on_change=changed, resolve=self.resolve, clock=lambda: self.now)


async def _settle(members: Members) -> None:
    """One look, then until every bring-up it started has ended."""
    await members.refresh()
    for _ in range(500):
        if not members.describe()["green"]["pending"]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)


def _hosts(members: Members, slot: str = "green") -> list[str]:
    return [e.host for e in members.slot(slot).endpoints]


def test_a_new_server_is_admitted_only_after_its_bring_up():
    async def main() -> None:
        world = World()
        members = world.members()
        world.release.clear()
        world.answer = ["10.0.0.1"]
        members._slots["green"].next_at = 0
        await members.refresh()
        await asyncio.sleep(0.05)
        assert _hosts(members) == [] and members.describe()["green"]["pending"] == [
            "10.0.0.1:8001"]
        world.release.set()
        await _settle(members)
        assert _hosts(members) == ["10.0.0.1"] and world.changes == 1
        assert _hosts(members, "blue") == ["b"], "a static slot is left alone"
        # Looked at again: nothing new, nothing brought up twice.
        members._slots["green"].next_at = 0
        await _settle(members)
        assert world.brought == ["10.0.0.1"] and world.changes == 1
    asyncio.run(main())


def test_a_server_whose_set_changed_during_bring_up_waits_for_the_next_look():
    async def main() -> None:
        world = World()
        members = world.members()
        world.answer = ["10.0.0.1"]
        world.bump_during_bring_up = True
        members._slots["green"].next_at = 0
        await _settle(members)
        assert _hosts(members) == [] and world.changes == 0
        world.bump_during_bring_up = False
        members._slots["green"].next_at = 0
        await _settle(members)
        assert _hosts(members) == ["10.0.0.1"]
    asyncio.run(main())


def test_failures_gone_servers_and_a_failing_source():
    async def main() -> None:
        world = World()
        members = world.members()
        world.answer = ["10.0.0.1", "10.0.0.2"]
        world.fail["10.0.0.2"] = "explicit model control is off"
        members._slots["green"].next_at = 0
        await _settle(members)
        assert _hosts(members) == ["10.0.0.1"]
        assert members.describe()["green"]["failed"] == {
            "10.0.0.2:8001": "explicit model control is off"}
        del world.fail["10.0.0.2"]
        world.now += RETRY_S - 0.01  # a failed server waits RETRY_S before its next try
        members._slots["green"].next_at = 0
        await _settle(members)
        assert _hosts(members) == ["10.0.0.1"] and world.brought.count("10.0.0.2") == 1
        world.now += 0.01
        members._slots["green"].next_at = 0
        await _settle(members)
        assert sorted(_hosts(members)) == ["10.0.0.1", "10.0.0.2"]
        assert members.describe()["green"]["failed"] == {}
        changes = world.changes
        world.answer = ["10.0.0.2"]
        members._slots["green"].next_at = 0
        await members.refresh()  # a server gone leaves at once, no bring-up involved
        assert _hosts(members) == ["10.0.0.2"] and world.changes == changes + 1
        world.answer = OSError("no such name")
        members._slots["green"].next_at = 0
        await members.refresh()
        assert _hosts(members) == ["10.0.0.2"]
        assert members.describe()["green"]["error"] == \
            "DNS name 'pool.test' does not resolve: no such name"
        assert members.prometheus_targets() == [
            {"targets": ["b:3"], "labels": {"slot": "blue"}},
            {"targets": ["10.0.0.2:8002"], "labels": {"slot": "green"}}]
    asyncio.run(main())


def test_a_deploy_holds_the_slot_so_no_server_is_admitted_meanwhile():
    async def main() -> None:
        world = World()
        members = world.members()
        world.answer = ["10.0.0.1"]
        with members.deploying("green"):
            members._slots["green"].next_at = 0
            await members.refresh()
            await asyncio.sleep(0.1)
            assert world.brought == [], "a bring-up ran during the deploy"
        await _settle(members)
        assert _hosts(members) == ["10.0.0.1"]
        with members.deploying("nowhere"):  # an unknown slot holds nothing
            pass
    asyncio.run(main())


def test_what_operators_read_in_the_log_and_status(caplog):
    import logging

    async def main() -> None:
        world = World()
        members = world.members()
        world.fail["10.0.0.2"] = "boom"
        world.answer = ["10.0.0.1", "10.0.0.2"]
        members._slots["green"].next_at = 0
        with caplog.at_level(logging.INFO, logger="turnout.members"):
            await _settle(members)
            world.answer = OSError("gone")
            for _ in range(2):  # said once, not at every look
                members._slots["green"].next_at = 0
                await members.refresh()
            world.answer = ["10.0.0.2"]  # still failing, not tried again before RETRY_S
            members._slots["green"].next_at = 0
            await members.refresh()
        messages = caplog.messages
        admitted = [m for m in messages if "admitted with" in m]
        assert len(admitted) == 1 and admitted[0].startswith(
            "slot green: 10.0.0.1:8001 admitted with m:v1 in ")
        assert "slot green: 10.0.0.2:8001 not admitted (retried in 5s): boom" in messages
        assert messages.count("slot green keeps its 1 server(s): DNS name 'pool.test' does "
                              "not resolve: gone") == 1
        assert "slot green: server(s) gone, out of EDS now: 10.0.0.1:8001" in messages
        assert members.describe()["green"] == {
            "source": "dns pool.test every 0.5s", "servers": [], "pending": [],
            "failed": {"10.0.0.2:8001": "boom"}, "error": None}
        assert members.describe()["blue"]["source"] == "static"
    asyncio.run(main())


def test_a_slot_is_looked_at_again_only_after_its_interval():
    now = [100.0]

    async def main() -> None:
        world = World()
        looks: list[float] = []

        def resolve(name: str) -> list[str]:
            looks.append(now[0])
            return []
        members = Members({"green": Slot("green", dns=DNS)}, bring_up=world.bring_up,
                          set_of=lambda slot: ["1"], on_change=lambda: None,
                          resolve=resolve, clock=lambda: now[0])
        await members.refresh()
        now[0] = 100.49
        await members.refresh()
        now[0] = 100.5
        await members.refresh()
        assert looks == [100.0, 100.5]
        assert members._slots["green"].next_at == 101.0
    asyncio.run(main())


def test_bring_up_and_the_set_are_asked_about_the_right_slot():
    asked: list[tuple[str, str]] = []

    async def main() -> None:
        def bring_up(slot: str, endpoint: Endpoint) -> list[str]:
            asked.append(("bring_up", slot))
            return []

        def set_of(slot: str) -> list[str]:
            asked.append(("set", slot))
            return []
        members = Members({"green": Slot("green", dns=DNS)}, bring_up=bring_up,
                          set_of=set_of, on_change=lambda: None,
                          resolve=lambda name: ["10.0.0.1"])
        await _settle(members)
        assert [e.host for e in members.slot("green").endpoints] == ["10.0.0.1"]
    asyncio.run(main())
    assert asked == [("set", "green"), ("bring_up", "green"), ("set", "green")]


def test_run_keeps_looking_after_a_failure_and_stop_cancels_bring_ups(caplog):
    import logging

    async def main() -> None:
        world = World()
        world.release.clear()  # bring-ups block until released
        members = world.members()
        calls = {"n": 0}
        original = members.refresh

        async def flaky() -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("bug")
            await original()
        members.refresh = flaky  # type: ignore[method-assign]
        world.answer = ["10.0.0.1"]
        with caplog.at_level(logging.ERROR, logger="turnout.members"):
            task = asyncio.create_task(members.run(tick_s=0.01))
            for _ in range(200):
                if members.describe()["green"]["pending"]:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
        assert calls["n"] >= 2 and "slot discovery failed; trying again" in caplog.messages
        assert members.describe()["green"]["pending"] == ["10.0.0.1:8001"]
        pending = list(members._tasks)
        assert pending
        world.release.set()
        await members.stop()
        assert all(t.done() for t in pending)
    asyncio.run(main())


class Listed:
    """The store's side of `turnout slots`: each slot's list as an operator last set it."""

    def __init__(self) -> None:
        self.lists: dict[str, tuple[Endpoint, ...]] = {}

    def __call__(self, slot: str) -> tuple[Endpoint, ...] | None:
        return self.lists.get(slot)


def _edited_world() -> tuple[World, Listed, Members]:
    world, listed = World(), Listed()
    members = Members({"blue": Slot("blue", (Endpoint("b", 1, 2, 3),)),
                       "green": Slot("green", dns=DNS)},
                      bring_up=world.bring_up, set_of=lambda slot: ["1"],
                      on_change=lambda: None, resolve=world.resolve, stored=listed,
                      clock=lambda: world.now)
    return world, listed, members


def test_an_operators_list_replaces_the_configured_one_and_is_read_every_second():
    async def main() -> None:
        world, listed, members = _edited_world()
        assert members._slots["blue"].source.interval_s == 1.0
        await members.refresh()
        assert _hosts(members, "blue") == ["b"]
        assert members.describe()["blue"]["source"] == "static"
        listed.lists["blue"] = (Endpoint("b", 1, 2, 3), Endpoint("c", 1, 2, 3))
        world.now += 1.0
        await members.refresh()  # another replica's edit: read from the store
        for _ in range(100):
            if len(_hosts(members, "blue")) == 2:
                break
            await asyncio.sleep(0.01)
        assert _hosts(members, "blue") == ["b", "c"] and world.brought == ["c"]
        assert members.describe()["blue"]["source"] == "static, edited by an operator"
        # This replica's edit: followed at once, no look needed.
        members.listed("blue", (Endpoint("c", 1, 2, 3),))
        assert _hosts(members, "blue") == ["c"]
    asyncio.run(main())


def test_edits_are_checked_against_both_slots_and_the_source():
    _world, listed, members = _edited_world()
    c = Endpoint("c", 1, 2, 3)
    assert members.edited("blue", add=c) == (Endpoint("b", 1, 2, 3), c)
    assert members.edited("blue", remove="b:2") == ()
    listed.lists["blue"] = (c,)  # what is stored now counts, not what was admitted
    assert members.edited("blue", add=Endpoint("b", 1, 2, 3)) == (c, Endpoint("b", 1, 2, 3))
    with pytest.raises(MembershipError, match=r"^c:2 is already a server of slot blue$"):
        members.edited("blue", add=Endpoint("c", 7, 2, 9))  # one server per gRPC address
    with pytest.raises(UnknownServer, match=r"^b:2 is not a server of slot blue \(its "
                                            r"servers: c:2\)$"):
        members.edited("blue", remove="b:2")
    with pytest.raises(MembershipError, match=r"^slot green's servers come from dns "
                                              r"pool.test every 0.5s: change what"):
        members.edited("green", add=c)
    # A server the other slot has (admitted, being brought up or failing) is refused.
    members._slots["green"].pending.add(Endpoint("10.0.0.9", 1, 8001, 3))
    with pytest.raises(MembershipError, match=r"^10.0.0.9:8001 is a server of slot green: "
                                              r"a server serves one slot$"):
        members.edited("blue", add=Endpoint("10.0.0.9", 1, 8001, 3))
    listed.lists["blue"] = ()
    with pytest.raises(UnknownServer, match=r"\(its servers: none\)$"):
        members.edited("blue", remove="c:2")


def test_a_failed_server_no_longer_listed_is_forgotten():
    async def main() -> None:
        world = World()
        members = world.members()
        world.answer = ["10.0.0.2"]
        world.fail["10.0.0.2"] = "unreachable"
        members._slots["green"].next_at = 0
        await _settle(members)
        assert members.describe()["green"]["failed"] == {"10.0.0.2:8001": "unreachable"}
        world.answer = []
        members._slots["green"].next_at = 0
        await members.refresh()
        assert members.describe()["green"]["failed"] == {}
        assert members._slots["green"].retry_at == {}
        # Listed again at once: tried at once (its old back-off went with it).
        del world.fail["10.0.0.2"]
        world.answer = ["10.0.0.2"]
        members._slots["green"].next_at = 0
        await _settle(members)
        assert _hosts(members) == ["10.0.0.2"]
    asyncio.run(main())


def _operated(tmp_path: Path) -> tuple[World, Members, object]:
    """Members over a real (SQLite) store's lists, as the control plane wires them."""
    from turnout.slots import SlotServers
    from turnout.store import SqliteStore

    world = World()
    store = SqliteStore(tmp_path / "state.db")
    servers = SlotServers(store)
    members = Members({"blue": Slot("blue", (Endpoint("b", 1, 2, 3),)),
                       "green": Slot("green", (Endpoint("g", 1, 2, 3),))},
                      bring_up=world.bring_up, set_of=lambda slot: ["1"],
                      on_change=lambda: None, stored=servers.stored, clock=lambda: world.now)
    return world, members, (servers, store)


def test_an_edit_is_stored_with_who_made_it_and_followed_at_once(tmp_path):
    from turnout.weights import Weights

    async def main() -> None:
        world, members, (servers, store) = _operated(tmp_path)
        c = Endpoint("c", 4, 5, 6)
        servers.add(members, "blue", c, actor="ops")
        assert store.slot_servers() == {"blue": [Endpoint("b", 1, 2, 3).as_dict(), c.as_dict()]}
        assert members.servers("blue")[1] == (c, "bringing up", "")
        await _settle(members)
        assert _hosts(members, "blue") == ["b", "c"] and world.brought == ["c"]
        servers.remove(members, "blue", "b:2", actor="ops2", weights=Weights())
        assert _hosts(members, "blue") == ["c"]  # out at once, no look needed
        assert [e.as_dict() for e in servers.stored("blue")] == [c.as_dict()]
        assert servers.stored("green") is None
        assert [(e.kind, e.actor, e.message) for e in store.history()] == [
            ("servers", "ops", "server c:5 added to slot blue"),
            ("servers", "ops2", "server b:2 removed from slot blue")]
        # The last server of a slot that takes traffic stays; of an idle slot it may go.
        with pytest.raises(MembershipError, match=r"^c:5 is the last server of slot blue, "
                                                  r"which takes 100% of the traffic: move "):
            servers.remove(members, "blue", "c:5", actor="ops", weights=Weights())
        servers.remove(members, "blue", "c:5", actor="ops", weights=Weights.with_green(100))
        assert _hosts(members, "blue") == [] and servers.stored("blue") == ()
        with pytest.raises(MembershipError, match="g:2 is a server of slot green"):
            servers.add(members, "blue", Endpoint("g", 1, 2, 3), actor="ops")
        assert len(store.history()) == 3, "a refused edit wrote nothing"
    asyncio.run(main())


def test_what_slots_list_shows_for_each_server(tmp_path):
    from turnout.slots import describe
    from turnout.weights import Weights

    async def main() -> None:
        world, members, (servers, _store) = _operated(tmp_path)
        for host in ("c", "d", "e"):
            servers.add(members, "blue", Endpoint(host, 4, 5, 6), actor="ops")
        world.fail["d"] = "explicit model control is off"
        await _settle(members)
        members._slots["blue"].pending.add(Endpoint("e2", 4, 5, 6))
        members._slots["blue"].found += (Endpoint("e2", 4, 5, 6), Endpoint("f", 4, 5, 6))
        ready = {Endpoint("b", 1, 2, 3)}
        shown = describe(members, Weights.with_green(30), lambda e: e in ready)
        rows = {r["endpoint"]: (r["state"], r["reason"]) for r in shown["blue"]["servers"]}
        assert rows == {
            "b:2": ("serving", ""), "c:5": ("not ready", "admitted, failing its health checks"),
            "d:5": ("failed", "explicit model control is off"),
            "e:5": ("not ready", "admitted, failing its health checks"),
            "e2:5": ("bringing up", ""), "f:5": ("waiting", "not looked at yet")}
        assert {k: shown["blue"][k] for k in ("source", "editable", "weight", "error")} == {
            "source": "static, edited by an operator", "editable": True, "weight": 70,
            "error": None}
        assert shown["green"]["weight"] == 30 and shown["green"]["source"] == "static"
        row = shown["blue"]["servers"][0]
        assert row == {"endpoint": "b:2", "host": "b", "http_port": 1, "grpc_port": 2,
                       "metrics_port": 3, "state": "serving", "reason": ""}
        assert members.editable("blue") and not Members(
            {"green": Slot("green", dns=DNS)}, bring_up=world.bring_up,
            set_of=lambda slot: [], on_change=lambda: None).editable("green")
    asyncio.run(main())


def test_a_static_list_is_read_again_every_second_only_when_an_operator_may_edit_it():
    from triton_slots.discovery.static import StaticServers

    fixed = StaticServers((Endpoint("b", 1, 2, 3),))
    assert fixed.interval_s == 3600.0 and fixed.describe() == "static"
    assert fixed.servers() == (Endpoint("b", 1, 2, 3),) and fixed.describe() == "static"
    stored: list[tuple[Endpoint, ...] | None] = [None]
    edited = StaticServers((Endpoint("b", 1, 2, 3),), stored=lambda: stored[0])
    assert edited.interval_s == 1.0
    assert edited.describe() == "static"  # nothing read yet: no claim of an edit
    assert edited.servers() == (Endpoint("b", 1, 2, 3),) and edited.describe() == "static"
    stored[0] = ()
    assert edited.servers() == () and edited.describe() == "static, edited by an operator"
