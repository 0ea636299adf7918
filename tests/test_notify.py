"""Notifications: which transitions are told, the signed JSON and Slack bodies, and
delivery from the store's outbox to a real local HTTP receiver (in order, retried,
kept across restarts, stopped when deposed)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from turnout.controller.state import RolloutPhase, RolloutState
from turnout.errors import ConfigError
from turnout.notify import (
    BodyFormat,
    Notification,
    NotificationKind,
    Notifier,
    WebhookTarget,
    outgoing,
    sign,
    transition_notices,
)
from turnout.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from turnout.store import SqliteStore

K = NotificationKind


def state(phase: RolloutPhase, step: int = -1, reason: str = "", rollout: str = "r1"
          ) -> RolloutState:
    return RolloutState(id=rollout, name="canary", model="m:v2", digest="d",
                        candidate_slot="green", stable_slot="blue", stable_model="m:v1",
                        policy={}, source="p.yaml", created_at=0.0, phase=phase, step=step,
                        target_weight=10 if step >= 0 else 0, reason=reason)


@pytest.mark.parametrize("previous, now, kinds", [
    (None, state(RolloutPhase.PENDING), [K.STARTED]),
    (("old", RolloutPhase.PROMOTED, 3), state(RolloutPhase.PENDING), [K.STARTED]),
    (("r1", RolloutPhase.VALIDATING, -1), state(RolloutPhase.SHIFTING, 0), [K.STEP_ENTERED]),
    (("r1", RolloutPhase.SHIFTING, 0), state(RolloutPhase.BAKING, 0), []),
    (("r1", RolloutPhase.BAKING, 0), state(RolloutPhase.SHIFTING, 1), [K.STEP_ENTERED]),
    (("r1", RolloutPhase.BAKING, 1),
     state(RolloutPhase.ROLLING_BACK, 1, "gate failed at 10%: p99"),
     [K.GATE_FAILED, K.ROLLING_BACK]),
    (("r1", RolloutPhase.BAKING, 1),
     state(RolloutPhase.ROLLING_BACK, 1, "abort requested by alice"), [K.ROLLING_BACK]),
    (("r1", RolloutPhase.ROLLING_BACK, 1), state(RolloutPhase.ROLLED_BACK, 1),
     [K.ROLLED_BACK]),
    (("r1", RolloutPhase.BAKING, 1), state(RolloutPhase.PAUSED, 1), [K.PAUSED]),
    (("r1", RolloutPhase.BAKING, 2), state(RolloutPhase.PROMOTED, 2), [K.PROMOTED]),
    (("r1", RolloutPhase.ROLLING_BACK, 0), state(RolloutPhase.ABORTED, 0), [K.ABORTED]),
    (("r1", RolloutPhase.DEPLOYING, -1), state(RolloutPhase.FAILED), [K.FAILED]),
    (("r1", RolloutPhase.PAUSED, 1), state(RolloutPhase.PAUSED, 1), []),
])
def test_each_transition_is_told_once(previous, now, kinds):
    notices = transition_notices(previous, now, steps=3)
    assert [n.kind for n in notices] == kinds
    for n in notices:
        assert (n.rollout, n.name, n.model, n.step, n.steps, n.candidate_slot) == \
            ("r1", "canary", "m:v2", now.step + 1, 3, "green")


def test_a_rollback_from_a_shadow_step_carries_its_comparison():
    """The latest shadow round's figures (this step's, else the last step's) go with the
    gate_failed, rolling_back and rolled_back notices, and nowhere else."""
    shadow = {"compared": 9, "disagreed": 3, "examples": [{"request": "ab", "why": "Y"}]}
    plain = {"at": 1.0, "window_s": 3, "measurements": []}
    failing = state(RolloutPhase.ROLLING_BACK, 0, "gate failed at 0%: disagreement")
    failing.rounds = [{**plain, "evidence": {"shadow": {"compared": 1}}},
                      {**plain, "evidence": {"shadow": shadow}}, plain]
    assert failing.last_shadow() == shadow
    notices = transition_notices(("r1", RolloutPhase.BAKING, 0), failing, steps=2)
    assert [(n.kind, n.shadow) for n in notices] == [(K.GATE_FAILED, shadow),
                                                     (K.ROLLING_BACK, shadow)]
    assert notices[0].as_dict()["shadow"] == shadow
    done = state(RolloutPhase.ROLLED_BACK, 1)
    done.previous_rounds = [{**plain, "evidence": {"shadow": shadow}}]
    [rolled] = transition_notices(("r1", RolloutPhase.ROLLING_BACK, 1), done, steps=2)
    assert rolled.shadow == shadow
    moving_on = state(RolloutPhase.SHIFTING, 1)  # out of a shadow step that passed
    moving_on.previous_rounds = [{**plain, "evidence": {"shadow": shadow}}]
    entered = transition_notices(("r1", RolloutPhase.BAKING, 0), moving_on, steps=2)
    assert [n.kind for n in entered] == [K.STEP_ENTERED]
    assert entered[0].shadow is None and "shadow" not in entered[0].as_dict()
    assert state(RolloutPhase.BAKING, 0).last_shadow() is None
    nothing = state(RolloutPhase.BAKING, 0)
    nothing.rounds = [plain, {**plain, "evidence": {"shadow": None}}]
    assert nothing.last_shadow() is None


def notice(kind: NotificationKind = K.PROMOTED, **extra) -> Notification:
    return Notification(kind, "r1", "canary", "m:v2", str(kind), 2, 3, 0, 50, "green",
                        "a message", **extra)


def test_json_body_is_signed_over_timestamp_and_body():
    target = WebhookTarget("http://127.0.0.1:1/hook", secret="s3cret")
    n = notice()
    body = target.body(n)
    headers = target.headers(n, body, "1700000000.000")
    assert json.loads(body) == {"type": "turnout.rollout.promoted", **n.as_dict()}
    assert headers[SIGNATURE_HEADER] == sign("s3cret", "1700000000.000", body)
    assert headers[SIGNATURE_HEADER].startswith("sha256=") and \
        len(headers[SIGNATURE_HEADER]) == 7 + 64
    assert sign("s3cret", "1700000000.001", body) != headers[SIGNATURE_HEADER]
    assert sign("other", "1700000000.000", body) != headers[SIGNATURE_HEADER]
    assert headers["X-Turnout-Delivery"] == headers["Idempotency-Key"] == n.id  # documented names
    assert SIGNATURE_HEADER not in WebhookTarget("http://h/x").headers(n, body, "1")


def test_slack_body_is_text_and_a_block():
    body = json.loads(WebhookTarget("https://hooks.example/x", BodyFormat.SLACK)
                      .body(notice(K.GATE_FAILED)))
    assert set(body) == {"text", "blocks"}
    assert "*canary* (m:v2) gate failed: step 2/3 at 50% on green. a message" in body["text"]
    assert body["blocks"][0]["text"]["text"] == body["text"]


@pytest.mark.parametrize("data, problem", [
    ({"url": "ftp://x"}, "must be http"),
    ({"url": "http://x", "format": "xml"}, "'xml' is not a valid BodyFormat"),
    ({"url": "http://x", "events": ["exploded"]}, "'exploded' is not a valid"),
    ({"url": "http://x", "secretEnv": "TURNOUT_WEBHOOK_TEST_UNSET"},
     "TURNOUT_WEBHOOK_TEST_UNSET is empty or unset"),
])
def test_bad_receivers_are_refused_with_a_message(data, problem):
    with pytest.raises(ConfigError, match=problem):
        WebhookTarget.from_dict(data)


def test_receiver_filters_kinds_and_reads_its_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv("TURNOUT_WEBHOOK_HOOK", "abc")
    target = WebhookTarget.from_dict({"url": "http://h/x", "secretEnv": "TURNOUT_WEBHOOK_HOOK",
                                      "events": ["promoted"]})
    assert target.secret == "abc"
    assert target.wants(notice(K.PROMOTED)) and not target.wants(notice(K.STARTED))


class Receiver:
    """A real HTTP receiver on loopback: records deliveries, can fail the first N."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.got: list[tuple[dict, dict]] = []
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        self.got.append((dict(request.headers), json.loads(await request.read())))
        return web.Response(status=204)

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}/hook"


def _queue(store: SqliteStore, notices: list[Notification], *targets: dict) -> None:
    """Store ``notices`` for ``targets`` as a decision's commit does."""
    store.commit(outbox=outgoing(notices, targets, [f"t{i}" for i in range(len(targets))]))


async def test_deliveries_arrive_in_order_signed_and_retried(tmp_path):
    receiver = Receiver(fail_first=2)
    runner, url = await receiver.start()
    outcomes: list[str] = []
    store = SqliteStore(tmp_path / "s.db")
    notifier = Notifier(store, backoff_s=0.01, on_outcome=outcomes.append)
    kinds = [K.STARTED, K.STEP_ENTERED, K.GATE_FAILED, K.ROLLING_BACK, K.ROLLED_BACK]
    sent = [notice(k) for k in kinds]
    try:
        _queue(store, sent, {"url": url, "secret": "k"})
        notifier.start()
        await notifier.drain(timeout=5)
    finally:
        await notifier.close()
        await runner.cleanup()
    assert [body["kind"] for _, body in receiver.got] == [str(k) for k in kinds]
    for (headers, body), made in zip(receiver.got, sent, strict=True):
        raw = json.dumps(body).encode()
        assert headers[SIGNATURE_HEADER] == sign("k", headers[TIMESTAMP_HEADER], raw)
        # The header names as docs/observability.md writes them.
        assert headers["Idempotency-Key"] == headers["X-Turnout-Delivery"] == made.id
    assert outcomes == ["retried", "retried"] + ["delivered"] * 5
    assert store.pending_deliveries() == []
    assert {row["state"] for row in store.deliveries()} == {"delivered"}
    assert max(row["attempts"] for row in store.deliveries()) == 3


async def test_a_dead_receiver_holds_up_only_its_own_notices(tmp_path):
    live = Receiver()
    runner, url = await live.start()
    store = SqliteStore(tmp_path / "s.db")
    notifier = Notifier(store, attempts=50, backoff_s=0.05, timeout_s=0.5)
    try:
        _queue(store, [notice(K.STARTED), notice(K.PROMOTED)], {"url": "http://127.0.0.1:9/hook"},
               {"url": url})
        notifier.start()
        deadline = time.monotonic() + 3
        while len(live.got) < 2:
            assert time.monotonic() < deadline, "the live receiver waited for the dead one"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
    finally:
        await notifier.close()
        await runner.cleanup()
    [first, second] = store.pending_deliveries()  # the dead one's, in order, retried
    assert (first.notice["kind"], second.notice["kind"]) == ("started", "promoted")
    assert first.attempts >= 2 and second.attempts == 0


async def test_a_restart_delivers_what_was_pending_in_order_without_starting_over(tmp_path):
    receiver = Receiver(fail_first=3)
    runner, url = await receiver.start()
    store = SqliteStore(tmp_path / "s.db")
    sent = [notice(k) for k in (K.STARTED, K.STEP_ENTERED, K.PROMOTED)]
    _queue(store, sent, {"url": url})
    first = Notifier(store, backoff_s=0.05)
    try:
        first.start()
        deadline = time.monotonic() + 3
        while receiver.calls < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await first.close()  # the control plane goes, nothing delivered yet
        assert [d.attempts for d in store.pending_deliveries()][1:] == [0, 0]
        tries = store.pending_deliveries()[0].attempts
        assert tries >= 2
        second = Notifier(SqliteStore(tmp_path / "s.db"), backoff_s=0.05)  # restarted
        second.start()
        await second.drain(timeout=5)
        await second.close()
    finally:
        await runner.cleanup()
    assert [body["id"] for _, body in receiver.got] == [n.id for n in sent]
    assert [row["attempts"] for row in store.deliveries()][-1] == 4  # counted on


async def test_a_notice_that_fails_every_attempt_is_kept_and_the_next_one_goes(tmp_path):
    receiver = Receiver(fail_first=2)
    runner, url = await receiver.start()
    store = SqliteStore(tmp_path / "s.db")
    outcomes: list[str] = []
    notifier = Notifier(store, attempts=2, backoff_s=0.01, on_outcome=outcomes.append)
    try:
        _queue(store, [notice(K.STARTED), notice(K.PROMOTED)], {"url": url})
        notifier.start()
        await notifier.drain(timeout=5)
    finally:
        await notifier.close()
        await runner.cleanup()
    assert [body["kind"] for _, body in receiver.got] == ["promoted"]
    assert outcomes == ["retried", "failed", "delivered"]
    rows = sorted(store.deliveries(), key=lambda r: r["seq"])
    assert [(r["state"], r["attempts"], r["error"]) for r in rows] == \
        [("failed", 2, "HTTP 503"), ("delivered", 1, "")]


async def test_a_deposed_leader_stops_delivering(tmp_path):
    receiver = Receiver(fail_first=1000)
    runner, url = await receiver.start()
    store = SqliteStore(tmp_path / "s.db")
    assert store.hold_leadership("a")
    _queue(store, [notice()], {"url": url})
    notifier = Notifier(store, backoff_s=0.01)
    try:
        assert SqliteStore(tmp_path / "s.db").hold_leadership("b")  # another took over
        notifier.start()
        await asyncio.sleep(2.5)  # two polls: a notifier that did not stop would try again
        assert receiver.calls == 1  # one attempt, whose record was refused: it stopped
    finally:
        await notifier.close()
        await runner.cleanup()
    assert store.pending_deliveries()[0].attempts == 0  # left for the leader


def test_a_secret_env_must_be_a_webhook_variable_and_logs_never_show_a_url_path(monkeypatch):
    monkeypatch.setenv("TURNOUT_ADMIN_TOKEN", "x" * 30)
    for name in ("TURNOUT_ADMIN_TOKEN", "HOME", "TURNOUT_WEBHOOK_"):
        with pytest.raises(ConfigError, match=r"secretEnv must name a variable starting with "
                                              r"TURNOUT_WEBHOOK_ \(a policy may not read"):
            WebhookTarget.from_dict({"url": "http://h/x", "secretEnv": name})
    monkeypatch.setenv("TURNOUT_WEBHOOK_OPS", "abc")
    assert WebhookTarget.from_dict({"url": "http://h", "secretEnv": "TURNOUT_WEBHOOK_OPS"}
                                   ).secret == "abc"
    slack = WebhookTarget("https://hooks.slack.com/services/T000/B000/XXXX")
    assert slack.shown == "https://hooks.slack.com/..."
    assert WebhookTarget("http://10.0.0.1:8080").shown == "http://10.0.0.1:8080"
    assert WebhookTarget("http://h/?token=abc").shown == "http://h/..."


def test_store_urls_never_show_a_password():
    from turnout.store.postgresql import _redact

    assert _redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert _redact("postgresql://h/db?password=secret&sslmode=require") == \
        "postgresql://h/db?password=***&sslmode=require"
    assert _redact("postgresql://h/db?PASSWORD=x") == "postgresql://h/db?password=***"
    assert _redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert _redact("postgresql:///db?host=/tmp") == "postgresql:///db?host=/tmp"
