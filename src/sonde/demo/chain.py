"""The demo's chain: ``python -m sonde.demo.chain --role preprocess|predict --port P``.

Two chainlets of one chain, each a small FastAPI app instrumented like the model server
(``configure(logs=False)`` placed on the chainlet through ``resource_attributes``,
FastAPI's own telemetry off (``serving.FASTAPI_TELEMETRY``), ``SondeMiddleware``), each a real process
under ``sonde agent run --chain-id ... --chainlet-id ROLE``:

``preprocess`` (the chain's entry point)
    ``POST /run {"rows": [[8 numbers or null], ...]}`` (1..256 rows): fills missing
    readings with 0, clips readings to +-6 (so a sensor glitch cannot overflow the model
    downstream), calls ``predict`` with the cleaned rows, passing its ``X-Request-ID`` on,
    and answers ``{"predictions", "imputed", "clipped"}``. A row of the wrong length is
    400 (WARNING); ``predict`` failing or unreachable is 502 (ERROR).
``predict``
    ``POST /predict {"instances": [[8 numbers], ...]}`` -> ``{"predictions"}``, the
    demo's numpy model (``model.py``), fitted at start-up or read from ``--cache-dir``.

Both answer ``GET /health`` (the agent's ``--ready-url``) outside the middleware: 200
once ready (``predict``: once its model is loaded). Logs go to stdout in the model
server's format, with the request id, where the agent reads them.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from contextlib import asynccontextmanager

import httpx
import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from ..instrument import SondeMiddleware, SondeTelemetry, current_request_id
from .model import N_FEATURES, load_or_fit
from .serving import FASTAPI_TELEMETRY, demo_telemetry, serve, setup_logging, with_health
from .stack import CHAIN, CHAIN_DEPLOYMENT
MAX_ROWS = 256
CLIP = 6.0

log = logging.getLogger("sonde.demo.chain")


class RunIn(BaseModel):
    rows: list[list[float | None]]


class PredictIn(BaseModel):
    instances: list[list[float]]


class _Ready:
    def __init__(self) -> None:
        self.ready = False
        self.model = None


def build_predict(cache_dir: str | None, telemetry: SondeTelemetry | None = None):
    state = _Ready()

    def load() -> None:
        t0 = time.monotonic()
        state.model, source = load_or_fit(cache_dir)
        state.ready = True
        log.info("predict: model ready after %.1f s (weights from the %s)", time.monotonic() - t0, source)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        threading.Thread(target=load, name="model-loader", daemon=True).start()
        yield
        if telemetry is not None:
            telemetry.shutdown()

    app = FastAPI(title="Sonde demo chainlet: predict", lifespan=lifespan, telemetry=FASTAPI_TELEMETRY)

    @app.post("/predict")
    def predict(body: PredictIn):
        if state.model is None:
            log.warning("predict: rejected (503): model still loading")
            raise HTTPException(503, "model is loading")
        if not body.instances or any(len(r) != N_FEATURES for r in body.instances):
            log.warning("predict: rejected (400): %d rows, not all of %d features", len(body.instances), N_FEATURES)
            raise HTTPException(400, f"instances must be rows of {N_FEATURES} numbers")
        t0 = time.perf_counter()
        out = state.model.predict(np.asarray(body.instances, dtype=np.float64))
        log.info("predict: %d rows in %.1f ms", len(body.instances), (time.perf_counter() - t0) * 1000)
        return {"predictions": out.round(6).tolist()}

    return with_health(SondeMiddleware(app), lambda: state.ready), state


def build_preprocess(predict_url: str, telemetry: SondeTelemetry | None = None,
                     transport: httpx.AsyncBaseTransport | None = None):
    state = _Ready()
    client = httpx.AsyncClient(base_url=predict_url.rstrip("/"), timeout=10.0, transport=transport)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.ready = True
        log.info("preprocess: ready; predict chainlet at %s", predict_url)
        yield
        await client.aclose()
        if telemetry is not None:
            telemetry.shutdown()

    app = FastAPI(title="Sonde demo chainlet: preprocess", lifespan=lifespan, telemetry=FASTAPI_TELEMETRY)

    @app.post("/run")
    async def run(body: RunIn):
        rows = body.rows
        if not rows or len(rows) > MAX_ROWS:
            log.warning("preprocess: rejected (400): %d rows (1 to %d allowed)", len(rows), MAX_ROWS)
            raise HTTPException(400, f"1 to {MAX_ROWS} rows")
        for i, row in enumerate(rows):
            if len(row) != N_FEATURES:
                log.warning("preprocess: rejected (400): row %d has %d readings, expected %d", i, len(row), N_FEATURES)
                raise HTTPException(400, f"row {i} has {len(row)} readings, expected {N_FEATURES}")
        x = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
        missing = np.isnan(x)
        x[missing] = 0.0
        clipped = int((np.abs(x) > CLIP).sum())
        x = np.clip(x, -CLIP, CLIP)
        log.debug("preprocess: %d rows, %d readings imputed, %d clipped", len(rows), int(missing.sum()), clipped)
        headers = {"x-request-id": current_request_id() or ""}
        try:
            r = await client.post("/predict", json={"instances": x.tolist()}, headers=headers)
        except httpx.HTTPError as exc:
            log.error("preprocess: predict chainlet unreachable: %s: %s", type(exc).__name__, exc)
            raise HTTPException(502, "predict chainlet unreachable") from None
        if r.status_code != 200:
            log.error("preprocess: predict chainlet answered %d: %s", r.status_code, r.text[:200])
            raise HTTPException(502, f"predict chainlet answered {r.status_code}")
        if clipped:
            log.warning("preprocess: clipped %d out-of-range readings to +-%g", clipped, CLIP)
        log.info("preprocess: %d rows through predict", len(rows))
        return {"predictions": r.json()["predictions"], "imputed": int(missing.sum()), "clipped": clipped}

    return with_health(SondeMiddleware(app), lambda: state.ready), state


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sonde.demo.chain", description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["preprocess", "predict"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--predict-url", default="http://127.0.0.1:8001", help="preprocess: the predict chainlet")
    p.add_argument("--cache-dir", default=None, help="predict: where fitted weights are kept")
    p.add_argument("--chain-id", default=CHAIN)
    p.add_argument("--chain-deployment-id", default=CHAIN_DEPLOYMENT)
    p.add_argument("--export-interval", type=float, default=10.0, help="seconds between metric exports")
    args = p.parse_args(argv)
    setup_logging()
    telemetry = demo_telemetry(args.export_interval, f"sonde-demo-chainlet-{args.role}", log,
                               {"sonde.chain_id": args.chain_id, "sonde.chain_deployment_id": args.chain_deployment_id,
                                "sonde.chainlet_id": args.role})
    if args.role == "predict":
        app, _ = build_predict(args.cache_dir, telemetry)
    else:
        app, _ = build_preprocess(args.predict_url, telemetry)
    log.info("%s chainlet (pid %d) on %s:%d", args.role, os.getpid(), args.host, args.port)
    serve(app, args.host, args.port)

if __name__ == "__main__":
    main()
