"""The dashboard in a real browser (Debian's headless Chromium through chromedriver) on a
real stack: what it shows matches the API, and it changes live, without a reload, while
traffic moves and a rollout runs. Screenshots go to $TURNOUT_SCREENSHOTS (``make
screenshots`` writes them to docs/), else to the test's temporary directory."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.rollout_helpers import EXAMPLES, FINISHED, policy, wait_for
from triton_slots.loadgen import LoadGenerator
from turnout import stack
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
    audit = client.history(limit=40)
    assert browser.execute_script(
        "return [...document.querySelectorAll('#audit tbody tr')]"
        ".map(r => Number(r.dataset.seq))") == [e["seq"] for e in reversed(audit)]
    # Per-slot traffic from Prometheus appears within a few scrapes.
    _until(browser, lambda: _text(browser, "#slot-blue [data-k=rps]") not in ("n/a", "0.00"),
           timeout=20, what="blue's requests/s")


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
    _info, client, browser = env
    steps = """
      - {weight: 20, bake: 3s}
      - {weight: 100, bake: 1s}"""
    # The p99 gate is charted but does not decide: with Chromium on two cores, one slow
    # request in a 4 s window is noise this test is not about.
    metrics = """
      - {name: error-rate, builtin: error_rate, max: 0.01}
      - {name: p99-latency, builtin: p99_latency_ms, maxRatio: 3.0, dryRun: true}"""
    client.apply(policy("classifier:v2", name="dash", steps=steps, metrics=metrics),
                 "dash.yaml")
    seen = set()

    def watch() -> bool:
        phase = _text(browser, "#phase")
        seen.add(phase)
        return phase in FINISHED
    _until(browser, watch, timeout=90, what="the rollout finishing")
    done = wait_for(client, lambda r: r["phase"] in FINISHED, what="the rollout")
    assert done["phase"] == "promoted", (done["reason"], [
        e["message"] for e in client.history(rollout=done["id"]) if e["kind"] == "transition"])
    assert {"baking", "promoted"} <= seen, seen
    _until(browser, lambda: _text(browser, "#weight-green") == "100%", what="green 100%")
    assert "classifier:v2" in _text(browser, "#slot-green .models")
    charts = browser.execute_script(
        "return [...document.querySelectorAll('#gates .gate')].map(g => g.dataset.metric)")
    assert set(charts) == {"error-rate", "p99-latency"}
    assert "promoted" in _text(browser, "#audit")
    browser.save_screenshot(str(_shots(tmp_path) / "dashboard.png"))


def test_actions_need_a_token(env):
    info, _client, browser = env
    browser.find_element(By.CSS_SELECTOR, "#token").clear()
    browser.find_element(By.CSS_SELECTOR, "button[data-command=pause]").click()
    _until(browser, lambda: "token" in _text(browser, "#action-result"), what="a token request")
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys("tt_wrong")
    browser.find_element(By.CSS_SELECTOR, "button[data-command=pause]").click()
    _until(browser, lambda: "401" in _text(browser, "#action-result"), what="a 401")
    browser.find_element(By.CSS_SELECTOR, "#token").clear()
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys(info.token)
    browser.find_element(By.CSS_SELECTOR, "button[data-command=pause]").click()
    # Nothing runs after the promotion: the API's own answer comes back, not a 401.
    _until(browser, lambda: "409" in _text(browser, "#action-result"), what="a 409")


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
