"""Debian's Prometheus and Alertmanager as child processes of a test.

Each starts on a free loopback port with its data in the test's tmp folder, from a
YAML config the test writes, and is stopped (then killed if it lingers) at the end.
Where the package is missing the test fails saying so, unless the skip variable that
``./run`` documents is set (``SONDE_SKIP_PROMETHEUS``, ``SONDE_SKIP_ALERTMANAGER``).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import httpx
import pytest
import yaml

from live_server import free_port


def binary(name: str, skip_var: str) -> str:
    """The path of Debian's ``name``; fails (or skips where ``skip_var=1``) without it."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get(skip_var) == "1":
        pytest.skip(f"{name} is not installed and {skip_var}=1")
    pytest.fail(f"{name} is not installed: `./run test` installs Debian's package (or set {skip_var}=1)")


class Peer:
    """One peer process; ``url`` is its base URL once :meth:`start` returns."""

    name = ""
    skip_var = ""
    ready_path = "/-/ready"

    def __init__(self, workdir: pathlib.Path, config: dict):
        self.dir = pathlib.Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.dir / "config.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = self.dir / "log.txt"
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def argv(self, exe: str) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60) -> "Peer":
        exe = binary(self.name, self.skip_var)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv(exe), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.get(self.ready_path).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        self.http.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "Peer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Prometheus(Peer):
    name = "prometheus"
    skip_var = "SONDE_SKIP_PROMETHEUS"

    def argv(self, exe: str) -> list[str]:
        return [exe, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"]

    def query(self, promql: str) -> list[dict]:
        """The instant vector ``promql`` evaluates to now: ``[{"metric": {...}, "value": [t, "v"]}]``."""
        body = self.http.get("/api/v1/query", params={"query": promql}).raise_for_status().json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict]:
        return self.http.get("/api/v1/targets").raise_for_status().json()["data"]["activeTargets"]


class Alertmanager(Peer):
    name = "prometheus-alertmanager"
    skip_var = "SONDE_SKIP_ALERTMANAGER"

    def argv(self, exe: str) -> list[str]:
        # no cluster: a lone test instance must not gossip or wait for peers
        return [exe, f"--config.file={self.config_path}", f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="]

    def alerts(self) -> list[dict]:
        return self.http.get("/api/v2/alerts").raise_for_status().json()


class Hook:
    """A plain HTTP receiver run by the test: records every JSON body posted to it.

    ``fail_first`` posts are answered 500 (and recorded in ``refused``), to exercise a
    sender's retries."""

    def __init__(self, fail_first: int = 0):
        import http.server
        import json
        import threading

        hook = self
        self.bodies: list = []
        self.refused: list = []
        self.paths: list[str] = []
        self._fail = fail_first
        self._cond = threading.Condition()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with hook._cond:
                    if hook._fail > 0:
                        hook._fail -= 1
                        hook.refused.append(body)
                        self.send_response(500)
                    else:
                        hook.bodies.append(body)
                        hook.paths.append(self.path)
                        self.send_response(200)
                    hook._cond.notify_all()
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self, n: int, timeout: float = 30) -> list:
        """The first ``n`` bodies, waiting up to ``timeout`` s for them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.bodies) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} posts, got {len(self.bodies)}: {self.bodies}")
                self._cond.wait(left)
            return list(self.bodies[:n])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Hook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
