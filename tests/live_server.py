"""A real ``sonde serve`` child process on a free port, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, data_dir: str, port: int | None = None, env: dict | None = None, args: tuple = ()):
        """``args``: more ``sonde serve`` options, e.g. ``("--store", url)``."""
        self.data_dir = str(data_dir)
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.creds: dict = {}

    def start(self, timeout: float = 60) -> "LiveServer":
        self.log = open(os.path.join(self.data_dir, f"server-{self.port}.log"), "ab") if os.path.isdir(self.data_dir) else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sonde", "serve", "--data-dir", self.data_dir, "--port", str(self.port),
             "--log-level", "warning", *self.args],
            env=self.env, stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        creds_path = os.path.join(self.data_dir, "credentials.json")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sonde serve exited with {self.proc.returncode}")
            if os.path.exists(creds_path):
                try:
                    self.creds = json.load(open(creds_path))
                    r = httpx.get(f"{self.url}/v1/models", headers=self.headers("management_key"), timeout=2)
                    if r.status_code == 200:
                        return self
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("sonde serve did not become ready")

    def headers(self, which: str = "management_key") -> dict:
        return {"Authorization": f"Bearer {self.creds[which]}"}

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
