"""The FastAPI application: routers, error envelope, store lifecycle, and what serves
the routes on the store (accounts, inventory, the ingestor), built once the store is open."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import web
from ..alerts.evaluator import Evaluator
from ..ingest.metrics import MAX_AHEAD_NS
from ..ingest.offload import SpanDecoders
from ..ingest.pipeline import Ingestor
from ..query import recent, recent_counts
from ..query.cache import ResultCache
from ..settings import Config
from ..store import Store, open_store
from ..store.accounts import Accounts, bootstrap
from ..store.alerts import AlertDocs
from ..store.inventory import Inventory
from . import (admin, admission, alerts, chains, errors, export, inventory, logs, loops, metrics, openapi, otlp,
               remote_write, requests, stream, training)
from .ratelimit import RateLimiter

log = logging.getLogger("sonde")


def create_app(config: Config | None = None, *, store: Store | None = None) -> FastAPI:
    """The app. With ``store`` given, the caller owns it (tests share one chDB path
    between databases); otherwise the app opens the configured store and closes it."""
    config = config or Config.load()
    owned = store is None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.store is None:
            app.state.store = open_store(
                config.store, config.data_dir,
                auto_migrate=config.auto_migrate, wal=config.wal,
                wal_flush_interval_ms=config.wal_flush_interval_ms,
                wal_live_flush_interval_ms=config.wal_live_flush_interval_ms,
                retention_days=config.retention_days, flush_interval_ms=config.flush_interval_ms,
                batch_max_rows=config.batch_max_rows, max_pending_rows=config.max_pending_rows,
                min_free_disk_mb=config.min_free_disk_mb, retention_check_seconds=config.retention_check_seconds,
            )
        _wire(app, app.state.store, config)
        app.state.evaluator.start()
        try:
            yield
        finally:
            app.state.evaluator.stop()
            app.state.span_decoders.close()
            if owned:
                app.state.store.close()

    app = FastAPI(title="Sonde", version="0.1.0", lifespan=lifespan)
    app.state.config = config
    app.state.store = store
    if store is not None:
        _wire(app, store, config)
    errors.install(app)
    app.add_middleware(admission.Admission, max_inflight_ingest=config.max_inflight_ingest,
                       max_inflight_reads=config.max_inflight_reads)
    openapi.install(app)
    app.include_router(admin.router)
    app.include_router(inventory.router)
    app.include_router(otlp.router)
    app.include_router(metrics.router)
    app.include_router(logs.router)
    app.include_router(requests.router)
    app.include_router(chains.router)
    app.include_router(training.router)
    app.include_router(loops.router)
    app.include_router(export.router)
    app.include_router(remote_write.router)
    app.include_router(alerts.router)
    web.install(app)  # the dashboard at /ui/: static files calling the routes above
    return app


def _wire(app: FastAPI, store: Store, config: Config) -> None:
    if getattr(app.state, "accounts", None) is not None:
        return
    app.state.accounts = Accounts(store, cache_ttl=config.key_cache_seconds)
    app.state.inventory = Inventory(store)
    app.state.ingestor = Ingestor.for_store(store, app.state.inventory, config.state_sync,
                                             max_series=config.max_series_per_workspace)
    app.state.export_limiter = RateLimiter(config.metrics_rate_limit, what="requests to /metrics",
                                           setting="metrics_rate_limit")
    app.state.key_limiter = RateLimiter(config.rate_limit_per_key, config.rate_limit_burst)
    # a thread's semaphore, taken in the worker thread: the app may serve several event loops
    app.state.decoders = threading.BoundedSemaphore(config.ingest_decoders)
    app.state.span_decoders = SpanDecoders(config.ingest_processes)
    app.state.streams = stream.Streams(store, config)
    app.state.alert_docs = AlertDocs(store)
    # answers kept only where this process sees every write (query/cache.py)
    app.state.metrics_cache = None
    if config.query_cache_mb and not store.shared(config.state_sync):
        app.state.metrics_cache = ResultCache(int(config.query_cache_mb * 2**20))
        store.on_change(app.state.metrics_cache.observe)
    # points kept in memory only where this process sees every write (store/recent.py)
    background = config.memory_load == "background"  # readers read the store until each is in
    if config.recent_minutes and not store.shared(config.state_sync):
        store.keep_recent(recent.METRICS, config.recent_minutes * 60, future_ns=MAX_AHEAD_NS, background=background)
    if config.request_count_hours and not store.shared(config.state_sync):
        store.keep_request_counts(recent_counts.METRICS, config.request_count_hours * 3600, future_ns=MAX_AHEAD_NS,
                                  background=background)
    if config.gauge_sum_hours and not store.shared(config.state_sync):
        store.keep_gauge_sums(recent.METRICS, config.gauge_sum_hours * 3600, future_ns=MAX_AHEAD_NS,
                              background=background)
    app.state.evaluator = Evaluator(store, interval_s=config.alert_eval_seconds,
                                    external_url=f"http://{config.host}:{config.port}/ui/")
    creds = bootstrap(app.state.accounts, config.data_dir)
    if creds:
        log.info("first start: keys written to %s/credentials.json", config.data_dir)
