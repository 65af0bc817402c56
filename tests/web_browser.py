"""A real headless Chromium for the dashboard's tests (tests/test_web.py,
tests/test_web_pages.py), the live server they feed over OTLP, and what they read from
its pages.

Chromium and chromedriver come from the system: Debian's ``chromium`` and
``chromium-driver`` (``./run test`` installs them when missing), or ``SONDE_CHROMIUM`` /
``SONDE_CHROMEDRIVER``. Without them the tests fail, saying what is missing;
``SONDE_SKIP_BROWSER=1`` skips them where no browser can be had.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.parse

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from live_server import LiveServer
from otlp_build import post

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as exc:  # reported by start(), as a failure; the module still imports
    webdriver = By = NoAlertPresentException = None
    SELENIUM_ERROR = str(exc)

CHROMIUM = os.environ.get("SONDE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("SONDE_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: screenshots of the pages, to look at (SONDE_SHOTS to keep them elsewhere)
SHOTS = os.environ.get("SONDE_SHOTS", "/tmp/sonde-shots")


class Site:
    """A live ``sonde serve`` and clients holding its management and ingest keys."""

    def __init__(self, data_dir: str, env: dict | None = None):
        self.server = LiveServer(data_dir, env=env).start()
        self.url = self.server.url
        self.key = self.server.creds["management_key"]
        self.api = httpx.Client(base_url=self.url, headers=self.server.headers("management_key"), timeout=30)
        self.ingest = httpx.Client(base_url=self.url, headers=self.server.headers("ingest_key"), timeout=30)

    def send(self, req) -> None:
        """POST an OTLP request; every point or record must be accepted."""
        r = post(self.ingest, req)
        assert r.status_code == 200, r.content
        answer = (ExportLogsServiceResponse if isinstance(req, ExportLogsServiceRequest)
                  else ExportMetricsServiceResponse).FromString(r.content)
        assert not answer.HasField("partial_success"), answer  # nothing rejected

    def close(self) -> None:
        self.api.close()
        self.ingest.close()
        self.server.stop()


def open_ui(driver, site: Site, route: str = "/", key: str | None = None) -> None:
    """Open ``route`` with the key in the fragment, as the URL ``sonde demo`` prints."""
    k = urllib.parse.quote(key or site.key, safe="")
    driver.get(f"{site.url}/ui/#key={k}&{route}")


def shoot(driver, name: str, selector: str | None = None) -> None:
    """A screenshot into SHOTS, scrolled to ``selector`` first when given."""
    os.makedirs(SHOTS, exist_ok=True)
    if selector:
        driver.execute_script("document.querySelector(arguments[0]).scrollIntoView()", selector)
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def start(profile_dir: str):
    """A headless Chromium on a fresh profile; fails (or skips, if asked) without one."""
    if os.environ.get("SONDE_SKIP_BROWSER") == "1":
        pytest.skip("SONDE_SKIP_BROWSER=1")
    if webdriver is None:
        pytest.fail(f"selenium is not installed ({SELENIUM_ERROR}); `pip install -e .[test]` installs it")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} not found: install {package} (`./run test` does), "
                        "or set SONDE_SKIP_BROWSER=1 to skip the browser tests")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={profile_dir}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@contextlib.contextmanager
def chromium(tmp_path_factory):
    """start() on a fresh profile, quit at the end (a module's browser fixture)."""
    driver = start(str(tmp_path_factory.mktemp("chromium-profile")))
    try:
        yield driver
    finally:
        driver.quit()


def api_series(api: httpx.Client, path: str, chart: dict, names: list[str], rates=()) -> dict[str, list]:
    """The deployment metrics API's SERIES for the chart's window, shaped as the page draws
    it: one point mid-step per value, a counter's (``rates``) increase divided by the
    step's length (up to the chart's ``until`` for a step still filling); series keyed as
    the page keys them, ``name{label=value,...}``, those without a value left out (as the
    page leaves them out)."""
    body = api.get(f"{path}/metrics", params={"mode": "SERIES", "start_epoch_millis": chart["start"],
                                               "end_epoch_millis": chart["end"], "metrics": ",".join(names)})
    assert body.status_code == 200, body.text
    body = body.json()
    out: dict[str, list] = {}
    for i, d in enumerate(body["metric_descriptors"]):
        for j, labels in enumerate(d["label_sets"]):
            key = ",".join(f"{k}={v}" for k, v in labels.items())
            pts = []
            for mv in body["metric_values"]:
                until = chart.get("until")
                elapsed = until - mv["start_epoch_millis"] if until and until > mv["start_epoch_millis"] else None
                length = min(body["step_seconds"] * 1000, body["end_epoch_millis"] - mv["start_epoch_millis"],
                             elapsed or body["step_seconds"] * 1000)
                v = mv["values"][i][j]
                if v is not None:
                    pts.append((mv["start_epoch_millis"] + length / 2, v / (length / 1000) if d["name"] in rates else v))
            if pts:
                out[f"{d['name']}{{{key}}}" if key else d["name"]] = pts
    return out


def wait(driver, predicate, timeout: float = 20, what: str = "the page"):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: predicate(d), message=f"timed out waiting for {what}")


def loads(driver, selector: str) -> int:
    """The element's data-loads: how many loads the page has finished there."""
    return int(driver.execute_script(f"const e = document.querySelector({selector!r}); "
                                     "return e ? Number(e.dataset.loads) : -1;"))


def after_load(driver, selector: str, action) -> None:
    """Do ``action`` and wait until the element's data-loads counter moves."""
    before = loads(driver, selector)
    action()
    wait(driver, lambda d: loads(d, selector) > before, what=f"{selector} to load")


READ_CHARTS = """
return [...document.querySelectorAll("figure.chart-card")].map((f) => {
  const u = f.uplot;
  return {
    id: f.dataset.chart, start: Number(f.dataset.start), end: Number(f.dataset.end),
    step: Number(f.dataset.step), until: f.dataset.until ? Number(f.dataset.until) : null,
    empty: f.dataset.empty === "true",
    series: u.series.slice(1).map((s, k) => ({
      key: f.seriesKeys[k], label: s.label, path: s.show ? 1 : 0,
      points: u.data[0].map((x, n) => [x * 1000, u.data[k + 1][n]])
        .filter((p) => p[1] !== null && p[1] !== undefined)
        .map(([t, v]) => [t, v, f.pointText(k, t, v)]),
    })),
  };
});
"""


def charts(driver) -> dict[str, dict]:
    """Every chart's window and drawn points, read from the uPlot instances in one call (so
    one redraw cannot land halfway through the read)."""
    return {c["id"]: c for c in driver.execute_script(READ_CHARTS)}


def values(chart: dict) -> dict[str, list[float]]:
    return {s["label"]: [p[1] for p in s["points"]] for s in chart["series"]}


def approx(xs, ys) -> bool:
    return len(xs) == len(ys) and all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(xs, ys))


def log_view(driver) -> list[tuple[str, str, str, str]]:
    """The log lines shown: (level, replica, request id, message), top to bottom."""
    return [tuple(x) for x in driver.execute_script("""
      return [...document.querySelectorAll(".log-line")].map((li) => [li.dataset.level,
        li.querySelector(".replica").textContent, li.querySelector(".rid")?.textContent ?? "",
        li.querySelector(".msg").textContent]);""")]


def set_filters(driver, **fields) -> None:
    """Fill the log form (every text field not named is cleared) and apply it."""
    form = driver.find_element(By.CSS_SELECTOR, "form.log-filters")
    for name in ("search_pattern", "includes", "excludes", "replica", "request_id", "component"):
        if not form.find_elements(By.NAME, name):
            continue
        box = form.find_element(By.NAME, name)
        box.clear()
        if fields.get(name):
            box.send_keys(fields[name])
    selects = {"min_level": fields.get("min_level", "")}
    if "limit" in fields:
        selects["limit"] = str(fields["limit"])
    for name, value in selects.items():
        driver.execute_script("arguments[0].value = arguments[1];", form.find_element(By.NAME, name), value)
    after_load(driver, "section.logs", lambda: form.find_element(By.XPATH, ".//button[.='Apply']").click())


def live(driver) -> str:
    """The log viewer's stream state: off, live, reconnecting or error."""
    return driver.execute_script("return document.querySelector('section.logs').dataset.live")


def messages(driver) -> list[str]:
    return [m for *_, m in log_view(driver)]
