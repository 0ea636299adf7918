"""The dashboard in a real browser (Debian's headless Chromium through chromedriver) on a
real stack: its data needs a token with the read role (sign-in, sessions ended by revoking
the token), what it shows matches the API, and it changes live, without a reload, while
traffic moves and a rollout runs. Screenshots go to $TURNOUT_SCREENSHOTS (``make
screenshots`` writes them to docs/), else to the test's temporary directory."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.rollout_helpers import EXAMPLES, FINISHED, policy, wait_for
from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.cli import main as cli
from turnout.client import ApiClient
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration


def _browser() -> webdriver.Chrome:
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.fail("chromedriver missing: `make browser` installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1500"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=chromedriver)
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dashboard")
    info = stack.up(directory, progress=print)
    browser = None
    load = None
    try:
        registry_for(directory).push(EXAMPLES / "v2", name="classifier", version="v2")
        load = LoadGenerator(info.ingress, model="classifier", concurrency=2, rate=60).start()
        browser = _browser()
        browser.get(info.api_url + "/")
        yield info, ApiClient(info.api_url, info.token), browser
    finally:
        if browser is not None:
            browser.quit()
        if load is not None:
            stats = load.stop()
            assert stats.failed == 0, stats.errors
        stack.down(directory)


def _shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("TURNOUT_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def _text(browser, css: str) -> str:
    """The element's rendered text, read in one script (the page re-renders on pushes)."""
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null", css)


def _until(browser, condition, *, timeout: float = 10.0, what: str) -> float:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        try:
            if condition():
                return time.monotonic() - started
        except Exception as exc:  # the page is re-rendering
            last = exc
        time.sleep(0.02)
    raise AssertionError(f"the page never showed {what} in {timeout:.0f}s ({last})")


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _http(info, method: str, path: str, *, token: str | None = None,
          cookie: str | None = None, body: bytes | None = None):
    """(status, headers, JSON answer) of one API call."""
    request = urllib.request.Request(info.api_url + path, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.load(exc)


def _signed_in(browser) -> str | None:
    return browser.execute_script("return document.body.dataset.signedIn || null")


def test_data_needs_a_read_token_and_revoking_it_ends_the_session(env):
    info, _client, browser = env
    directory = info.directory
    # No token: the page offers a sign-in and shows no data; the data endpoints say 401.
    _until(browser, lambda: _signed_in(browser) == "no", what="the sign-in")
    assert browser.execute_script("return document.querySelector('main').hidden") is True
    assert "Sign in" in _text(browser, "#signin")
    assert _text(browser, "#slot-blue .servers") == "", "data shown without a token"
    for path in ("/dashboard/state", "/dashboard/events"):
        status, _, answer = _http(info, "GET", path)
        assert (status, answer["error"]) == (401, "no dashboard session: sign in with a token")
        status, _, answer = _http(info, "GET", path, cookie="turnout_dashboard=forged")
        assert (status, answer["error"]) == (401, "dashboard session unknown or ended: sign "
                                                  "in again")
        status, _, answer = _http(info, "GET", path, token="tt_wrong")
        assert (status, answer["error"]) == (401, "unknown bearer token")
    status, _, answer = _http(info, "POST", "/dashboard/session", body=b'{"code": "nope"}')
    assert status == 401 and "sign-in code unknown, used or expired" in answer["error"]
    status, _, answer = _http(info, "POST", "/dashboard/session", body=b"[1")
    assert status == 401 and "bearer token" in answer["error"]
    # The page itself, its script and the public endpoints stay open.
    for path in ("/", "/dashboard/app.js", "/openapi.json", "/metrics", "/healthz"):
        with urllib.request.urlopen(info.api_url + path, timeout=10) as response:
            assert response.status == 200, path

    # A read token signs in; the cookie is HttpOnly, SameSite=Strict, scoped to the data.
    read_secret = _cli("token", "create", "viewer", "--role", "read", "--dir",
                       directory).strip().splitlines()[-1]
    status, headers, answer = _http(info, "POST", "/dashboard/session", token=read_secret)
    assert (status, answer["token"], answer["role"]) == (200, "viewer", "read")
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain HTTP here; set over TLS
    browser.find_element(By.CSS_SELECTOR, "#signin-token").send_keys(read_secret)
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    _until(browser, lambda: _text(browser, "#conn") == "live", what="a live connection")
    # (The page's own cookie list hides it: its path is the data's, not the page's.)
    [session] = [c for c in browser.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
                 if c["name"] == "turnout_dashboard"]
    assert (session["httpOnly"], session["sameSite"], session["path"]) == \
        (True, "Strict", "/dashboard")
    assert browser.execute_script("return document.cookie") == ""
    assert read_secret not in browser.current_url

    # Revoking the token ends its sessions: the open page and a bearer event stream both
    # stop within a second.
    stream = urllib.request.urlopen(urllib.request.Request(
        info.api_url + "/dashboard/events", headers={"Authorization": f"Bearer {read_secret}"}),
        timeout=10)
    assert stream.readline().startswith(b"event: state")
    _cli("token", "revoke", "viewer", "--dir", directory)
    revoked = time.monotonic()
    line = b""
    while not line.startswith(b"event: signed-out"):
        line = stream.readline()
        assert line, "the stream ended without saying why"
        assert time.monotonic() - revoked < 3, "still streaming 3 s after the revocation"
    ended = time.monotonic() - revoked
    stream.close()
    print(f"token revoked -> its event stream signed out in {ended * 1e3:.0f} ms")
    _until(browser, lambda: _signed_in(browser) == "no", timeout=5, what="the sign-in again")
    assert ended < 1.0, f"the revoked token's stream ran {ended:.2f} s on"
    assert "revoked" in _text(browser, "#signin-message")
    assert _text(browser, "#slot-blue .servers") == "", "data kept after the revocation"

    # `turnout dashboard` prints a link with a one-time code for a fresh read session.
    link = _cli("dashboard", "--dir", directory).splitlines()[0]
    assert link.startswith(info.api_url + "/#code=")
    browser.get(link)
    _until(browser, lambda: _text(browser, "#conn") == "live", what="a live connection")
    assert "#code" not in browser.current_url, "the code stayed in the address bar"
    status, _, answer = _http(info, "POST", "/dashboard/session",
                              body=json.dumps({"code": link.split("=", 1)[1]}).encode())
    assert status == 401, "a code worked twice"


def test_page_matches_the_api(env):
    _info, client, browser = env
    _until(browser, lambda: _text(browser, "#conn") == "live", what="a live connection")
    status = client.status()
    assert _text(browser, "#weight-blue") == f"{status['weights']['blue']}%"
    assert _text(browser, "#weight-green") == f"{status['weights']['green']}%"
    servers = _text(browser, "#slot-blue .servers")
    for endpoint in status["slots"]["blue"]:
        assert endpoint["endpoint"] in servers and "ready" in servers
    assert "classifier:v1" in _text(browser, "#slot-blue .models")
    # Lists are read in one script: the page replaces them on every push.
    assert browser.execute_script(
        "return [...document.querySelectorAll('#proxies tbody tr')]"
        ".map(r => r.cells[0].textContent)") == [p["node"] for p in status["xds"]["proxies"]]
    audit = client.history(limit=150)
    assert browser.execute_script(
        "return [...document.querySelectorAll('#audit tbody tr')]"
        ".flatMap(r => r.dataset.seqs.split(' ').map(Number))") == \
        [e["seq"] for e in reversed(audit)]
    # No rollout yet: no action is offered.
    assert _visible_commands(browser) == []
    assert _text(browser, "#no-actions") == "no rollout to act on"
    # Per-slot traffic from Prometheus appears within a few scrapes.
    _until(browser, lambda: _text(browser, "#slot-blue [data-k=rps]") not in ("n/a", "0.00"),
           timeout=20, what="blue's requests/s")
    # ... and builds per-slot time series: latency (p50 solid, p99 dashed), requests/s,
    # errors, each with axes; no stream chart for a unary model.
    def points(chart: str, slot: str, metric: str) -> int:
        return browser.execute_script(
            "const p = document.querySelector(arguments[0]);"
            "return p ? Number(p.dataset.points) : 0",
            f"#{chart} path[data-slot={slot}][data-metric={metric}]")
    _until(browser, lambda: points("series-rps", "blue", "rps") >= 3, timeout=20,
           what="three points of blue's requests/s")
    for chart, metric in (("series-latency", "p50_ms"), ("series-latency", "p99_ms"),
                          ("series-errors", "error_rate")):
        assert points(chart, "blue", metric) >= 2, (chart, metric)
        assert len(browser.find_elements(By.CSS_SELECTOR, f"#{chart} .axis-y")) == 3
    assert browser.execute_script(
        "return document.querySelector('#series-latency path[data-metric=p99_ms]')"
        ".classList.contains('dashed')")
    assert browser.execute_script("return document.querySelector('#series-stream-card').hidden")


def test_a_page_opened_after_a_quiet_spell_shows_traffic_measured_now(env):
    """Figures come with their age: the first event a new page gets is measured when it
    connects, never the figures of the last page that was open."""
    info, _client, browser = env
    browser.get("about:blank")  # no page open: the figures stop being refreshed
    time.sleep(4.5)
    stream = urllib.request.urlopen(urllib.request.Request(
        info.api_url + "/dashboard/events", headers={"Authorization": f"Bearer {info.token}"}),
        timeout=10)
    try:
        assert stream.readline().startswith(b"event: state")
        first = json.loads(stream.readline().removeprefix(b"data: "))
    finally:
        stream.close()
    assert first["traffic_at"] is not None, first["traffic_error"]
    assert 0 <= first["at"] - first["traffic_at"] < 1.5, "an old measurement painted first"
    assert first["traffic"]["blue"]["rps"] > 0
    browser.get(info.api_url + "/")
    _until(browser, lambda: _text(browser, "#conn") == "live", what="a live connection")
    age = _text(browser, "#traffic-age")
    assert age.startswith("traffic over the last 10 s, measured "), age
    assert float(age.split("measured ")[1].split(" s")[0]) < 1.5, age


def _visible_commands(browser) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('button[data-command]')]"
        ".filter(b => b.offsetParent !== null).map(b => b.dataset.command)")


def _bake(browser) -> tuple[float, float, str]:
    """(the bar's drawn share of its track, its data-fraction, the label), read at once."""
    return tuple(browser.execute_script(
        "const bar = document.querySelector('#bake-bar');"
        "return [bar.getBoundingClientRect().width / bar.parentElement.getBoundingClientRect()"
        ".width, Number(bar.dataset.fraction), document.querySelector('#bake-text').innerText]"))


def test_weight_change_shows_without_reload(env, tmp_path):
    _info, client, browser = env
    updates = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates"))
    seconds = []
    for green in (30, 0, 10, 0, 50, 0, 70, 0, 90, 0):
        client.set_traffic(green=green)  # returns once every Envoy ACKed
        seconds.append(_until(browser, lambda g=green: _text(browser, "#weight-green")
                              == f"{g}%", what=f"green {green}%"))
    seconds.sort()
    print(f"weight change ACKed -> shown on the page, {len(seconds)} changes: median "
          f"{statistics.median(seconds) * 1e3:.0f} ms, max {seconds[-1] * 1e3:.0f} ms")
    assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates")) \
        > updates, "the page was not updated by pushes"
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") \
        == 1, "the page was reloaded"


def test_rollout_moves_live_on_the_page(env, tmp_path):
    info, client, browser = env
    steps = """
      - {weight: 20, bake: 4s}
      - {weight: 100, bake: 1s, approval: true}"""
    # The p99 gate is charted but does not decide: with Chromium on two cores, one slow
    # request in a 4 s window is noise this test is not about.
    metrics = """
      - {name: error-rate, builtin: error_rate, max: 0.01}
      - {name: p99-latency, builtin: p99_latency_ms, maxRatio: 3.0, dryRun: true}"""
    client.apply(policy("classifier:v2", name="dash", steps=steps, metrics=metrics),
                 "dash.yaml")
    seen = set()

    def watch(phases) -> bool:
        phase = _text(browser, "#phase")
        seen.add(phase)
        assert phase not in FINISHED, client.rollout()["reason"]
        return phase in phases
    _until(browser, lambda: watch({"baking"}), timeout=90, what="step 1 baking")
    # The step and the weight the candidate serves, each in its own place.
    assert _text(browser, "#step") == "1 of 2 (20%)"
    assert _text(browser, "#candidate-weight") == "20%"
    assert _visible_commands(browser) == ["pause", "promote", "abort", "rollback"]
    # The bake bar is as full as its label says, all along the bake.
    bakes = []
    while _text(browser, "#phase") == "baking" and len(bakes) < 40:
        drawn, fraction, label = _bake(browser)
        assert abs(drawn - fraction) < 0.02, (drawn, fraction, label)
        if " s of 4 s" in label and "baked" not in label:
            spent = float(label.split(" s of")[0])
            assert abs(spent - 4 * fraction) <= 0.6, (fraction, label)
        elif "baked" in label:
            assert fraction == 1.0, (fraction, label)
        bakes.append((fraction, label))
        time.sleep(0.1)
    assert any(0.2 < f < 0.8 for f, _ in bakes), bakes

    _until(browser, lambda: watch({"awaiting_approval"}), timeout=60,
           what="step 2 awaiting approval")
    assert _text(browser, "#step") == "2 of 2 (100%)"
    assert _text(browser, "#candidate-weight") == "20%"
    assert _bake(browser)[1:] == (0.0, "waiting for approval")
    assert _visible_commands(browser) == ["pause", "promote", "abort", "rollback"]
    # Step 1's gate rounds stay as the evidence for the approval.
    assert _text(browser, "#rounds-of") == "the previous step"
    charts = browser.execute_script(
        "return [...document.querySelectorAll('#gates .gate')].map(g => g.dataset.metric)")
    assert set(charts) == {"error-rate", "p99-latency"}
    # Both slots' weights with axes; the candidate's line is the bold one.
    assert browser.execute_script(
        "return [...document.querySelectorAll('#weights-chart .axis-y')].map(t => t.textContent)"
    ) == ["0%", "50%", "100%"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#weights-chart .axis-x")) == 2
    assert browser.execute_script(
        "return [...document.querySelectorAll('#weights-chart path.candidate')]"
        ".map(p => p.dataset.slot)") == ["green"]
    assert _text(browser, "#weights-legend") == "candidate: green (bold)"

    # Approve from the page with an operator's token.
    browser.find_element(By.CSS_SELECTOR, "#token").clear()
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys(info.token)
    browser.find_element(By.CSS_SELECTOR, "button[data-command=promote]").click()
    _until(browser, lambda: _text(browser, "#action-result") == "promote: done",
           what="the approval")
    done = wait_for(client, lambda r: r["phase"] in FINISHED, what="the rollout")
    assert done["phase"] == "promoted", (done["reason"], [
        e["message"] for e in client.history(rollout=done["id"]) if e["kind"] == "transition"])
    assert {"baking", "awaiting_approval"} <= seen, seen
    _until(browser, lambda: _text(browser, "#weight-green") == "100%", what="green 100%")
    _until(browser, lambda: _text(browser, "#phase") == "promoted", what="promoted")
    assert "classifier:v2" in _text(browser, "#slot-green .models")
    assert _visible_commands(browser) == ["rollback"]  # within the keep-warm window
    _until(browser, lambda: browser.execute_script(
        "const p = document.querySelector('#series-rps path[data-slot=green]');"
        "return p ? Number(p.dataset.points) : 0") >= 2, what="green's requests/s series")
    approvals = [e for e in client.history(rollout=done["id"]) if e["kind"] == "approval"]
    assert [e["message"] for e in approvals] == ["step 2 approved by stack-admin"]

    # The audit log folds each step's gate rounds into one row; a filter picks one kind.
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#audit tbody tr')].map(r => "
        "[r.dataset.kind, Number(r.dataset.folded), r.cells[5].innerText])")
    folded = [r for r in rows if r[0] == "gates"]
    assert folded and all(n >= 1 for _, n, _ in folded)
    assert any(n > 1 and text.startswith("step 1: ") and f"{n} gate rounds" in text
               for _, n, text in folded), folded
    assert all(not (a[0] == b[0] == "gates" and a[2][:7] == b[2][:7])
               for a, b in itertools.pairwise(rows)), "two rows of one step's rounds"
    Select(browser.find_element(By.CSS_SELECTOR, "#audit-kind")).select_by_value("transition")
    _until(browser, lambda: set(browser.execute_script(
        "return [...document.querySelectorAll('#audit tbody tr')].map(r => r.dataset.kind)"))
        == {"transition"}, what="only transitions")
    time.sleep(0.6)  # the choice survives the next pushes
    assert set(browser.execute_script(
        "return [...document.querySelectorAll('#audit tbody tr')].map(r => r.dataset.kind)")) \
        == {"transition"}
    assert "promoted" in _text(browser, "#audit")
    Select(browser.find_element(By.CSS_SELECTOR, "#audit-kind")).select_by_value("")
    browser.save_screenshot(str(_shots(tmp_path) / "dashboard.png"))


def test_actions_need_a_token(env):
    info, _client, browser = env
    directory = info.directory
    rollback = "button[data-command=rollback]"
    browser.find_element(By.CSS_SELECTOR, "#token").clear()
    browser.find_element(By.CSS_SELECTOR, rollback).click()
    _until(browser, lambda: "token" in _text(browser, "#action-result"), what="a token request")
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys("tt_wrong")
    browser.find_element(By.CSS_SELECTOR, rollback).click()
    browser.switch_to.alert.accept()
    _until(browser, lambda: "401" in _text(browser, "#action-result"), what="a 401")
    # Read may look, not act.
    read_secret = _cli("token", "create", "looker", "--role", "read", "--dir",
                       directory).strip().splitlines()[-1]
    browser.find_element(By.CSS_SELECTOR, "#token").clear()
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys(read_secret)
    browser.find_element(By.CSS_SELECTOR, rollback).click()
    browser.switch_to.alert.accept()
    _until(browser, lambda: "403" in _text(browser, "#action-result"), what="a 403")
    # Declining the confirmation sends nothing.
    browser.find_element(By.CSS_SELECTOR, "#token").clear()
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys(info.token)
    browser.find_element(By.CSS_SELECTOR, rollback).click()
    browser.switch_to.alert.dismiss()
    time.sleep(0.5)
    assert _text(browser, "#weight-green") == "100%"
    browser.find_element(By.CSS_SELECTOR, rollback).click()
    browser.switch_to.alert.accept()
    _until(browser, lambda: _text(browser, "#action-result") == "rollback: done",
           what="the rollback")
    _until(browser, lambda: _text(browser, "#weight-green") == "0%", what="green 0%")
    _until(browser, lambda: _visible_commands(browser) == [], what="no action left")
    assert _text(browser, "#no-actions") == "nothing to do while rolled_back"


def test_prometheus_loads_the_rules_and_every_grafana_query_runs(env):
    """The same Prometheus the gates use: our rule groups load and evaluate without error,
    and every panel of the Grafana dashboard is a query it accepts."""
    import json
    import urllib.parse
    import urllib.request

    info, _client, _browser = env

    def get(path: str) -> dict:
        with urllib.request.urlopen(info.prometheus_url + path, timeout=5) as response:
            return json.load(response)

    def rules_healthy() -> bool:
        groups = get("/api/v1/rules")["data"]["groups"]
        return {g["name"] for g in groups} >= {"turnout-slots", "turnout-alerts"} and all(
            r["health"] == "ok" for g in groups for r in g["rules"])
    deadline = time.monotonic() + 30
    while not rules_healthy():
        assert time.monotonic() < deadline, get("/api/v1/rules")
        time.sleep(0.5)
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "examples" / "grafana"
                            / "turnout-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            answer = get("/api/v1/query?query=" + urllib.parse.quote(target["expr"]))
            assert answer["status"] == "success", (panel["title"], answer)
