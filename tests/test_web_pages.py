"""The dashboard's pages beside a deployment's, in a real headless Chromium against a
real ``sonde serve`` fed over OTLP: a training job (per-node GPU, CPU, memory, ephemeral
storage and cache), the training list, chains and a chainlet, a trainer (loops)
deployment, a model's environment, and the LLM panels of a deployment whose model
server reports them. Every drawn series is read from uPlot's own data and compared,
point for point, with what the API answers for the window the chart states; each page's
state is in the address (a reload of it shows the same view); a live tail receives a
line sent during the test. One server and one browser for the module; screenshots in
SHOTS (``tests/web_browser.py``).
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from datetime import datetime

import pytest
from selenium.webdriver.common.action_chains import ActionChains

from otlp_build import SEC, gauge, hist_point, histogram, log_record, logs_request, metrics_request, number, sum_metric
from web_browser import (By, Site, after_load, api_series, approx, charts, chromium, live, loads, messages, open_ui,
                         set_filters, shoot, wait)

MIN = 60 * SEC
GIB = 2**30
BOUNDS = [0.05, 0.1, 0.2, 0.4]
STEPS = range(5)


def job_resource(rank: int) -> dict:
    return {"sonde.training_project_id": "p1", "sonde.training_job_id": "j1", "sonde.node_rank": str(rank),
            "sonde.node_id": f"node-{rank}"}


LLM = {"sonde.model_id": "m1", "sonde.deployment_id": "d-llm", "sonde.replica": "r0001",
       "sonde.environment": "production"}
CHAINLET = {"sonde.chain_id": "c1", "sonde.chain_deployment_id": "cd1", "sonde.chainlet_id": "pre"}
LOOPS = {"sonde.loops_deployment_id": "lp1", "sonde.node_rank": "0", "sonde.node_id": "node-0"}


def _feed(site: Site) -> None:
    # six whole minutes before the feed, not before the import: xdist imports every module
    # at the start of the run, and a slow run reaches these tests many minutes later
    site.t0 = T0 = (time.time_ns() // MIN - 6) * MIN
    at = [T0 + k * MIN + 5 * SEC for k in STEPS]
    for rank in (0, 1):
        fs = [gauge("system.filesystem.usage", [number(t, (20 + rank + k) * GIB, attrs={"sonde.mount": "ephemeral"})
                                                for k, t in enumerate(at)], unit="By")]
        if rank == 0:
            fs.append(gauge("system.filesystem.usage", [number(t, (200 + k) * GIB, attrs={"sonde.mount": "cache"})
                                                        for k, t in enumerate(at)], unit="By"))
        site.send(metrics_request(job_resource(rank), [
            gauge("hw.gpu.utilization", [number(t, 0.25 * (rank + 1), attrs={"hw.gpu.index": 0}) for t in at], unit="1"),
            gauge("hw.gpu.memory.usage", [number(t, (rank + 1) * 8 * GIB, attrs={"hw.gpu.index": 0}) for t in at],
                  unit="By"),
            sum_metric("process.cpu.time", [number(t, 30.0 * (rank + 1) * (k + 1), start=T0 - MIN)
                                            for k, t in enumerate(at)], unit="s"),
            gauge("process.memory.usage", [number(t, float(GIB * (rank + 1))) for t in at], unit="By"), *fs]))
    site.send(logs_request(job_resource(0), [log_record(at[0], "epoch 1 loss=0.5", severity_number=9),
                                             log_record(at[1], "checkpoint saved", severity_number=9)]))
    # a chainlet's lines from two replicas and two components
    for replica, component, message in (("r1", "tokenizer", "tokenized 12 inputs"), ("r2", "model", "batch done")):
        site.send(logs_request({**CHAINLET, "sonde.replica": replica}, [
            log_record(at[2], message, severity_number=13, attrs={"component": component})]))
    # the trainer: its requests (a latency histogram by status) and its node's memory
    site.send(metrics_request(LOOPS, [
        histogram("http.server.request.duration", [
            hist_point(t, [0, 4 + k, 2, 0, 0], BOUNDS, start=t - MIN, attrs={"http.response.status_code": 200})
            for k, t in enumerate(at)] + [
            hist_point(at[3], [0, 0, 0, 1, 0], BOUNDS, start=at[3] - MIN, attrs={"http.response.status_code": 500})],
            cumulative=False),
        gauge("process.memory.usage", [number(t, 3.0 * GIB) for t in at], unit="By")]))
    # an LLM server in environment "production": every panel's metric
    site.send(metrics_request(LLM, [
        gauge("vllm:kv_cache_usage_perc", [number(t, 0.1 * (k + 1)) for k, t in enumerate(at)], unit="1"),
        gauge("vllm:num_requests_running", [number(t, float(k)) for k, t in enumerate(at)]),
        gauge("vllm:num_requests_waiting", [number(t, float(5 - k)) for k, t in enumerate(at)]),
        sum_metric("vllm:generation_tokens_total", [number(t, 600.0 * (k + 1), start=T0 - MIN)
                                                    for k, t in enumerate(at)]),
        histogram("vllm:time_to_first_token_seconds", [hist_point(t, [2, 6, 2, 0, 0], BOUNDS, start=t - MIN)
                                                       for t in at], cumulative=False),
        histogram("vllm:time_per_output_token_seconds", [hist_point(t, [8, 2, 0, 0, 0], BOUNDS, start=t - MIN)
                                                         for t in at], cumulative=False)]))
    site.send(logs_request(LLM, [log_record(at[4], "engine ready", severity_number=9)]))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # one live stream per key, so the test can meet the limit's 429 with two
    s = Site(str(tmp_path_factory.mktemp("web-pages")), env={"SONDE_STREAM_LIMIT_PER_KEY": "1"})
    _feed(s)
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory) as driver:
        yield driver


def drawn(chart: dict) -> dict[str, list[tuple[float, float]]]:
    return {s["key"]: [(p[0], p[1]) for p in s["points"]] for s in chart["series"]}


def points(api_points) -> list[tuple[float, float]]:
    """The API's [{timestamp, value}] as the page draws them, nulls left out."""
    out = []
    for p in api_points:
        ts = p["timestamp"].replace("Z", "+00:00")
        if p["value"] is not None:
            out.append((datetime.fromisoformat(ts).timestamp() * 1000, p["value"]))
    return out


def same(got, expected, what) -> None:
    assert [t for t, _ in got] == pytest.approx([t for t, _ in expected], abs=0.5), what
    assert approx([v for _, v in got], [v for _, v in expected]), (what, got, expected)


def query_of(driver) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(driver.current_url).fragment.partition("?")[2]))


def section(driver) -> str:
    return driver.execute_script("return document.querySelector('nav.sections a[aria-current]')?.textContent")


@pytest.mark.e2e
def test_training_job_page(browser, site):
    frm_ms, to_ms = (site.t0 - 2 * MIN) // 10**6, (site.t0 + 8 * MIN) // 10**6
    # a shared link: a custom range and a log search, both from the address
    open_ui(browser, site, f"/training/p1/jobs/j1?from={frm_ms}&to={to_ms}&search_pattern=loss%3D0%5C.5")
    wait(browser, lambda d: loads(d, ".charts") >= 1 and loads(d, "section.logs") >= 1, what="the job page")
    assert section(browser) == "Training"
    shoot(browser, "training-job-top")
    got = charts(browser)
    assert list(got) == ["gpu-utilization", "gpu-memory", "cpu", "memory", "ephemeral", "cache"]
    assert all((c["start"], c["end"]) == (frm_ms, to_ms) for c in got.values())
    api = site.api.get("/v1/training_projects/p1/jobs/j1/metrics",
                       params={"start_epoch_millis": frm_ms, "end_epoch_millis": to_ms}).json()
    assert [n["node_id"] for n in api["per_node_metrics"]] == ["node-0", "node-1"]
    for node in api["per_node_metrics"]:
        n, m = node["node_id"], node["metrics"]
        same(drawn(got["cpu"])[n], points(m["cpu_usage"]), "cpu")
        same(drawn(got["memory"])[n], points(m["cpu_memory_usage_bytes"]), "memory")
        same(drawn(got["gpu-utilization"])[f"{n}/0"], points(m["gpu_utilization"]["0"]), "gpu")
        same(drawn(got["gpu-memory"])[f"{n}/0"], points(m["gpu_memory_usage_bytes"]["0"]), "gpu memory")
        same(drawn(got["ephemeral"])[n], points(m["ephemeral_storage"]["usage_bytes"]), "ephemeral")
    same(drawn(got["cache"])["cache"], points(api["cache"]["usage_bytes"]), "cache")
    assert approx([v for _, v in drawn(got["memory"])["node-1"]], [2.0 * GIB] * len(drawn(got["memory"])["node-1"]))
    details = browser.find_element(By.CSS_SELECTOR, ".entity-body .details").text
    assert "RUNNING" in details and "2" in details
    # the job's logs take every filter; the one from the address is applied and shown
    assert browser.find_element(By.NAME, "search_pattern").get_attribute("value") == r"loss=0\.5"
    assert messages(browser) == ["epoch 1 loss=0.5"]
    set_filters(browser, min_level="INFO")
    assert messages(browser) == ["checkpoint saved", "epoch 1 loss=0.5"]
    assert query_of(browser) == {"from": str(frm_ms), "to": str(to_ms), "min_level": "INFO"}
    # and follow live: a line sent now appears on top, the address says live=1
    set_filters(browser, search_pattern="loss")
    browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()
    wait(browser, lambda d: live(d) == "live", what="the job's stream")
    assert query_of(browser)["live"] == "1"
    site.send(logs_request(job_resource(1), [log_record(time.time_ns(), "epoch 2 loss=0.4", severity_number=9),
                                             log_record(time.time_ns(), "not matching", severity_number=9)]))
    wait(browser, lambda d: messages(d)[:1] == ["epoch 2 loss=0.4"], what="the job's live line")
    assert "not matching" not in messages(browser)
    shoot(browser, "training-job")
    browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()
    assert "live" not in query_of(browser)

    browser.find_element(By.LINK_TEXT, "Training").click()
    # the row itself: the job page's own .entity-body (loads >= 1) may still be there
    # for a moment after the click, so its load count says nothing of the list's
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-job='j1']"), what="the training list")
    assert "RUNNING" in browser.find_element(By.CSS_SELECTOR, "tr[data-job='j1']").text
    shoot(browser, "training")


@pytest.mark.e2e
def test_chains_and_a_chainlet(browser, site):
    open_ui(browser, site, "/chains")
    wait(browser, lambda d: loads(d, ".entity-body") >= 1, what="the chains")
    assert section(browser) == "Chains"
    row = browser.find_element(By.CSS_SELECTOR, "section[data-chain='c1'] tr[data-chainlet='pre']")
    api = site.api.get("/v1/chains/c1/deployments/cd1").json()
    pre = next(c for c in api["chainlets"] if c["id"] == "pre")
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
    assert cells[:3] == ["pre", pre["status"], str(pre["active_replica_count"])]
    shoot(browser, "chains")
    row.find_element(By.CSS_SELECTOR, "a").click()
    wait(browser, lambda d: loads(d, "section.logs") >= 1 and loads(d, ".entity-body") >= 1, what="the chainlet")
    assert messages(browser) == ["batch done", "tokenized 12 inputs"]
    assert "r1, r2" in browser.find_element(By.CSS_SELECTOR, ".entity-body .details").text
    set_filters(browser, component="tokenizer")
    assert messages(browser) == ["tokenized 12 inputs"]
    # the filter is in the address: a reload keeps it
    assert query_of(browser)["component"] == "tokenizer"
    browser.refresh()
    wait(browser, lambda d: loads(d, "section.logs") >= 1, what="the chainlet after a reload")
    assert messages(browser) == ["tokenized 12 inputs"]
    assert browser.find_element(By.NAME, "component").get_attribute("value") == "tokenizer"
    shoot(browser, "chainlet")

    # a stream over the key's limit: the page shows the API's 429 message and stops
    stream_path = "/v1/chains/c1/deployments/cd1/chainlets/pre/logs/stream"
    with hold_stream(site, stream_path):
        refused = site.api.get(stream_path)
        assert refused.status_code == 429
        browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()
        wait(browser, lambda d: live(d) == "error", what="the refusal")
        assert browser.find_element(By.CSS_SELECTOR, "section.logs .error-message").text == refused.json()["message"]
        assert browser.find_element(By.CSS_SELECTOR, "button.live-toggle").text == "Live"
    # once the server has let the held one go, Live follows again
    deadline = time.monotonic() + 10
    while True:
        browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()
        wait(browser, lambda d: live(d) in ("live", "error"), what="the stream's answer")
        if live(browser) == "live" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert live(browser) == "live"
    browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()


@contextlib.contextmanager
def hold_stream(site: Site, path: str):
    """Holds the key's one stream; waits while a closed one's slot is still being released."""
    deadline = time.monotonic() + 10
    while True:
        with site.api.stream("GET", path) as r:
            if r.status_code == 200:
                yield r
                return
        assert r.status_code == 429 and time.monotonic() < deadline, r.status_code
        time.sleep(0.2)


@pytest.mark.e2e
def test_trainer_page(browser, site):
    open_ui(browser, site, "/loops")
    wait(browser, lambda d: loads(d, ".entity-body") >= 1, what="the trainers")
    assert section(browser) == "Trainers"
    browser.find_element(By.CSS_SELECTOR, "tr[data-loops='lp1'] a").click()
    wait(browser, lambda d: loads(d, ".charts") >= 1, what="the trainer page")
    after_load(browser, ".charts", lambda: browser.find_element(
        By.XPATH, "//fieldset[contains(@class,'window-picker')]//label[normalize-space()='15 min']").click())
    assert query_of(browser) == {"window": "15m"}
    got = charts(browser)
    start_ms, end_ms = got["memory"]["start"], got["memory"]["end"]
    assert end_ms - start_ms == 15 * 60_000
    api = site.api.post("/v1/loops/deployments/lp1/metrics",
                        json={"start_epoch_millis": start_ms, "end_epoch_millis": end_ms}).json()["metrics"]
    vol = api["inference_volume_by_status"]
    by_status = drawn(got["requests"])
    assert set(by_status) == {"2xx", "5xx"}
    for st in ("2xx", "5xx"):
        same(by_status[st], points([{"timestamp": p["timestamp"], "value": p[f"status_{st}"]} for p in vol]), st)
    # a rate per second: a minute's requests over 60
    # the steps still inside the 15-minute window (a slow run reaches this test minutes after the feed)
    ok = [v * 60 for _, v in by_status["2xx"]]
    assert ok and approx(ok, [6.0 + k for k in STEPS][-len(ok):])
    for q in ("p50", "p95", "p99"):
        same(drawn(got["latency"])[q], points([{"timestamp": p["timestamp"], "value": p[q]}
                                               for p in api["response_time_stats"]]), q)
    same(drawn(got["memory"])["node-0"], points(api["per_node_metrics"][0]["cpu_memory_usage_bytes"]), "memory")
    # its logs API filters by level only: the form offers no more
    assert not browser.find_elements(By.NAME, "search_pattern")
    shoot(browser, "loops")


LLM_CHARTS = {
    "ttft": ["sonde_llm_time_to_first_token_seconds"],
    "tpot": ["sonde_llm_time_per_output_token_seconds"],
    "tokens": ["baseten_llm_output_tokens_total"],
    "kv-cache": ["sonde_llm_kv_cache_usage_ratio"],
    "queue": ["baseten_llm_num_requests", "sonde_llm_requests_waiting"],
}


@pytest.mark.e2e
def test_llm_panels_and_the_environment(browser, site):
    open_ui(browser, site, "/models/m1/deployments/d-llm?window=15m")
    wait(browser, lambda d: loads(d, ".charts") >= 1, what="the LLM deployment")
    browser.find_element(By.ID, "auto-refresh").click()  # no redraw mid-read
    assert section(browser) == "Models"
    shoot(browser, "llm-top")
    got = charts(browser)
    assert set(LLM_CHARTS) <= set(got)
    # the service charts it has no data for are named in a line, not drawn empty above the panels
    assert "requests" not in got and "cpu" not in got
    assert browser.find_element(By.CSS_SELECTOR, ".charts > .note.blank").text == \
        "No data in this window: Requests, End-to-end latency, CPU, Memory."
    for chart_id, names in LLM_CHARTS.items():
        chart = got[chart_id]
        expected = api_series(site.api, "/v1/models/m1/deployments/d-llm", chart, names,
                              rates={"baseten_llm_output_tokens_total"})
        shown = drawn(chart)
        assert shown, chart_id
        for key, pts in shown.items():
            same(pts, expected[key], key)
    assert [s["label"] for s in got["ttft"]["series"]] == ["p50", "p95", "p99"]
    assert [s["label"] for s in got["queue"]["series"]] == ["running", "waiting"]
    # 600 tokens a minute: 10 per second
    rates = [v for _, v in drawn(got["tokens"])["baseten_llm_output_tokens_total{replica=r0001}"]][1:]
    assert rates and approx(rates, [10.0] * len(rates))  # the steps still in the window
    # hovering a point shows its time and value in the chart's legend (uPlot's cursor)
    t, v = drawn(got["kv-cache"])["sonde_llm_kv_cache_usage_ratio{replica=r0001}"][2]
    fig = browser.find_element(By.CSS_SELECTOR, "figure[data-chart='kv-cache']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", fig)
    over = fig.find_element(By.CSS_SELECTOR, ".u-over")
    x = browser.execute_script("return arguments[0].uplot.valToPos(arguments[1] / 1000, 'x')", fig, t)
    ActionChains(browser).move_to_element_with_offset(over, int(x - over.size["width"] / 2), 0).perform()
    legend = lambda d: [e.text for e in fig.find_elements(By.CSS_SELECTOR, ".u-legend .u-value")]  # noqa: E731
    wait(browser, lambda d: legend(d)[1] == f"{round(v * 100)}%", what="the hovered value in the legend")
    assert legend(browser)[0] == browser.execute_script("return arguments[0].pointText(0, arguments[1], 0)",
                                                        fig, t).split(" · ")[1]
    shoot(browser, "llm")  # the hovered legend in view

    # the deployment's environment links to the environment's logs
    browser.find_element(By.LINK_TEXT, "production").click()
    wait(browser, lambda d: loads(d, ".entity-view section.logs") >= 1, what="the environment's logs")
    assert urllib.parse.urlsplit(browser.current_url).fragment.startswith("/models/m1/environments/production")
    assert messages(browser) == ["engine ready"]
    assert "d-llm" in browser.find_element(By.CSS_SELECTOR, ".env-deployments").text
    api = site.api.get("/v1/models/m1/environments/production/logs").json()["logs"]
    assert [ln["message"] for ln in api] == messages(browser)
    shoot(browser, "environment")


@pytest.mark.e2e
def test_live_tail_resumes_across_a_server_restart(browser, site):
    """Runs last: it restarts the module's server. The page reconnects with Last-Event-ID
    and shows the line sent after the restart, with no line lost or shown twice."""
    open_ui(browser, site, "/models/m1/deployments/d-llm?window=15m&live=1")
    wait(browser, lambda d: live(d) == "live", what="the stream")
    site.send(logs_request(LLM, [log_record(time.time_ns(), "before the restart", severity_number=9)]))
    wait(browser, lambda d: messages(d)[:1] == ["before the restart"], what="the line before the restart")
    site.server.kill9()
    wait(browser, lambda d: live(d) == "reconnecting", what="the page to see the drop")
    site.server.start()
    site.send(logs_request(LLM, [log_record(time.time_ns(), "after the restart", severity_number=9)]))
    wait(browser, lambda d: messages(d)[:1] == ["after the restart"], timeout=30, what="the line after the restart")
    assert messages(browser) == ["after the restart", "before the restart", "engine ready"]
    assert live(browser) == "live"
    shoot(browser, "live-resumed", "section.logs")
    browser.find_element(By.CSS_SELECTOR, "button.live-toggle").click()
