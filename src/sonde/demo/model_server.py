"""The demo's model server: ``python -m sonde.demo.model_server --port P``.

A small FastAPI app serving the numpy model of ``model.py``, instrumented as
docs/instrument.md says: ``configure()`` for the OTLP metrics exporter (from the
``SONDE_*`` environment that ``sonde demo`` gives ``sonde agent run``, which passes it
on), FastAPI's own telemetry off (``serving.FASTAPI_TELEMETRY``) and ``SondeMiddleware`` around the app.

=================  ============================================================================
``GET /health``    503 while the model loads, 200 once it is ready (the agent's ``--ready-url``)
``GET /info``      what is loaded: sizes, fit quality, where the weights came from
``POST /predict``  ``{"instances": [[8 numbers], ...]}`` (1..1024 rows) -> ``{"predictions"}``;
                   ``?return_std=true`` adds the predictive std, the slow path (D^2 per row)
=================  ============================================================================

Answers besides 200: 400 for a batch of the wrong shape or size, 422 for a body that is
not numbers, 503 while loading, and 500 when the arithmetic itself fails: a reading
around 1e308 overflows ``x @ W`` and numpy raises (``model.features``); the server logs
the traceback at ERROR and answers 500.

Logs: every record goes to stdout as ``time LEVEL logger: request_id=ID message`` (the
id from SondeMiddleware's context, through ``RequestIdFilter``; no token outside a
request), uvicorn's own lines to stderr and its access lines to stdout. ``sonde agent
run`` reads the level and the ``request_id=`` token from exactly this shape.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..instrument import SondeMiddleware, SondeTelemetry
from .model import N_FEATURES, RandomFeatureRidge, load_or_fit
from .serving import FASTAPI_TELEMETRY, demo_telemetry, log_rejections, serve, setup_logging, with_health

MAX_ROWS = 1024
SLOW_MS = 50.0  # ten times the typical request here: slower than this logs a WARNING

log_model = logging.getLogger("sonde.demo.model")
log_req = logging.getLogger("sonde.demo.predict")


class PredictIn(BaseModel):
    instances: list[list[float]]


class Loader:
    """Loads the model in a thread, so uvicorn listens (and /health says 503) meanwhile."""

    def __init__(self, cache_dir: str | None, min_load_seconds: float):
        self.cache_dir, self.min_load_seconds = cache_dir, min_load_seconds
        self.model: RandomFeatureRidge | None = None
        self.source = ""

    def start(self) -> None:
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def _load(self) -> None:
        t0 = time.monotonic()
        log_model.info("loading model (cache dir: %s)", self.cache_dir or "none")
        try:
            model, source = load_or_fit(self.cache_dir)
        except Exception:
            log_model.critical("model failed to load", exc_info=True)
            # Exit non-zero from here: the agent counts the crash and restarts the process.
            os._exit(1)
        if source == "fit":
            log_model.info("fitted %d random features in %.2f s, saved to the cache",
                           model.n_random_features, model.fit_seconds)
        else:
            log_model.info("read weights from the cache (%d random features)", model.n_random_features)
        # The toy fits in about a second; real weights take far longer. The floor keeps
        # the replica visibly "starting" for a few seconds, as a real one would be.
        rest = self.min_load_seconds - (time.monotonic() - t0)
        if rest > 0:
            log_model.debug("holding start-up for %.1f s more (--min-load-seconds)", rest)
            time.sleep(rest)
        self.model, self.source = model, source
        log_model.info("model ready after %.1f s: train RMSE %.3f, holdout RMSE %.3f",
                       time.monotonic() - t0, model.train_rmse, model.holdout_rmse)


def _shape_problem(rows: list[list[float]]) -> str | None:
    if not rows:
        return "instances is empty"
    if len(rows) > MAX_ROWS:
        return f"{len(rows)} rows; at most {MAX_ROWS} per request"
    for i, row in enumerate(rows):
        if len(row) != N_FEATURES:
            return f"row {i} has {len(row)} features, expected {N_FEATURES}"
    return None


def build_app(loader: Loader, telemetry: SondeTelemetry | None = None):
    """The ASGI app: /health outside SondeMiddleware, everything else inside it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        loader.start()
        yield
        if telemetry is not None:
            telemetry.shutdown()  # exports the last interval before the process ends

    app = FastAPI(title="Sonde demo model", lifespan=lifespan, telemetry=FASTAPI_TELEMETRY)

    log_rejections(app, log_req, "rejected")

    @app.get("/info")
    def info() -> dict:
        m = loader.model
        if m is None:
            raise HTTPException(503, "model is loading")
        return {"model": "random-feature ridge regression", "n_features": N_FEATURES,
                "n_random_features": m.n_random_features, "train_rmse": m.train_rmse,
                "holdout_rmse": m.holdout_rmse, "weights_from": loader.source, "max_rows": MAX_ROWS,
                "replica": os.environ.get("SONDE_REPLICA"), "pid": os.getpid()}

    # A plain ``def``: Starlette runs it in its thread pool, so numpy's work (which
    # releases the GIL) never blocks the event loop that accepts other requests.
    @app.post("/predict")
    def predict(body: PredictIn, return_std: bool = False):
        m = loader.model
        rows = body.instances
        log_req.debug("predict: %d rows, return_std=%s", len(rows), return_std)
        if m is None:
            log_req.warning("rejected (503): model still loading")
            raise HTTPException(503, "model is loading")
        problem = _shape_problem(rows)
        if problem:
            log_req.warning("rejected (400): %s", problem)
            raise HTTPException(400, problem)
        x = np.asarray(rows, dtype=np.float64)
        t0 = time.perf_counter()
        try:
            if return_std:
                mean, std = m.predict_with_std(x)
            else:
                mean, std = m.predict(x), None
        except FloatingPointError as exc:
            # Logged with its traceback (stdout, one record per line: the agent keeps the
            # traceback's lines levelless) and answered here, as serving code usually does,
            # rather than left to Starlette, whose plain-text 500 says nothing.
            log_req.exception("prediction failed: %s (largest |reading| %.3g in %d rows)",
                              exc, float(np.abs(x).max()), len(rows))
            return JSONResponse({"detail": f"numerical failure in the model: {exc}"}, status_code=500)
        ms = (time.perf_counter() - t0) * 1000
        if ms > SLOW_MS:
            log_req.warning("slow request: %d rows%s took %.0f ms (over %.0f ms)",
                            len(rows), " with std" if return_std else "", ms, SLOW_MS)
        else:
            log_req.info("predicted %d rows%s in %.1f ms", len(rows), " with std" if return_std else "", ms)
        out = {"predictions": mean.round(6).tolist()}
        if std is not None:
            out["std"] = std.round(6).tolist()
        return out

    return with_health(SondeMiddleware(app), lambda: loader.model is not None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sonde.demo.model_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--cache-dir", default=None, help="where fitted weights are kept between starts")
    p.add_argument("--export-interval", type=float, default=10.0, help="seconds between metric exports")
    p.add_argument("--min-load-seconds", type=float, default=3.0, help="shortest start-up (the replica is starting)")
    args = p.parse_args(argv)
    setup_logging()
    telemetry = demo_telemetry(args.export_interval, "sonde-demo-model-server", log_model)
    serve(build_app(Loader(args.cache_dir, args.min_load_seconds), telemetry), args.host, args.port)


if __name__ == "__main__":
    main()
