"""The dashboard (``/ui/``) in a real headless Chromium against a real ``sonde serve``.

Telemetry goes in over OTLP/HTTP with exact values; the browser opens the page with the
management key in the fragment, lists the model and its deployments, opens one, and the
charts must draw exactly what the metrics API answers for the window they show, and
what was sent (request counts by status, latency quantiles, replicas, CPU cores,
memory, GPU). Logs are filtered through the page's form and must show exactly the
expected lines, newest first; paging back must end with every line once, in order,
even where lines sharing one timestamp straddle a page boundary. API errors (a bad RE2
pattern, an unknown key) must appear as the API's own message.

The browser and what is read from its pages: ``tests/web_browser.py``. Without a
browser these tests fail; ``SONDE_SKIP_BROWSER=1`` skips them.
"""

from __future__ import annotations

import time
import types

import httpx
import pytest

from otlp_build import (SEC, gauge, hist_point, histogram, log_record, logs_request, metrics_request, number, post,
                        sum_metric, traces_request)
from selenium.webdriver.common.action_chains import ActionChains
from web_browser import (By, NoAlertPresentException, Site, after_load, api_series, approx, charts, chromium, live,
                         loads, log_view, messages, open_ui, set_filters, shoot, values, wait)

MIN = 60 * SEC
MiB = 2**20
BOUNDS = [0.1, 0.2, 0.4, 0.8, 1.6]
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
# Per step i: requests answered 200 and 500 by replica (r0001, r0002); every request of
# step i took between BOUNDS[i] and BOUNDS[i + 1] seconds.
OK = [(10, 5), (20, 7), (30, 9), (40, 11), (50, 13)]
FAILED = [(1, 0), (0, 2), (3, 0), (0, 0), (2, 2)]
CPU_S = {"r0001": 6.0, "r0002": 12.0}  # CPU seconds per minute: 0.1 and 0.2 cores
MEMORY = {"r0001": 100 * MiB, "r0002": 300 * MiB}
GPU_UTIL = 0.5  # r0001's GPU 0
REPLICAS = ("r0001", "r0002")
CHART_METRICS = {
    "requests": {"baseten_inference_requests_total"},
    "latency": {"baseten_end_to_end_response_time_seconds"},
    "replicas": {"baseten_replicas_active", "baseten_replicas_starting"},
    "cpu": {"baseten_container_cpu_usage_seconds_total"},
    "memory": {"baseten_container_cpu_memory_working_set_bytes"},
    "gpu-utilization": {"baseten_gpu_utilization"},
}

# (seconds after the first line, level, replica, request id, message)
LINES = [
    (0, "DEBUG", "r0001", "req-a", "loading weights from /cache"),
    (1, "INFO", "r0001", "req-a", "request served status=200 latency_ms=12"),
    (2, "WARNING", "r0002", "req-b", "slow request status=200 latency_ms=950"),
    (3, "ERROR", "r0002", "req-c", "prediction failed: overflow in matmul"),
    (4, "INFO", "r0002", None, "request served status=200 latency_ms=15"),
    (5, None, "r0001", None, "Traceback (most recent call last):"),
    (6, "ERROR", "r0001", "req-d", "upstream timeout status=504 latency_ms=30000"),
    (7, "INFO", "r0001", "req-e", "<script>window.pwned = 1</script> shown as text"),
]
SEVERITY = {"DEBUG": 5, "INFO": 9, "WARNING": 13, "ERROR": 17}
PAGED = 45  # lines on deployment d2, a millisecond apart, but 20..29 share one timestamp


def _resource(replica: str, deployment: str = "d1") -> dict:
    return {"sonde.model_id": "m1", "sonde.deployment_id": deployment, "sonde.replica": replica}


def _step_metrics(i: int, t: int) -> list:
    """OTLP metrics requests (one per replica) for step i, all at time t, as deltas."""
    out = []
    for r, replica in enumerate(REPLICAS):
        counts = [0] * (len(BOUNDS) + 1)
        points = []
        for status, n in ((200, OK[i][r]), (500, FAILED[i][r])):
            if n:
                c = list(counts)
                c[i + 1] = n
                points.append(hist_point(t, c, BOUNDS, start=t - MIN, attrs={"http.response.status_code": status}))
        metrics = [
            histogram("http.server.request.duration", points, cumulative=False),
            sum_metric("process.cpu.time", [number(t, CPU_S[replica], start=t - MIN)], cumulative=False, unit="s"),
            gauge("process.memory.usage", [number(t, MEMORY[replica])], unit="By"),
        ]
        if replica == "r0001":
            metrics.append(gauge("hw.gpu.utilization", [number(t, GPU_UTIL, attrs={"hw.gpu.index": 0})], unit="1"))
        out.append(metrics_request(_resource(replica), metrics))
    return out


class Sonde(Site):
    """The live server and its telemetry's times."""

    def __init__(self, data_dir: str):
        super().__init__(data_dir)
        # Steps are a whole minute apart, each point 5 s into its minute, the first six
        # minutes ago: inside a 15-minute window for the whole module, one point per
        # 60 s step whatever the window's alignment.
        self.times = [(time.time_ns() // MIN - 6 + i) * MIN + 5 * SEC for i in range(len(OK))]
        self.logs_t0 = time.time_ns() - 4 * MIN

    def send_step(self, i: int) -> None:
        for req in _step_metrics(i, self.times[i]):
            self.send(req)


@pytest.fixture(scope="module")
def sonde(tmp_path_factory):
    s = Sonde(str(tmp_path_factory.mktemp("web")))
    for i in range(len(OK) - 1):  # the last step is sent later, for auto refresh to find
        s.send_step(i)
    by_replica = {}
    for dt, level, replica, rid, message in LINES:
        attrs = {"request_id": rid} if rid else {}
        by_replica.setdefault(replica, []).append(log_record(
            s.logs_t0 + dt * SEC, message, severity_number=SEVERITY.get(level, 0), attrs=attrs))
    for replica, records in by_replica.items():
        s.send(logs_request(_resource(replica), records))
    t = s.logs_t0 + 30 * SEC
    s.send(logs_request(_resource("r0001", "d2"), [
        log_record(t + (20 if 20 <= i < 30 else i) * 1_000_000, f"paging line {i:02d}", severity_number=9)
        for i in range(PAGED)]))
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory) as driver:
        yield driver


def deployment_series(sonde: Sonde, chart: dict) -> dict[str, list[tuple[float, float]]]:
    """What the metrics API answers for the chart's window, shaped as the page draws it."""
    names = ["baseten_inference_requests_total", "baseten_end_to_end_response_time_seconds",
             "baseten_replicas_active", "baseten_replicas_starting", "baseten_container_cpu_usage_seconds_total",
             "baseten_container_cpu_memory_working_set_bytes", "baseten_gpu_utilization", "baseten_gpu_memory_used"]
    return api_series(sonde.api, "/v1/models/m1/deployments/d1", chart, names,
                      rates={"baseten_container_cpu_usage_seconds_total"})


@pytest.mark.e2e
def test_models_and_deployments_listed(browser, sonde):
    open_ui(browser, sonde)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'section.model[data-model="m1"] tbody tr'),
         what="model m1's deployments")
    # The key left the address bar (and history) for localStorage.
    assert "key=" not in browser.current_url and browser.current_url.endswith("/ui/#/")
    assert browser.execute_script("return localStorage.getItem('sonde.managementKey')") == sonde.key
    rows = browser.find_elements(By.CSS_SELECTOR, 'section.model[data-model="m1"] tbody tr')
    assert sorted(r.get_attribute("data-deployment") for r in rows) == ["d1", "d2"]
    d1 = browser.find_element(By.CSS_SELECTOR, 'tr[data-deployment="d1"]')
    cells = [c.text for c in d1.find_elements(By.CSS_SELECTOR, "th, td")]
    assert cells[0] == "d1" and cells[1] == "ACTIVE"
    assert cells[3] == str(sonde.api.get("/v1/models/m1/deployments/d1").json()["active_replica_count"])
    d1.find_element(By.CSS_SELECTOR, "a").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "figure.chart-card .u-over"),
         what="the deployment's charts")
    assert browser.current_url.endswith("#/models/m1/deployments/d1")
    assert browser.find_element(By.CSS_SELECTOR, ".deployment-view h1").text == "d1"


@pytest.mark.e2e
def test_charts_draw_what_was_sent(browser, sonde):
    open_ui(browser, sonde, "/models/m1/deployments/d1")
    wait(browser, lambda d: loads(d, ".charts") >= 1, what="the charts")
    after_load(browser, ".charts", lambda: browser.find_element(
        By.XPATH, "//fieldset[contains(@class,'window-picker')]//label[normalize-space()='15 min']").click())
    assert browser.current_url.endswith("?window=15m")
    # Auto refresh is switched off while the page is read, so it cannot redraw mid-read.
    browser.find_element(By.ID, "auto-refresh").click()
    got = charts(browser)
    shoot(browser, "deployment")

    assert list(got) == ["requests", "latency", "replicas", "cpu", "memory", "gpu-utilization"]
    note = browser.find_element(By.CSS_SELECTOR, ".charts > .note.gpu").text
    assert "GPU memory" in note and "GPU utilisation" not in note
    for chart in got.values():
        assert chart["end"] - chart["start"] == 15 * 60_000 and chart["step"] == 60_000 and not chart["empty"]
        # on the API's steps, ending with the step that holds the moment it was asked
        assert chart["start"] % 60_000 == 0 and chart["end"] - 60_000 < chart["until"] <= chart["end"]
        # Exactly the API's values for the drawn window, point for point.
        expected = deployment_series(sonde, chart)
        drawn = {s["key"]: s for s in chart["series"]}
        for key, s in drawn.items():
            assert [p[0] for p in s["points"]] == pytest.approx([p[0] for p in expected[key]], rel=0, abs=0.5), key
            assert approx([p[1] for p in s["points"]], [p[1] for p in expected[key]]), (key, s, expected[key])
            assert s["path"] == 1 and all(p[2].startswith(f"{s['label']} · ") for p in s["points"])
        # Every series of the chart's metrics is drawn, but for the quantiles it leaves out.
        assert set(drawn) == {k for k in expected if k.split("{")[0] in CHART_METRICS[chart["id"]]
                              and not k.endswith(("{quantile=0.9}", "{stat=avg}"))}, chart["id"]

    # And what was sent: four steps so far.
    sent = range(len(OK) - 1)
    assert values(got["requests"]) == {"2xx": [sum(OK[i]) for i in sent],
                                       "5xx": [sum(FAILED[i]) for i in sent if sum(FAILED[i])]}
    assert [s["key"] for s in got["requests"]["series"]] == ["baseten_inference_requests_total{status=2xx}",
                                                            "baseten_inference_requests_total{status=5xx}"]
    latency = values(got["latency"])
    assert list(latency) == ["p50", "p95", "p99"]
    for label, q in QUANTILES.items():
        assert approx(latency[label], [BOUNDS[i] + q * (BOUNDS[i + 1] - BOUNDS[i]) for i in sent]), label
    assert values(got["replicas"]) == {"active": [2] * len(sent), "starting": [0] * len(sent)}
    cpu = values(got["cpu"])
    assert list(cpu) == list(REPLICAS)
    for replica in REPLICAS:
        assert approx(cpu[replica], [CPU_S[replica] / 60] * len(sent)), cpu
    memory = values(got["memory"])
    assert list(memory) == list(REPLICAS)
    for replica in REPLICAS:
        assert len(memory[replica]) >= len(sent)
        assert approx(memory[replica], [MEMORY[replica]] * len(memory[replica])), memory  # a constant's mean
    assert values(got["gpu-utilization"]).keys() == {"r0001 GPU 0"}
    gpu = values(got["gpu-utilization"])["r0001 GPU 0"]
    assert len(gpu) >= len(sent) and approx(gpu, [GPU_UTIL] * len(gpu))
    title = got["latency"]["series"][0]["points"][0][2]
    assert title.endswith("· 150 ms"), title  # p50 of (0.1, 0.2] s, formatted

    # Auto refresh (every 10 s) picks up the next step without a reload.
    browser.find_element(By.ID, "auto-refresh").click()
    sonde.send_step(len(OK) - 1)
    wait(browser, lambda d: len(values(charts(d)["requests"])["2xx"]) == len(OK), timeout=30,
         what="the auto refresh")
    browser.find_element(By.ID, "auto-refresh").click()
    got = charts(browser)
    assert values(got["requests"])["2xx"] == [sum(n) for n in OK]
    assert values(got["requests"])["5xx"] == [sum(n) for n in FAILED if sum(n)]


def expected_lines(pred) -> list[tuple[str, str, str, str]]:
    return [(lv or "", rep, rid or "", msg) for _, lv, rep, rid, msg in reversed(LINES) if pred(lv, rep, rid, msg)]


@pytest.mark.e2e
def test_log_viewer_filters(browser, sonde):
    open_ui(browser, sonde, "/models/m1/deployments/d1?window=15m")
    wait(browser, lambda d: loads(d, "section.logs") >= 1, what="the logs")
    assert log_view(browser) == expected_lines(lambda *a: True)
    # Levels are coloured by class; a line without a level has none; markup in a message is text.
    classes = [li.get_attribute("class") for li in browser.find_elements(By.CSS_SELECTOR, ".log-line")]
    assert classes[:3] == ["log-line lvl-info", "log-line lvl-error", "log-line lvl-none"]
    assert browser.execute_script("return window.pwned") is None
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text

    set_filters(browser, min_level="WARNING")
    assert log_view(browser) == expected_lines(lambda lv, *_: lv in ("WARNING", "ERROR"))
    assert [ln[0] for ln in log_view(browser)] == ["ERROR", "ERROR", "WARNING"]

    set_filters(browser, search_pattern=r"latency_ms=\d{3,}")
    assert log_view(browser) == expected_lines(lambda lv, rep, rid, msg: "latency_ms=950" in msg or "=30000" in msg)

    set_filters(browser, includes="status=200", excludes="slow, 12")
    assert log_view(browser) == expected_lines(lambda lv, rep, rid, msg: msg.endswith("latency_ms=15"))
    # the filters are in the address, so a reload (or a shared link) shows the same lines
    assert browser.current_url.endswith("#/models/m1/deployments/d1?window=15m&includes=status%3D200&excludes=slow%2C+12")
    browser.refresh()
    wait(browser, lambda d: loads(d, "section.logs") >= 1, what="the logs after a reload")
    assert log_view(browser) == expected_lines(lambda lv, rep, rid, msg: msg.endswith("latency_ms=15"))
    assert browser.find_element(By.NAME, "excludes").get_attribute("value") == "slow, 12"

    set_filters(browser, replica="r0002", min_level="INFO")
    assert log_view(browser) == expected_lines(lambda lv, rep, *_: rep == "r0002")

    # A request id is a link to that request's lines.
    set_filters(browser)
    rid = browser.find_element(By.XPATH, "//button[contains(@class,'rid') and .='req-a']")
    after_load(browser, "section.logs", rid.click)
    assert log_view(browser) == expected_lines(lambda lv, rep, r, msg: r == "req-a")
    assert browser.find_element(By.NAME, "request_id").get_attribute("value") == "req-a"

    # A pattern RE2 rejects: the API's 400 message, verbatim, and no lines.
    bad = "latency_ms=(\\d+"
    set_filters(browser, search_pattern=bad)
    api = sonde.api.get("/v1/models/m1/deployments/d1/logs", params={"search_pattern": bad})
    assert api.status_code == 400 and api.json()["error"]["field"] == "search_pattern"
    shown = browser.find_element(By.CSS_SELECTOR, "section.logs .error .error-message")
    assert shown.text == api.json()["message"] and shown.is_displayed()
    assert "field search_pattern" in browser.find_element(By.CSS_SELECTOR, "section.logs .error").text
    assert log_view(browser) == []
    set_filters(browser)
    assert not browser.find_element(By.CSS_SELECTOR, "section.logs .error").is_displayed()


@pytest.mark.e2e
def test_log_viewer_pages_back(browser, sonde):
    open_ui(browser, sonde, "/models/m1/deployments/d2?window=15m")
    wait(browser, lambda d: loads(d, "section.logs") >= 1, what="the logs")
    set_filters(browser, limit=20)
    every = [ln["message"] for ln in sonde.api.get("/v1/models/m1/deployments/d2/logs",
                                                   params={"limit": 1000}).json()["logs"]]
    assert len(every) == PAGED
    shown = [ln[3] for ln in log_view(browser)]
    assert shown == every[:20]
    older = browser.find_element(By.CSS_SELECTOR, "button.load-older")
    for n in (40, PAGED):
        after_load(browser, "section.logs", older.click)
        assert [ln[3] for ln in log_view(browser)] == every[:n]
    assert not older.is_displayed()
    assert "No older lines" in browser.find_element(By.CSS_SELECTOR, ".log-status").text


@pytest.mark.e2e
def test_wrong_key_is_rejected(browser, sonde):
    open_ui(browser, sonde, "/", key="not-a-key")
    box = wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".models-view .error-message")
                                   if e.text], what="the key's rejection")[0]
    api = httpx.get(f"{sonde.url}/v1/models", headers={"Authorization": "Bearer not-a-key"})
    assert api.status_code == 401 and box.text == api.json()["message"]
    assert not browser.find_elements(By.CSS_SELECTOR, "section.model")
    # The key box replaces it; the page reloads its view with the new key.
    browser.find_element(By.ID, "key-input").send_keys(sonde.key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'section.model[data-model="m1"]'), what="the models")
    assert not browser.find_elements(By.CSS_SELECTOR, ".models-view .error-message")
    assert browser.find_element(By.ID, "key-status").text == f"saved (…{sonde.key[-4:]})"
    # Without a key the page asks for one instead of calling the API.
    browser.find_element(By.ID, "key-forget").click()
    msg = wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".models-view .error-message")
                                   if e.text], what="the key prompt")[0]
    assert "management key" in msg.text


@pytest.mark.e2e
def test_served_with_a_strict_policy(sonde):
    r = httpx.get(f"{sonde.url}/ui/")
    assert r.status_code == 200 and "<title>Sonde</title>" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(f"{sonde.url}/ui", follow_redirects=True).url.path == "/ui/"
    missing = httpx.get(f"{sonde.url}/ui/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_demo_prints_the_dashboard_url():
    from sonde.cli.demo import instructions

    stack = types.SimpleNamespace(
        url="http://127.0.0.1:18555", creds_path="/d/credentials.json", creds={"management_key": "k/+ey="},
        replica_ports={"r0001": 1}, training=False, chain=False, loops=False, textgen=False, rps=20.0, log_dir="/d/logs",
        data_dir="/d")
    lines = [ln.strip() for ln in instructions(stack, {"environment": "production"}).splitlines()]
    assert "Dashboard     http://127.0.0.1:18555/ui/#key=k%2F%2Bey%3D" in lines


@pytest.mark.e2e
def test_latency_step_to_its_slowest_request_and_its_logs(browser, sonde):
    # Runs last: its log lines would show in the log viewer's exact expectations.
    t = sonde.times[1]
    plan = [("req-fast", 20), ("req-slow", 900), ("req-mid", 300)]  # (request id, ms)
    spans, records = [], []
    for i, (rid, ms) in enumerate(plan):
        trace_id, root = bytes([i + 1]) * 16, bytes([i + 1]) * 8
        start = t + i * SEC
        spans.append((trace_id, root, b"", "POST /predict", 2, start, ms * 10**6,
                      {"http.route": "/predict", "http.response.status_code": 200,
                       "http.request.header.x-request-id": rid}))
        spans.append((trace_id, bytes([i + 11]) * 8, root, "model.forward", 1, start + 10**6, ms * 10**6 // 2, {}))
        records.append(log_record(start + 2 * 10**6, f"served {rid}", severity_number=9, attrs={"request_id": rid}))
    r = post(sonde.ingest, traces_request(_resource("r0001"), spans))
    assert r.status_code == 200, r.content
    sonde.send(logs_request(_resource("r0001"), records))

    # A range of whole minutes, so its steps are too: the three requests (5 to 7 s into
    # their minute) share one step whatever the clock says when the test runs.
    frm = (sonde.times[0] - 5 * SEC) // 10**6 - 4 * 60_000
    open_ui(browser, sonde, f"/models/m1/deployments/d1?from={frm}&to={frm + 10 * 60_000}")
    wait(browser, lambda d: loads(d, ".charts") >= 1, what="the charts")
    assert not browser.find_element(By.ID, "auto-refresh").is_selected()  # a fixed range
    t_ms = t // 10**6
    # click 1, a real click on the latency chart at the requests' step: it lists them, slowest first
    over = browser.find_element(By.CSS_SELECTOR, "figure[data-chart='latency'] .u-over")
    x = browser.execute_script("const u = document.querySelector(\"figure[data-chart='latency']\").uplot;"
                               " return u.valToPos(arguments[0] / 1000, 'x');", t_ms + 500)
    width = over.size["width"]
    after_load(browser, "section.requests-panel", lambda: ActionChains(browser).move_to_element_with_offset(
        over, int(x - width / 2), 0).click().perform())
    rows = browser.find_elements(By.CSS_SELECTOR, "table.requests tbody tr")
    assert [row.get_attribute("data-request") for row in rows] == ["req-slow", "req-mid", "req-fast"]
    assert rows[0].find_elements(By.TAG_NAME, "td")[1].text == "900.0 ms"
    assert rows[0].find_elements(By.TAG_NAME, "td")[-1].text == "1"
    # click 2: the slowest request's spans and its log line
    after_load(browser, "section.requests-panel",
               lambda: rows[0].find_element(By.CSS_SELECTOR, "button.link").click())
    spans_shown = browser.execute_script(
        "return [...document.querySelectorAll('.waterfall .span')].map((li) =>"
        " [li.querySelector('.span-name').textContent, li.dataset.depth]);")
    assert spans_shown == [["POST /predict", "0"], ["model.forward", "1"]]
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".request-logs .msg")] == ["served req-slow"]


@pytest.mark.e2e
def test_log_viewer_live_tail_with_filters_and_pause(browser, sonde):
    res = _resource("r0001", "d3")
    sonde.send(logs_request(res, [log_record(time.time_ns() - 60 * SEC, "before live", severity_number=9)]))
    open_ui(browser, sonde, "/models/m1/deployments/d3?window=15m")
    wait(browser, lambda d: loads(d, "section.logs") >= 1, what="the logs")
    assert messages(browser) == ["before live"]
    browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()
    wait(browser, lambda d: live(d) == "live", what="the stream to open")
    sonde.send(logs_request(res, [log_record(time.time_ns(), "sent during the test", severity_number=9)]))
    wait(browser, lambda d: messages(d)[:1] == ["sent during the test"], what="the live line")
    shoot(browser, "logs-live", "section.logs")

    # new filters apply to the stream too
    set_filters(browser, min_level="ERROR")
    wait(browser, lambda d: live(d) == "live", what="the stream to reopen")
    sonde.send(logs_request(res, [log_record(time.time_ns(), "quiet", severity_number=9),
                                  log_record(time.time_ns(), "loud", severity_number=17)]))
    wait(browser, lambda d: messages(d)[:1] == ["loud"], what="the filtered live line")
    assert "quiet" not in messages(browser)

    pause = browser.find_element(By.CSS_SELECTOR, "button.live-pause")
    pause.click()
    sonde.send(logs_request(res, [log_record(time.time_ns(), "held while paused", severity_number=17)]))
    wait(browser, lambda d: pause.text == "Resume (1 new)", what="the held line to be counted")
    assert "held while paused" not in messages(browser)
    pause.click()
    assert messages(browser)[:2] == ["held while paused", "loud"]
    browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()
    assert live(browser) == "off" and "live=1" not in browser.current_url

    # a link with live=1 opens following, with the link's filters
    open_ui(browser, sonde, "/models/m1/deployments/d3?window=15m&min_level=ERROR&live=1")
    wait(browser, lambda d: live(d) == "live", what="the stream a link asks for")
    assert messages(browser)[:2] == ["held while paused", "loud"]
    sonde.send(logs_request(res, [log_record(time.time_ns(), "info, not shown", severity_number=9),
                                  log_record(time.time_ns(), "after the link", severity_number=17)]))
    wait(browser, lambda d: messages(d)[:1] == ["after the link"], what="the link's live line")
    assert "info, not shown" not in messages(browser)
    browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()


@pytest.mark.e2e
def test_custom_range_is_in_the_address_and_drawn_from_the_api(browser, sonde):
    open_ui(browser, sonde, "/models/m1/deployments/d1?window=1h")
    wait(browser, lambda d: loads(d, ".charts") >= 1, what="the charts")
    # a range in local wall time, as the inputs take it: from ten minutes ago to two minutes ago
    frm, to = sonde.times[0] // 10**6 - 4 * 60_000, sonde.times[0] // 10**6 + 4 * 60_000
    after_load(browser, ".charts", lambda: browser.execute_script("""
        const f = document.querySelector("form.custom-range");
        const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
        f.elements.from.value = local(arguments[0]); f.elements.to.value = local(arguments[1]);
        f.requestSubmit();""", frm, to))
    minute = lambda ms: ms - ms % 60_000  # noqa: E731  (the inputs hold whole minutes)
    assert browser.current_url.endswith(f"?from={minute(frm)}&to={minute(to)}")
    got = charts(browser)["requests"]
    assert (got["start"], got["end"]) == (minute(frm), minute(to))
    expected = deployment_series(sonde, got)
    for s in got["series"]:
        assert approx([p[1] for p in s["points"]], [p[1] for p in expected[s["key"]]]), s["key"]
    assert not browser.find_element(By.ID, "auto-refresh").is_selected()
    # the address alone brings the same view back (a shared link)
    browser.refresh()
    wait(browser, lambda d: loads(d, ".charts") >= 1, what="the charts after a reload")
    again = charts(browser)["requests"]
    assert (again["start"], again["end"]) == (minute(frm), minute(to)) and again["series"] == got["series"]
    shoot(browser, "custom-range", ".toolbar")
